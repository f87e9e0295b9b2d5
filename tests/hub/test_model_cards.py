"""The model cards hf-cir writes: metadata that huggingface_hub's ModelCardData round-trips, no local absolute paths,
a model-index with the model's own results only (baselines labelled in the text), and usage snippets that run, as
written, in a fresh process on the shipped toy checkpoints."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import EvalResult, ModelCard
from PIL import Image
from toy.tools import load_toy_tool  # tests/toy/tools.py (tests/ is on the path through its conftest)

from hf_cir import CompoDiffPipeline, LinCIRModel, LinCIRProcessor
from hf_cir.evaluation import update_model_card
from hf_cir.evaluation.evaluate import EvaluationResult
from hf_cir.hub import create_compodiff_model_card, create_lincir_model_card, save_pretrained
from hf_cir.toy import toy_checkpoint

ROOT = Path(__file__).resolve().parents[2]
_TOY_BUILD = load_toy_tool("build_toy_models")
TOY_COMPODIFF_EXAMPLE, TOY_LINCIR_EXAMPLE_TEXT = _TOY_BUILD.TOY_COMPODIFF_EXAMPLE, _TOY_BUILD.TOY_LINCIR_EXAMPLE_TEXT
IMAGES = {"reference.jpg": (200, 30, 30), "a.jpg": (30, 30, 200), "b.jpg": (30, 200, 30)}
BLOCK_HF_CIR = """
import sys

class BlockHfCir:
    def find_spec(self, name, path=None, target=None):
        if name == "hf_cir" or name.startswith("hf_cir."):
            raise ImportError("hf_cir is blocked in this process")

sys.meta_path.insert(0, BlockHfCir())
"""


def metadata(text: str) -> dict:
    return yaml.safe_load(text.split("---\n")[1])


def usage_snippet(card_text: str) -> str:
    """The python block of the card's Usage section, as written."""
    usage = card_text.split("\n## Usage\n", 1)[1]
    return usage.split("```python\n", 1)[1].split("\n```", 1)[0]


