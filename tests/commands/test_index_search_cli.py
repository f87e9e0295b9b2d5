"""`hf-cir index` and `hf-cir search`: JSON output, contact sheets, faiss, resume, and errors for bad input."""

import json
import re

import pytest
import torch
from PIL import Image
from retrieval.conftest import BAD_FILES, make_gallery

from hf_cir.cli import main
from hf_cir.retrieval import GalleryIndex, load_retrieval_model


def run(capsys, *argv):
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("command", ["index", "search", "evaluate"])
def test_help_has_an_example(capsys, command):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    # "example:" or "example (runs as written ...):" heads the epilog; an example line of this very command follows.
    assert re.search(r"^examples?( \(.*\))?:$", out, flags=re.MULTILINE), out
    assert f"hf-cir {command} --" in out


def test_index_then_search_json_and_grid(capsys, lincir_dir, gallery_dir, tmp_path):
    index_dir = tmp_path / "photos.index"
    code, out, err = run(
        capsys,
        "index",
        "--model",
        lincir_dir,
        "--images",
        gallery_dir,
        "--output",
        index_dir,
        "--no-progress",
        "--json",
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["images"] == 6 and summary["model_type"] == "lincir" and summary["embedding_dim"] == 64
    assert set(summary["skipped"]) == set(BAD_FILES)
    for path in BAD_FILES:  # the warning lists every skipped file
        assert path in err

    grid = tmp_path / "grid.png"
    code, out, err = run(
        capsys,
        "search",
        "--index",
        index_dir,
        "--image",
        gallery_dir / "red.png",
        "--text",
        "is blue",
        "--top-k",
        3,
        "--json",
        "--save-grid",
        grid,
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["method"] == "lincir" and result["model"] == str(lincir_dir)  # model read from the index
    assert [hit["rank"] for hit in result["results"]] == [1, 2, 3]
    # Same ranking as the library call.
    model = load_retrieval_model(lincir_dir, device="cpu")
    index = GalleryIndex.load(index_dir)
    expected = index.search(model.encode_queries(["is blue"], images=[gallery_dir / "red.png"]), k=3)[0]
    assert [hit["path"] for hit in result["results"]] == [hit.path for hit in expected]
    assert [hit["score"] for hit in result["results"]] == pytest.approx([hit.score for hit in expected], abs=1e-6)
    with Image.open(grid) as sheet:
        assert sheet.format == "PNG" and sheet.width == 4 * (128 + 8)

    code, out, err = run(
        capsys,
        "search",
        "--index",
        index_dir,
        "--image",
        gallery_dir / "red.png",
        "--method",
        "image",
        "--include-query",
    )
    assert code == 0 and out.splitlines()[1].split()[-1] == "red.png" and "1.0000" in out.splitlines()[1]

    code, out, err = run(
        capsys, "search", "--index", index_dir, "--text", "a red square", "--method", "text", "--json"
    )
    assert code == 0 and len(json.loads(out)["results"]) == 6  # fewer images than the default top-k


def test_search_errors(capsys, lincir_dir, compodiff_dir, lincir_other_size_dir, gallery_dir, tmp_path):
    index_dir = tmp_path / "index"
    assert (
        run(capsys, "index", "--model", lincir_dir, "--images", gallery_dir, "--output", index_dir, "--no-progress")[0]
        == 0
    )
    image = gallery_dir / "red.png"
    cases = [
        (
            ["--method", "compodiff", "--image", image, "--text", "x"],
            "--method compodiff does not apply to the lincir model",
        ),
        (["--image", image, "--text", "x", "--mask", image], "--mask does not apply to method 'lincir'"),
        (["--text", "x"], "'lincir' needs --image"),
        ([], "give a query"),
        (["--image", image, "--text", "x", "--top-k", 0], "--top-k must be at least 1"),
        (["--image", image, "--text", "x", "--model", lincir_other_size_dir], "embeds into 32 dimensions"),
        (["--image", tmp_path / "missing.png", "--text", "x"], "no such file"),
    ]
    for extra, message in cases:
        code, out, err = run(capsys, "search", "--index", index_dir, *extra)
        assert code == 2 and message in err, (extra, err)
    code, out, err = run(capsys, "search", "--index", tmp_path / "nope", "--text", "x")
    assert code == 2 and "does not exist" in err
    with pytest.raises(SystemExit):
        main(["search", "--index", str(index_dir), "--text", "x", "--method", "blend"])
    assert "invalid choice: 'blend'" in capsys.readouterr().err


def test_index_errors_and_resume_message(capsys, lincir_dir, tiny_clip_dir, gallery_dir, tmp_path):
    output = tmp_path / "index"
    code, _, err = run(capsys, "index", "--model", tiny_clip_dir, "--images", gallery_dir, "--output", output)
    assert code == 2 and "model_type 'clip'" in err
    code, _, err = run(capsys, "index", "--model", lincir_dir, "--images", tmp_path / "none", "--output", output)
    assert code == 2 and "is not a folder" in err
    code, _, err = run(
        capsys, "index", "--model", lincir_dir, "--images", gallery_dir, "--output", output, "--num-inference-steps", 3
    )
    assert code == 2 and "sampling options do not apply to indexing" in err
    assert (
        run(capsys, "index", "--model", lincir_dir, "--images", gallery_dir, "--output", output, "--no-progress")[0]
        == 0
    )
    code, _, err = run(capsys, "index", "--model", lincir_dir, "--images", gallery_dir, "--output", output)
    assert code == 2 and "already exists" in err and "--overwrite" in err


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_faiss_indexes_match_exact_search(capsys, compodiff_dir, tmp_path, kind):
    photos = tmp_path / "photos"
    make_gallery(photos, with_bad_files=False)
    output = tmp_path / f"index-{kind}"
    code, out, err = run(
        capsys,
        "index",
        "--model",
        compodiff_dir,
        "--images",
        photos,
        "--output",
        output,
        "--faiss",
        kind,
        "--no-progress",
    )
    assert code == 0, err
    assert (output / "faiss.index").is_file()
    index = GalleryIndex.load(output)
    assert index.info["faiss"]["kind"] == kind and index._backend is not None
    queries = torch.nn.functional.normalize(index.embeddings[:3] + 0.01, dim=-1)
    approximate = [[hit.path for hit in hits] for hits in index.search(queries, k=3)]
    exact = [[hit.path for hit in hits] for hits in index.search(queries, k=3, exact=True)]
    assert approximate == exact  # a 6-image gallery: every kind finds the exact top-3
    (output / "faiss.index").write_bytes(b"broken")
    with pytest.raises(ValueError, match="faiss.index is corrupt: faiss cannot read it"):
        GalleryIndex.load(output)


def test_compodiff_search_with_mask_and_negative_text(capsys, compodiff_dir, tmp_path):
    photos = tmp_path / "photos"
    make_gallery(photos, with_bad_files=False)
    mask = tmp_path / "mask.png"
    Image.new("L", (20, 16), 255).save(mask)
    index_dir = tmp_path / "index"
    assert (
        run(capsys, "index", "--model", compodiff_dir, "--images", photos, "--output", index_dir, "--no-progress")[0]
        == 0
    )
    common = ["search", "--index", index_dir, "--image", photos / "red.png", "--text", "is blue", "--json"]
    sampling = ["--num-inference-steps", 3, "--seed", 1]
    code, out, err = run(
        capsys, *common, *sampling, "--negative-text", "red", "--mask", mask, "--save-grid", tmp_path / "g.png"
    )
    assert code == 0, err
    result = json.loads(out)
    # A 6-image gallery: the query image itself (red.png) is left out of its own results.
    assert result["method"] == "compodiff" and result["query"]["mask"] == str(mask) and len(result["results"]) == 5
    # The CLI query equals the library query with the same settings.
    model = load_retrieval_model(compodiff_dir, device="cpu", num_inference_steps=3, seed=1)
    query = model.encode_queries(["is blue"], images=[photos / "red.png"], negative_texts=["red"], mask_images=[mask])
    expected = GalleryIndex.load(index_dir).search(query, k=6)[0]
    assert [hit["path"] for hit in result["results"]] == [hit.path for hit in expected if hit.path != "red.png"]
    assert (tmp_path / "g.png").is_file()
    code, _, err = run(capsys, *common, "--method", "lincir")
    assert code == 2 and "--method lincir does not apply to the compodiff model" in err
