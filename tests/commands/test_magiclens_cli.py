"""MagicLens everywhere the other families are, through the family registry: the retrieval interface (gallery
embedded with the empty text), `hf-cir index` / `search`, and one-line refusals of what MagicLens cannot do."""

import json

import pytest
import torch

from hf_cir.conversion.magiclens import convert_magiclens_checkpoint
from hf_cir.families import read_model_folder
from hf_cir.retrieval import GalleryIndex, load_retrieval_model

from .conftest import run_cli


@pytest.fixture(scope="module")
def magiclens_dir(reference_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("magiclens") / "tiny"
    checkpoint = reference_dir / "magiclens" / "magic_lens_tiny.pkl.gz"
    convert_magiclens_checkpoint(checkpoint, folder, tokenizer=reference_dir / "clip")
    return folder


def test_retrieval_model_embeds_the_magiclens_way(magiclens_dir, gallery_dir):
    folder = read_model_folder(magiclens_dir)
    assert folder.family.name == "magiclens" and folder.method == "magiclens"
    model = load_retrieval_model(magiclens_dir, device="cpu")
    assert model.methods == ("magiclens", "image") and model.check_method(None) == "magiclens"
    assert folder.methods == folder.family.method_names == model.methods  # the registration says the same
    image = gallery_dir / "red.png"
    inputs = model.processor(images=[image], text=["is blue"])
    with torch.no_grad():
        gallery = model.model(pixel_values=inputs["pixel_values"]).composed_embeds  # the empty text
        composed = model.model(**inputs).composed_embeds
    assert torch.allclose(model.encode_images([image]), gallery, atol=1e-6)
    assert torch.allclose(model.encode_queries(["is blue"], images=[image]), composed, atol=1e-6)
    assert torch.allclose(model.encode_queries(["ignored"], images=[image], method="image"), gallery, atol=1e-6)
    with pytest.raises(
        ValueError, match=r"Method 'text' does not apply to the magiclens model .*: magiclens, image\.$"
    ):
        model.check_method("text")
    with pytest.raises(ValueError, match="from the reference image itself"):
        model.encode_queries(["is blue"], image_embeds=model.encode_images([image]))


@pytest.fixture
def magiclens_index(capfd, magiclens_dir, gallery_dir, tmp_path):
    index_dir = tmp_path / "index"
    code, out, err = run_cli(
        capfd, "index", "--model", magiclens_dir, "--images", gallery_dir, "--output", index_dir, "--no-progress"
    )
    assert code == 0, err
    return index_dir


def test_index_holds_the_empty_text_embeddings(capfd, magiclens_dir, magiclens_index, gallery_dir):
    model = load_retrieval_model(magiclens_dir, device="cpu")
    index = GalleryIndex.load(magiclens_index)
    hit = index.search(model.encode_images([gallery_dir / "red.png"]), k=1)[0][0]
    assert hit.path == "red.png" and hit.score == pytest.approx(1.0, abs=1e-5)
    code, out, err = run_cli(capfd, "search", "--index", magiclens_index, "--text", "is blue", "--method", "text")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "magiclens" in err, err


def test_search_by_image(capfd, magiclens_dir, magiclens_index, gallery_dir):
    image = gallery_dir / "red.png"
    code, out, err = run_cli(
        capfd, "search", "--index", magiclens_index, "--image", image, "--text", "is blue", "--json"
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["method"] == "magiclens"
    model = load_retrieval_model(magiclens_dir, device="cpu")
    expected = GalleryIndex.load(magiclens_index).search(model.encode_queries(["is blue"], images=[image]), k=10)[0]
    assert [hit["path"] for hit in result["results"]] == [hit.path for hit in expected if hit.path != "red.png"]


def test_retrieve_by_gallery_id_composes_from_the_image(magiclens_dir, magiclens_index, gallery_dir):
    from hf_cir.retrieval.query import ComposedQuery, retrieve

    # A reference of the index: its stored row is the empty-text embedding, so the image itself is opened instead.
    model = load_retrieval_model(magiclens_dir, device="cpu")
    index = GalleryIndex.load(magiclens_index)
    result = retrieve(model, index, ComposedQuery(text="is blue", reference_id="red.png"))
    expected = index.search(model.encode_queries(["is blue"], images=[gallery_dir / "red.png"]), k=10)[0]
    assert [hit.path for hit in result.hits] == [hit.path for hit in expected if hit.path != "red.png"]
    assert result.timings["encode_source"] == "image encoder"
    with pytest.raises(ValueError, match="composes from the reference image itself"):
        retrieve(model, index, ComposedQuery(text="is blue", image_embeds=index.get_embeddings([0])[0]))
    image_only = retrieve(model, index, ComposedQuery(reference_id="red.png"), method="image")
    assert image_only.timings["encode_source"] == "stored"  # the image baseline reuses the gallery row


def test_app_columns_and_search(magiclens_dir, magiclens_index, gallery_dir):
    from hf_cir.app.engine import Query, SearchEngine

    engine = SearchEngine.from_folders([magiclens_index])
    gallery = engine.gallery(None)
    assert list(gallery.columns) == ["magiclens", "image"]  # no text / sum baselines for MagicLens
    assert gallery.columns["magiclens"].label == "MagicLens"
    result = engine.search(None, Query(text="is blue", reference_id="red.png", top_k=3))
    model = load_retrieval_model(magiclens_dir, device="cpu")
    query = model.encode_queries(["is blue"], images=[gallery_dir / "red.png"])
    expected = [hit.path for hit in GalleryIndex.load(magiclens_index).search(query, k=4)[0] if hit.path != "red.png"]
    assert [hit["id"] for hit in result["columns"]["magiclens"]["hits"]] == expected[:3]
    assert result["columns"]["magiclens"]["timings"]["encode_source"] == "image encoder"