def run_snippet(code: str, folder: Path, usage_id: str, work: Path, *, prologue: str = "", epilogue: str = ""):
    """Run `code` in a fresh Python process whose working directory holds the model folder under the snippet's
    placeholder name (`usage_id`) and the image files it opens."""
    work.mkdir()
    (work / usage_id).parent.mkdir(parents=True, exist_ok=True)
    (work / usage_id).symlink_to(folder, target_is_directory=True)
    for name, color in IMAGES.items():
        Image.new("RGB", (40, 36), color).save(work / name)
    env = {**os.environ, "HF_HOME": str(work / "hf_home"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    script = "\n".join([prologue, code, epilogue])
    completed = subprocess.run(
        [sys.executable, "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=600
    )
    assert completed.returncode == 0, f"{script}\n---\n{completed.stderr[-3000:]}"
    return completed


def opened_images(work: Path) -> dict:
    """The image files the snippet opened (JPEG: read back, not the colours they were written from)."""
    return {name: Image.open(work / name) for name in IMAGES}


def expected_lincir_outputs(folder: Path, text: str, work: Path) -> tuple[torch.Tensor, torch.Tensor]:
    model = LinCIRModel.from_pretrained(folder).eval()
    processor = LinCIRProcessor.from_pretrained(folder)
    images = opened_images(work)
    with torch.inference_mode():
        query = model.get_composed_features(**processor(images=images["reference.jpg"], text=text)).pooler_output
        gallery = model.get_image_features(**processor(images=[images["a.jpg"], images["b.jpg"]])).pooler_output
    query = query / query.norm(dim=-1, keepdim=True)
    return query, query @ (gallery / gallery.norm(dim=-1, keepdim=True)).T


def test_toy_lincir_card_snippet_runs_as_written(tmp_path):
    folder = toy_checkpoint("lincir")
    card = (folder / "README.md").read_text()
    code = usage_snippet(card)
    assert "trust_remote_code" not in code  # the shipped toy carries no remote-code files
    run_snippet(
        code, folder, "path/to/this/folder", tmp_path / "work", epilogue='torch.save([query, scores], "out.pt")'
    )
    query, scores = torch.load(tmp_path / "work" / "out.pt", weights_only=True)
    expected_query, expected_scores = expected_lincir_outputs(folder, TOY_LINCIR_EXAMPLE_TEXT, tmp_path / "work")
    torch.testing.assert_close(query, expected_query)
    torch.testing.assert_close(scores, expected_scores)


def test_saved_lincir_card_snippet_runs_with_remote_code_and_without_hf_cir(tmp_path):
    model = LinCIRModel.from_pretrained(toy_checkpoint("lincir"))
    processor = LinCIRProcessor.from_pretrained(toy_checkpoint("lincir"))
    folder = save_pretrained(
        model, tmp_path / "saved", processor, license="apache-2.0", example_text=TOY_LINCIR_EXAMPLE_TEXT
    )
    code = usage_snippet((folder / "README.md").read_text())
    assert "trust_remote_code=True" in code
    run_snippet(
        code,
        folder,
        "path/to/this/folder",
        tmp_path / "work",
        prologue=BLOCK_HF_CIR,
        epilogue=textwrap.dedent(
            """
            assert not [name for name in sys.modules if name.startswith("hf_cir")]
            torch.save([query, scores], "out.pt")
            """
        ),
    )
    query, scores = torch.load(tmp_path / "work" / "out.pt", weights_only=True)
    expected_query, expected_scores = expected_lincir_outputs(folder, TOY_LINCIR_EXAMPLE_TEXT, tmp_path / "work")
    torch.testing.assert_close(query, expected_query)
    torch.testing.assert_close(scores, expected_scores)


def test_toy_compodiff_card_snippet_runs_as_written(tmp_path):
    folder = toy_checkpoint("compodiff")
    code = usage_snippet((folder / "README.md").read_text())
    run_snippet(code, folder, "path/to/compodiff", tmp_path / "work", epilogue='torch.save(scores, "out.pt")')
    scores = torch.load(tmp_path / "work" / "out.pt", weights_only=True)
    pipe = CompoDiffPipeline.from_pretrained(folder)
    images = opened_images(tmp_path / "work")
    example = TOY_COMPODIFF_EXAMPLE
    query = pipe(
        example["prompt"],
        image=images["reference.jpg"],
        negative_prompt=example["negative_prompt"],
        generator=torch.Generator().manual_seed(0),  # the checkpoint's own guidance, as the card's snippet shows
    ).image_embeds
    query = query / query.norm(dim=-1, keepdim=True)
    gallery = pipe.encode_image([images["a.jpg"], images["b.jpg"]])
    torch.testing.assert_close(scores, query @ (gallery / gallery.norm(dim=-1, keepdim=True)).T)


def test_card_metadata_round_trips_and_holds_no_local_path(tmp_path):
    results = [
        EvalResult(
            task_type="composed-image-retrieval",
            dataset_type="cirr",
            dataset_name="CIRR",
            dataset_split="val",
            metric_type="recall@1",
            metric_name="recall@1 (lincir)",
            metric_value=25.04,
        )
    ]
    model = LinCIRModel.from_pretrained(toy_checkpoint("lincir"))
    pipe = CompoDiffPipeline.from_pretrained(toy_checkpoint("compodiff"))
    cards = {
        "lincir": create_lincir_model_card(
            model, model_id="me/lincir", base_model="openai/clip-vit-large-patch14", eval_results=results
        ),
        "compodiff": create_compodiff_model_card(pipe, model_id="me/compodiff", eval_results=results),
        "compodiff-unnamed": create_compodiff_model_card(pipe),
    }
    for name, card in cards.items():
        path = tmp_path / f"{name}.md"
        card.save(path)
        loaded = ModelCard.load(path)
        assert loaded.data == card.data and loaded.data.to_dict() == card.data.to_dict(), name
        assert loaded.data.pipeline_tag == "image-feature-extraction" and loaded.data.model_name, name
        text = path.read_text()
        assert str(ROOT) not in text and str(tmp_path) not in text, name
    assert cards["lincir"].data.base_model == "openai/clip-vit-large-patch14"
    assert cards["compodiff-unnamed"].data.model_name == "CompoDiff"
    # The toy pipeline's encoders were loaded from local folders: shown by relative path, not as base models.
    assert cards["compodiff"].data.base_model is None
    assert "text_encoder` (last hidden state" in cards["compodiff"].text
    # A user-trained or saved model states the license it is given, or none.
    assert create_lincir_model_card(model, license=None).data.license is None
    assert "**License:** not stated" in create_lincir_model_card(model, license=None).text


def _result(method: str, recall: float, benchmark: str = "toy") -> EvaluationResult:
    return EvaluationResult(
        benchmark=benchmark,
        split="val",
        method=method,
        model="toy",
        metrics={"recall@1": recall, "recall@5": recall + 10},
        num_queries=10,
        num_images=20,
    )


def test_update_model_card_puts_only_the_models_own_method_in_the_model_index(tmp_path):
    folder = tmp_path / "my-lincir"
    folder.mkdir()
    shutil.copy(toy_checkpoint("lincir") / "config.json", folder / "config.json")
    card = create_lincir_model_card(LinCIRModel.from_pretrained(toy_checkpoint("lincir")), license="mit")
    card.save(folder / "README.md")
    model_name = ModelCard.load(folder / "README.md").data.model_name

    update_model_card(folder, [_result("lincir", 22.33), _result("sum", 21.0), _result("image", 1.5)])
    loaded = ModelCard.load(folder / "README.md")
    assert {entry.metric_name for entry in loaded.data.eval_results} == {"recall@1 (lincir)", "recall@5 (lincir)"}
    assert loaded.data.model_name == model_name and loaded.data.license == "mit"
    text = loaded.text
    baselines = text.split("Baselines on the same data", 1)[1]
    assert "| hf-cir toy world | val | recall@1 (sum) | 21.0 |" in baselines
    assert "| hf-cir toy world | val | recall@1 (image) | 1.5 |" in baselines
    assert "(sum)" not in text.split("Baselines on the same data", 1)[0]
    assert text.index("## Evaluation") < text.index("## Citation")

    # A later run replaces its own entries and baseline rows and keeps the rest.
    update_model_card(folder, [_result("lincir", 30.0), _result("sum", 20.0)])
    loaded = ModelCard.load(folder / "README.md")
    assert sorted(entry.metric_value for entry in loaded.data.eval_results) == [30.0, 40.0]
    assert loaded.text.count("recall@1 (sum)") == 1 and "| recall@1 (sum) | 20.0 |" in loaded.text
    assert "recall@1 (image) | 1.5 |" in loaded.text and loaded.text.count("## Evaluation") == 1
    assert ModelCard.load(folder / "README.md").data == loaded.data  # stable on disk

    with pytest.raises(ValueError, match="neither this lincir model's nor a baseline's"):
        update_model_card(folder, [_result("compodiff", 1.0)])


def test_update_model_card_moves_baselines_an_older_card_indexed(tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    shutil.copy(toy_checkpoint("lincir") / "config.json", folder / "config.json")
    entry = dict(task_type="composed-image-retrieval", dataset_type="toy", dataset_name="hf-cir toy world")
    old = [
        EvalResult(
            **entry, dataset_split="val", metric_type="recall@1", metric_name="recall@1 (lincir)", metric_value=1.0
        ),
        EvalResult(
            **entry, dataset_split="val", metric_type="recall@1", metric_name="recall@1 (sum)", metric_value=2.0
        ),
    ]
    card = create_lincir_model_card(LinCIRModel.from_pretrained(toy_checkpoint("lincir")), eval_results=old)
    card.save(folder / "README.md")
    update_model_card(folder, [_result("lincir", 5.0)], model_method="lincir")
    loaded = ModelCard.load(folder / "README.md")
    assert [e.metric_name for e in loaded.data.eval_results] == ["recall@1 (lincir)", "recall@5 (lincir)"]
    assert "| hf-cir toy world | val | recall@1 (sum) | 2.0 |" in loaded.text.split("Baselines on the same data")[1]
