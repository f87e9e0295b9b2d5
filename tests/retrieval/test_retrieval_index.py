"""Index and search round trips with LinCIR and CompoDiff (every method), resumable builds, and bad input."""

import json
import warnings

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from hf_cir.retrieval import (
    CompoDiffRetrievalModel,
    GalleryIndex,
    LinCIRRetrievalModel,
    detect_model_type,
    list_image_files,
    load_retrieval_model,
    make_contact_sheet,
)
from hf_cir.utils import load_image

from .conftest import BAD_FILES, make_gallery


@pytest.fixture(scope="module")
def lincir(lincir_dir):
    return load_retrieval_model(lincir_dir, device="cpu")


@pytest.fixture(scope="module")
def compodiff(compodiff_dir):
    return load_retrieval_model(compodiff_dir, device="cpu", num_inference_steps=3, num_samples_per_prompt=2)


def test_model_kind_is_read_from_the_folder(lincir_dir, compodiff_dir, tiny_clip_dir, tmp_path, lincir, compodiff):
    assert detect_model_type(lincir_dir) == "lincir" and isinstance(lincir, LinCIRRetrievalModel)
    assert detect_model_type(compodiff_dir) == "compodiff" and isinstance(compodiff, CompoDiffRetrievalModel)
    assert lincir.embedding_dim == compodiff.embedding_dim == 64
    with pytest.raises(ValueError, match="model_type 'clip'.*from_clip"):
        detect_model_type(tiny_clip_dir)
    with pytest.raises(ValueError, match="neither a .*LinCIR model"):
        detect_model_type(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        detect_model_type(tmp_path / "missing")
    with pytest.raises(OSError, match="could not be read from the Hub"):
        detect_model_type("nobody/not-a-model")  # offline in tests


def test_methods_are_checked_against_the_model(lincir, compodiff):
    with pytest.raises(
        ValueError, match="'compodiff' needs a compodiff model.*lincir model.*lincir, image, text, sum"
    ):
        lincir.check_method("compodiff")
    with pytest.raises(ValueError, match="'lincir' needs a lincir model"):
        compodiff.check_method("lincir")
    with pytest.raises(ValueError, match="Unknown method 'blend'"):
        lincir.check_method("blend")
    with pytest.raises(ValueError, match="does not take masks"):
        lincir.encode_queries(["x"], images=[Image.new("RGB", (8, 8))], mask_images=[Image.new("L", (8, 8))])
    with pytest.raises(ValueError, match="needs a reference image"):
        lincir.encode_queries(["x"], method="sum")
    with pytest.raises(ValueError, match="2 reference images for 1 texts"):
        lincir.encode_queries(["x"], image_embeds=torch.zeros(2, 64))


def expected_order(gallery, query):
    scores = F.normalize(query, dim=-1) @ F.normalize(gallery, dim=-1).T
    return torch.argsort(scores[0], descending=True).tolist()


@pytest.mark.parametrize("kind", ["lincir", "compodiff"])
def test_index_and_search_round_trip_every_method(kind, request, tmp_path):
    model = request.getfixturevalue(kind)
    photos = tmp_path / "photos"
    names = make_gallery(photos)
    with pytest.warns(UserWarning, match="Skipped 3 file") as caught:
        index = GalleryIndex.build(model, photos, tmp_path / "index", batch_size=4, show_progress=False)
    message = str(caught[0].message)
    for path in BAD_FILES:
        assert path in message
    assert index.paths == names
    assert set(index.skipped) == set(BAD_FILES)
    for path, reason in BAD_FILES.items():
        assert reason in index.skipped[path]

    reloaded = GalleryIndex.load(tmp_path / "index")
    assert reloaded.paths == names and torch.equal(reloaded.embeddings, index.embeddings)
    assert reloaded.info["model_type"] == kind and reloaded.info["embedding_dim"] == 64
    # The stored embeddings are the model's own image embeddings.
    direct = model.encode_images([photos / name for name in names])
    torch.testing.assert_close(reloaded.embeddings, direct, rtol=1e-5, atol=1e-5)

    reference = photos / "nested/green.jpg"
    for method in model.methods:
        query = model.encode_queries(["is red"], images=[reference], method=method)
        assert query.shape == (1, 64)
        hits = reloaded.search(query, k=4)[0]
        assert [hit.path for hit in hits] == [names[i] for i in expected_order(direct, query)[:4]]
        assert [hit.rank for hit in hits] == [1, 2, 3, 4]
        assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))
        if method == "image":  # the reference itself is in the gallery
            assert hits[0].path == "nested/green.jpg" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    # Cached embeddings and images give the same composed query.
    own = model.default_method
    from_image = model.encode_queries(["is red"], images=[reference], method=own)
    from_embeds = model.encode_queries(["is red"], image_embeds=model.encode_images([reference]), method=own)
    torch.testing.assert_close(from_image, from_embeds, rtol=1e-5, atol=1e-5)


