"""One composed query, one code path (issue 21): `hf-cir search`, the app's engine and `hf-cir evaluate` rank a
gallery identically for the same query, for the shipped toy LinCIR and CompoDiff.

The gallery is a CIRR test split (8 images, 3 queries whose texts use the toy world's words); `hf-cir evaluate`
writes CIRR's server file (the top 50 per query, the reference left out), `hf-cir search` queries an index of the
same images with `--image` (the reference, an image of the index, is left out), and the app's engine with the
reference picked from the gallery.
"""

import json

import pytest
from evaluation.conftest import CIRR_QUERIES, build_cirr
from PIL import Image

from hf_cir.app.engine import Query, SearchEngine
from hf_cir.cli import main
from hf_cir.toy import toy_checkpoint

TEXTS = {11: "make it red", 12: "make the object large", 13: "make the background dotted"}


def _run(capsys, *argv):
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


@pytest.fixture(scope="module")
def cirr(tmp_path_factory):
    root = build_cirr(tmp_path_factory.mktemp("one-path") / "CIRR")
    path = root / "cirr" / "captions" / "cap.rc2.test1.json"
    captions = json.loads(path.read_text())
    for entry in captions:
        entry["caption"] = TEXTS[entry["pairid"]]
    path.write_text(json.dumps(captions))
    return root


@pytest.mark.parametrize("family", ["lincir", "compodiff"])
def test_search_app_and_evaluate_rank_alike(capsys, cirr, tmp_path, family):
    model = toy_checkpoint(family)
    index = tmp_path / "test1.index"
    _run(
        capsys,
        "index",
        "--model",
        model,
        "--images",
        cirr / "test1",
        "--output",
        index,
        "--device",
        "cpu",
        "--embedding-dtype",
        "float32",
        "--no-progress",
    )
    # One query per call everywhere: a CompoDiff query's noise depends on its place in a batch.
    _run(
        capsys,
        "evaluate",
        "--model",
        model,
        "--benchmark",
        "cirr",
        "--data-dir",
        cirr,
        "--split",
        "test",
        "--device",
        "cpu",
        "--batch-size",
        1,
        "--no-cache",
        "--no-progress",
        "--output-dir",
        tmp_path / "out",
    )
    evaluated = json.loads((tmp_path / "out" / f"cirr_test1_recall_{family}.json").read_text())
    engine = SearchEngine.from_folders([index], device="cpu")
    for pairid, reference, _, _ in CIRR_QUERIES:
        text, image = TEXTS[pairid], cirr / "test1" / f"test1-{reference}.png"
        searched = json.loads(
            _run(
                capsys,
                "search",
                "--index",
                index,
                "--image",
                image,
                "--text",
                text,
                "--top-k",
                7,
                "--json",
                "--device",
                "cpu",
            )
        )
        picked = engine.search(None, Query(text=text, reference_id=image.name, methods=[family], top_k=7))
        # An upload of the same picture is the same query (and is left out as the same picture).
        uploaded = engine.search(
            None, Query(text=text, image=Image.open(image).convert("RGB"), methods=[family], top_k=7)
        )
        cli = [hit["path"].removesuffix(".png") for hit in searched["results"]]
        app = [hit["id"].removesuffix(".png") for hit in picked["columns"][family]["hits"]]
        app_upload = [hit["id"].removesuffix(".png") for hit in uploaded["columns"][family]["hits"]]
        assert len(cli) == 7 and f"test1-{reference}" not in cli  # the reference is left out everywhere
        assert cli == app == app_upload == evaluated[str(pairid)][:7], (family, pairid)
