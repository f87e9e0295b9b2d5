"""SEARLE and Pic2Word folders everywhere the other methods are: the model folder decides the method in
`hf-cir search` and `hf-cir evaluate`, the retrieval interface, and the model card's model-index."""

import json

import pytest
import torch
from evaluation.conftest import build_cirr
from huggingface_hub import ModelCard

from hf_cir.cli import main
from hf_cir.conversion.pic2word import convert_pic2word_checkpoint
from hf_cir.conversion.searle import convert_searle_checkpoint
from hf_cir.retrieval import GalleryIndex, load_retrieval_model
from hf_cir.retrieval.models import detect_own_method


def run(capsys, *argv):
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def family(reference_dir, tmp_path_factory):
    root, fixtures = tmp_path_factory.mktemp("family"), reference_dir / "textual_inversion"
    clip = reference_dir / "clip"
    convert_searle_checkpoint(fixtures / "searle" / "SEARLE_tiny.pt", clip, root / "searle")
    convert_pic2word_checkpoint(fixtures / "pic2word" / "pic2word_tiny.pt", clip, root / "pic2word")
    return {"searle": root / "searle", "pic2word": root / "pic2word"}


@pytest.mark.parametrize("method", ["searle", "pic2word"])
def test_retrieval_model_takes_its_method_from_the_folder(family, gallery_dir, method):
    assert detect_own_method(family[method]) == method
    model = load_retrieval_model(family[method], device="cpu")
    assert model.default_method == method and model.methods == (method, "image", "text", "sum")
    assert model.check_method(None) == method
    with pytest.raises(ValueError, match=f"'lincir' needs a lincir model, but .* is a {method} model"):
        model.check_method("lincir")
    with pytest.raises(ValueError, match="needs a reference image"):
        model.encode_queries(["is blue"], method=method)
    query = model.encode_queries(["is blue"], images=[gallery_dir / "red.png"])
    # The same as the model's own composed features, with the method's own prompt.
    processor, lincir_model = model.processor, model.model
    inputs = processor(images=[gallery_dir / "red.png"], text=["is blue"])
    assert processor.batch_decode(inputs["input_ids"], skip_special_tokens=True)[0] == (
        lincir_model.config.prompt_template.format("is blue")
    )
    with torch.no_grad():
        expected = lincir_model.get_composed_features(**inputs, return_dict=True).pooler_output
    assert torch.allclose(query, expected, atol=1e-6)


def test_search_with_a_searle_folder_defaults_to_searle(capsys, family, lincir_dir, gallery_dir, tmp_path):
    index_dir = tmp_path / "index"
    code, out, err = run(
        capsys, "index", "--model", family["searle"], "--images", gallery_dir, "--output", index_dir, "--no-progress"
    )
    assert code == 0, err
    image = gallery_dir / "red.png"
    code, out, err = run(capsys, "search", "--index", index_dir, "--image", image, "--text", "is blue", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["method"] == "searle" and result["model"] == str(family["searle"])
    model = load_retrieval_model(family["searle"], device="cpu")
    expected = GalleryIndex.load(index_dir).search(model.encode_queries(["is blue"], images=[image]), k=10)[0]
    assert [hit["path"] for hit in result["results"]] == [hit.path for hit in expected if hit.path != "red.png"]

    # Pic2Word shares the tiny CLIP's image encoder: it may search the same index, with its own method.
    code, out, err = run(
        capsys,
        "search",
        "--index",
        index_dir,
        "--model",
        family["pic2word"],
        "--image",
        image,
        "--text",
        "x",
        "--json",
    )
    assert code == 0 and json.loads(out)["method"] == "pic2word", err
    for extra, message in (
        (
            ["--method", "lincir", "--image", image, "--text", "x"],
            "--method lincir does not apply to the searle model",
        ),
        (["--text", "x"], "'searle' needs --image"),
    ):
        code, out, err = run(capsys, "search", "--index", index_dir, *extra)
        assert code == 2 and message in err, (extra, err)


def test_evaluate_pic2word_folder_and_update_its_card(capsys, family, tmp_path):
    cirr = build_cirr(tmp_path / "CIRR")
    folder = family["pic2word"]
    common = ["--model", folder, "--benchmark", "cirr", "--data-dir", cirr, "--no-progress"]
    common += ["--cache-dir", tmp_path / "cache", "--output-dir", tmp_path / "out"]
    code, out, err = run(capsys, "evaluate", *common, "--json", "--update-model-card")
    assert code == 0, err
    results = json.loads(out)["results"]
    assert [result["method"] for result in results] == ["pic2word"]
    assert (tmp_path / "out" / "results_cirr_val_pic2word.json").is_file()
    card = ModelCard.load(folder / "README.md")
    names = {entry.metric_name for entry in card.data.eval_results}
    assert names and all(name.endswith("(pic2word)") for name in names)
    assert card.data.license == "apache-2.0" and "saito2023pic2word" in card.text
    code, out, err = run(capsys, "evaluate", *common, "--method", "searle")
    assert code == 2 and "'searle' needs a searle model" in err


def test_update_model_card_takes_the_folders_own_method(family):
    # Without `model_method`, the card's model-index takes the folder's own method (SEARLE), not its model type.
    from hf_cir.evaluation import update_model_card
    from hf_cir.evaluation.evaluate import EvaluationResult

    result = EvaluationResult("cirr", "val", "searle", str(family["searle"]), {"recall@1": 50.0}, 3, 8)
    card = ModelCard.load(update_model_card(family["searle"], [result]))
    assert {entry.metric_name for entry in card.data.eval_results} == {"recall@1 (searle)"}