def test_compodiff_queries_take_negative_text_and_mask(compodiff, tmp_path):
    reference = load_image(make_gallery(tmp_path, with_bad_files=False) and tmp_path / "red.png")
    mask = Image.new("L", reference.size, 0)
    mask.paste(255, (0, 0, reference.width // 2, reference.height))
    plain = compodiff.encode_queries(["is blue"], images=[reference])
    again = compodiff.encode_queries(["is blue"], images=[reference])
    assert torch.equal(plain, again)  # seeded: reproducible
    negative = compodiff.encode_queries(["is blue"], images=[reference], negative_texts=["red"])
    masked = compodiff.encode_queries(["is blue"], images=[reference], mask_images=[mask])
    assert not torch.allclose(plain, negative) and not torch.allclose(plain, masked)
    with pytest.raises(ValueError, match="mask needs the reference image itself"):
        compodiff.encode_queries(["x"], image_embeds=torch.zeros(1, 64), mask_images=[mask])


def test_interrupted_index_resumes_without_recomputing(lincir, tmp_path, monkeypatch):
    photos = tmp_path / "photos"
    names = make_gallery(photos, with_bad_files=False)
    output = tmp_path / "index"
    original = lincir._encode_pixels
    encoded: list[int] = []

    def counting(pixel_values):
        encoded.append(len(pixel_values))
        if fail_after is not None and len(encoded) > fail_after:
            raise RuntimeError("simulated crash")
        return original(pixel_values)

    monkeypatch.setattr(lincir, "_encode_pixels", counting)
    fail_after = 2
    with pytest.raises(RuntimeError, match="simulated crash"):
        GalleryIndex.build(lincir, photos, output, batch_size=2, save_every=2, show_progress=False)
    assert not output.exists()  # no half-written index
    assert len(list((tmp_path / "index.partial" / "embeddings").glob("*.npy"))) == 2
    assert len(list((tmp_path / "index.partial" / "units").glob("*.json"))) == 2  # two committed shards
    with pytest.raises(FileNotFoundError, match="unfinished build"):
        GalleryIndex.load(output)

    encoded.clear()
    fail_after = None
    index = GalleryIndex.build(lincir, photos, output, batch_size=2, save_every=2, show_progress=False)
    assert sum(encoded) == len(names) - 4 and index.computed == len(names) - 4  # only the 2 missing images
    assert not (tmp_path / "index.partial").exists()

    encoded.clear()
    fresh = GalleryIndex.build(lincir, photos, tmp_path / "fresh", batch_size=3, show_progress=False)
    assert sum(encoded) == len(names)
    assert index.paths == fresh.paths == names
    torch.testing.assert_close(index.embeddings, fresh.embeddings, rtol=1e-5, atol=1e-6)


def test_shards_of_another_model_are_not_reused(lincir, lincir_other_size_dir, tmp_path):
    photos = tmp_path / "photos"
    make_gallery(photos, with_bad_files=False)
    other = load_retrieval_model(lincir_other_size_dir, device="cpu")
    partial = tmp_path / "index.partial"
    # A shard of an unfinished build of index format 1 (by another model): never reused.
    from safetensors.torch import save_file

    partial.mkdir()
    embeddings = other.encode_images([load_image(photos / "red.png")])
    save_file({"embeddings": embeddings}, str(partial / "shard-000000.safetensors"), metadata={"ids": '["red.png"]'})
    index = GalleryIndex.build(lincir, photos, tmp_path / "index", show_progress=False)
    assert index.computed == len(index) and index.embeddings.shape[1] == 64


def test_query_model_of_another_embedding_size_is_an_error(lincir, lincir_other_size_dir, tmp_path):
    photos = tmp_path / "photos"
    make_gallery(photos, with_bad_files=False)
    index = GalleryIndex.build(lincir, photos, tmp_path / "index", show_progress=False)
    other = load_retrieval_model(lincir_other_size_dir, device="cpu")
    assert other.embedding_dim == 32
    with pytest.raises(ValueError, match="holds 64-d embeddings.*embeds into 32 dimensions"):
        index.check_model(other)
    with pytest.raises(ValueError, match="size 32, the index holds 64-d"):
        index.search(other.encode_queries(["x"], images=[photos / "red.png"]), k=3)


def test_missing_or_corrupt_index_folders(lincir, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        GalleryIndex.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="missing manifest.json, or index.json of format 1"):
        GalleryIndex.load(tmp_path / "empty")
    photos = tmp_path / "photos"
    make_gallery(photos, with_bad_files=False)
    GalleryIndex.build(lincir, photos, tmp_path / "index", show_progress=False)

    import shutil

    broken = tmp_path / "broken_weights"
    shutil.copytree(tmp_path / "index", broken)
    (broken / "embeddings" / "000000.npy").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="000000.npy is corrupt"):
        GalleryIndex.load(broken)

    broken_json = tmp_path / "broken_json"
    shutil.copytree(tmp_path / "index", broken_json)
    (broken_json / "manifest.json").write_text("{oops")
    with pytest.raises(ValueError, match="manifest.json is corrupt"):
        GalleryIndex.load(broken_json)

    mismatched = tmp_path / "mismatched"
    shutil.copytree(tmp_path / "index", mismatched)
    manifest = json.loads((mismatched / "manifest.json").read_text())
    (mismatched / "manifest.json").write_text(json.dumps(dict(manifest, count=5)))
    with pytest.raises(
        ValueError, match="is corrupt: `shard_rows` must list 1 row counts adding up to `count` \\(5\\)"
    ):
        GalleryIndex.load(mismatched)
    older = {key: value for key, value in manifest.items() if key != "shard_rows"}  # as hf-cir 0.2 wrote it
    (mismatched / "manifest.json").write_text(json.dumps(dict(older, count=5)))
    with pytest.raises(ValueError, match="is corrupt: its shards hold 6 rows; the manifest says 5"):
        GalleryIndex.load(mismatched)

    escaping = tmp_path / "escaping"
    shutil.copytree(tmp_path / "index", escaping)
    (escaping / "manifest.json").write_text(json.dumps(dict(manifest, faiss={"kind": "flat", "file": "../x"})))
    with pytest.raises(ValueError, match="points outside the index folder"):
        GalleryIndex.load(escaping)

    with pytest.raises(FileExistsError, match="already exists"):
        GalleryIndex.build(lincir, photos, tmp_path / "index", show_progress=False)
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        GalleryIndex.build(lincir, tmp_path / "no_photos", tmp_path / "index2", show_progress=False)
    (tmp_path / "only_text").mkdir()
    (tmp_path / "only_text" / "a.txt").write_text("x")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="no readable image"):
            GalleryIndex.build(lincir, tmp_path / "only_text", tmp_path / "index3", show_progress=False)


def test_list_image_files_reports_non_images(gallery_dir):
    candidates, others = list_image_files(gallery_dir)
    assert "nested/deeper/broken.jpg" in candidates  # found unreadable only when opened
    assert others == {k: v for k, v in BAD_FILES.items() if k != "nested/deeper/broken.jpg"}


def test_contact_sheet_layout(lincir, tmp_path):
    photos = tmp_path / "photos"
    make_gallery(photos, with_bad_files=False)
    index = GalleryIndex.build(lincir, photos, tmp_path / "index", show_progress=False)
    hits = index.search(lincir.encode_queries(["is red"], images=[photos / "red.png"]), k=5)[0]
    sheet = make_contact_sheet([(photos / "red.png", "is red"), (None, "text only")], [hits, hits[:2]], thumb_size=64)
    assert sheet.size == (6 * 72, 2 * (64 + 3 * 12 + 8))
    # The query tile has its own background; the first result tile shows the top hit's image.
    assert sheet.getpixel((1, 1)) == (232, 240, 254)
    top = load_image(hits[0].absolute_path)
    assert sheet.getpixel((72 + 4 + 32, 4 + 32)) != (255, 255, 255)
    assert top.size == (20, 16)
