"""LinCIR conversion, model card, Hub upload (mocked at the network call) and the remote-code route."""

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from unittest import mock

import pytest
import torch
import yaml
from huggingface_hub import EvalResult
from safetensors.torch import load_file

import hf_cir.models.lincir as lincir_package
from hf_cir import LinCIRModel, LinCIRProcessor
from hf_cir.cli import main as cli_main
from hf_cir.conversion.lincir import convert_lincir_checkpoint
from hf_cir.hub import create_lincir_model_card, push_to_hub, save_pretrained

REMOTE_CODE_FILES = ("configuration_lincir.py", "modeling_lincir.py", "processing_lincir.py")


@pytest.fixture(scope="module")
def converted(reference_dir, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("converted") / "lincir"
    model = convert_lincir_checkpoint(reference_dir / "lincir" / "phi.pt", reference_dir / "clip", output_dir)
    return output_dir, model


def card_metadata(text):
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_converted_folder_matches_reference(converted, reference_dir):
    output_dir, _ = converted
    files = sorted(p.name for p in output_dir.iterdir())
    assert "model.safetensors" in files and "README.md" in files and "processor_config.json" in files
    assert set(REMOTE_CODE_FILES) <= set(files)
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pkl"))]
    assert sorted(p.name for p in output_dir.parent.iterdir()) == ["lincir"]  # atomic: no leftovers

    model = LinCIRModel.from_pretrained(output_dir).eval()
    processor = LinCIRProcessor.from_pretrained(output_dir)
    expected = load_file(reference_dir / "lincir" / "expected.safetensors")
    cases = json.loads((reference_dir / "lincir" / "cases.json").read_text())["cases"]
    from PIL import Image

    for case in cases:
        if "image_files" in case:
            with Image.open(reference_dir / "lincir" / case["image_files"][0]) as image:
                inputs = processor(images=image, text=case["texts"])
            with torch.no_grad():
                out = model.get_composed_features(**inputs).pooler_output
        else:
            inputs = processor(text=case["texts"])
            with torch.no_grad():
                out = model.get_composed_features(
                    inputs["input_ids"], image_embeds=expected[case["inputs"]["image_embeds"]]
                ).pooler_output
        assert (out - expected[case["expected"]["composed_embeds"]]).abs().max() <= 1e-5, case["name"]

    reference_phi = torch.load(reference_dir / "lincir" / "phi.pt", weights_only=True)["Phi"]
    stored = load_file(output_dir / "model.safetensors")
    for key, tensor in reference_phi.items():
        assert torch.equal(stored[f"phi.{key}"], tensor)


def test_converted_model_card(converted):
    output_dir, _ = converted
    text = (output_dir / "README.md").read_text()
    metadata = card_metadata(text)
    assert metadata["license"] == "cc-by-nc-4.0"
    assert metadata["tags"] == ["composed-image-retrieval", "lincir", "clip"]
    assert metadata["library_name"] == "transformers"
    assert "base_model" not in metadata  # a local CLIP folder is not a Hub id
    assert "model-index" not in metadata
    assert "@inproceedings{gu2024lincir" in text and "CVPR" in text
    assert "get_composed_features" in text and "phi.pt" in text
    assert "(64 → 256 → 256 → 32" in text and "token id 259" in text


def test_model_card_with_base_model_and_eval_results(converted):
    _, model = converted
    results = [
        EvalResult(
            task_type="image-retrieval",
            dataset_type="cirr",
            dataset_name="CIRR",
            dataset_split="test",
            metric_type="recall",
            metric_name="Recall@1",
            metric_value=25.04,
        ),
        {
            "task_type": "image-retrieval",
            "dataset_type": "circo",
            "dataset_name": "CIRCO",
            "metric_type": "map",
            "metric_name": "mAP@5",
            "metric_value": 12.59,
        },
    ]
    card = create_lincir_model_card(
        model,
        model_id="me/lincir-large",
        base_model="openai/clip-vit-large-patch14",
        eval_results=results,
        datasets=["me/captions"],
        tags=["extra", "clip"],
        training_details="Trained 10 steps.",
    )
    metadata = card_metadata(str(card))
    assert metadata["base_model"] == "openai/clip-vit-large-patch14"
    assert metadata["tags"] == ["composed-image-retrieval", "lincir", "clip", "extra"]
    assert metadata["datasets"] == ["me/captions"]
    index = metadata["model-index"][0]
    assert index["name"] == "me/lincir-large"
    assert [r["dataset"]["name"] for r in index["results"]] == ["CIRR", "CIRCO"]
    assert index["results"][0]["metrics"][0]["value"] == 25.04
    body = card.text
    assert 'AutoModel.from_pretrained("me/lincir-large", trust_remote_code=True)' in body
    assert "| CIRR | test | Recall@1 | 25.04 |" in body and "Trained 10 steps." in body
    assert "https://huggingface.co/openai/clip-vit-large-patch14" in body


def test_push_to_hub_uploads_folder_with_card(converted, tiny_clip_dir):
    _, model = converted
    processor = LinCIRProcessor.from_pretrained(tiny_clip_dir)
    uploaded = {}

    def fake_upload_folder(self, *, repo_id, folder_path, **kwargs):
        folder = Path(folder_path)
        uploaded.update(
            repo_id=repo_id,
            files=sorted(p.name for p in folder.iterdir()),
            readme=(folder / "README.md").read_text(),
            kwargs=kwargs,
        )
        return "commit-info"

    create_repo = mock.Mock(return_value=mock.Mock(repo_id="me/lincir-tiny"))
    with (
        mock.patch("huggingface_hub.HfApi.create_repo", create_repo),
        mock.patch("huggingface_hub.HfApi.upload_folder", fake_upload_folder),
    ):
        assert push_to_hub(model, "me/lincir-tiny", processor, private=True) == "commit-info"
    create_repo.assert_called_once()
    assert create_repo.call_args.kwargs["private"] is True
    assert uploaded["repo_id"] == "me/lincir-tiny"
    assert {"model.safetensors", "config.json", "README.md", "processor_config.json", "tokenizer.json"} <= set(
        uploaded["files"]
    )
    assert card_metadata(uploaded["readme"])["license"] == "cc-by-nc-4.0"
    assert 'from_pretrained("me/lincir-tiny"' in uploaded["readme"]
    with (
        mock.patch("huggingface_hub.HfApi.create_repo", create_repo),
        mock.patch("huggingface_hub.HfApi.upload_folder", fake_upload_folder),
    ):
        push_to_hub(model, "me/lincir-tiny", license="apache-2.0")
    assert card_metadata(uploaded["readme"])["license"] == "apache-2.0"


def test_save_rejects_processor_from_other_tokenizer(converted, tiny_clip_dir, tmp_path):
    _, model = converted
    processor = LinCIRProcessor.from_pretrained(tiny_clip_dir)
    other = LinCIRModel(model.config.__class__.from_dict({**model.config.to_dict(), "placeholder_token_id": 260}))
    with pytest.raises(ValueError, match="placeholder id"):
        save_pretrained(other, tmp_path, processor)


def write_phi(path, obj):
    torch.save(obj, path)
    return path


def test_conversion_bad_checkpoints(reference_dir, tmp_path):
    clip = reference_dir / "clip"
    reference_phi = torch.load(reference_dir / "lincir" / "phi.pt", weights_only=True)["Phi"]

    wrong = {key: value.clone() for key, value in reference_phi.items()}
    wrong["layers.0.weight"] = torch.zeros(256, 768)  # trained on a 768-d CLIP
    with pytest.raises(ValueError, match=r"\(256, 768\).*\(256, 64\)"):
        convert_lincir_checkpoint(write_phi(tmp_path / "wrong.pt", {"Phi": wrong}), clip, tmp_path / "out1")

    with pytest.raises(ValueError, match="not a phi state dict.*'Phi'"):
        convert_lincir_checkpoint(write_phi(tmp_path / "list.pt", [1, 2, 3]), clip, tmp_path / "out2")
    with pytest.raises(ValueError, match="not a phi state dict"):
        convert_lincir_checkpoint(write_phi(tmp_path / "nested.pt", {"Phi": {"a": 1}}), clip, tmp_path / "out3")
    with pytest.raises(ValueError, match="unexpected keys \\['extra'\\]"):
        convert_lincir_checkpoint(
            write_phi(tmp_path / "extra.pt", {"Phi": {**reference_phi, "extra": torch.zeros(1)}}),
            clip,
            tmp_path / "o4",
        )
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a pickle")
    with pytest.raises(ValueError, match="weights_only"):
        convert_lincir_checkpoint(garbage, clip, tmp_path / "out5")
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        convert_lincir_checkpoint(tmp_path / "nope.pt", clip, tmp_path / "out6")
    assert not any(p.name.startswith("out") or p.name.startswith("o4") for p in tmp_path.iterdir())

    bare = write_phi(tmp_path / "bare.pt", reference_phi)  # a bare state dict is accepted too
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="busy"):
        convert_lincir_checkpoint(bare, clip, busy)

    no_weights = tmp_path / "clip-no-weights"
    no_weights.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"):
        (no_weights / name).write_bytes((clip / name).read_bytes())
    # One line naming the argument, the folder and what is missing (transformers' own reason kept).
    with pytest.raises(
        ValueError, match=r"`clip_name_or_path` .*clip-no-weights: could not load .*model\.safetensors"
    ):
        convert_lincir_checkpoint(bare, no_weights, tmp_path / "out7")


def test_cli_convert(reference_dir, tmp_path, capsys):
    output_dir = tmp_path / "cli"
    code = cli_main(
        [
            "convert",
            "lincir",
            "--phi-checkpoint",
            str(reference_dir / "lincir" / "phi.pt"),
            "--clip",
            str(reference_dir / "clip"),
            "--output-dir",
            str(output_dir),
        ]
    )
    assert code == 0 and "Wrote LinCIR" in capsys.readouterr().out
    assert (output_dir / "model.safetensors").is_file() and (output_dir / "README.md").is_file()


def test_remote_code_files_are_the_package_files_and_self_contained(converted):
    output_dir, _ = converted
    package_dir = Path(lincir_package.__file__).parent
    allowed = {"torch", "transformers", "PIL", "numpy", "__future__", "math", "os", "logging", "dataclasses"}
    for name in REMOTE_CODE_FILES:
        source = (package_dir / name).read_text()
        assert (output_dir / name).read_text() == source, f"{name} drifted from the package file"
        for node in ast.parse(source).body:  # module-level imports only; optional ones sit in try/except
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                roots = set() if node.level else {node.module.split(".")[0]}
            else:
                continue
            assert roots <= allowed, f"{name} imports {roots - allowed}"
    config = json.loads((output_dir / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_lincir.LinCIRConfig",
        "AutoModel": "modeling_lincir.LinCIRModel",
    }
    assert json.loads((output_dir / "processor_config.json").read_text())["auto_map"] == {
        "AutoProcessor": "processing_lincir.LinCIRProcessor"
    }


def test_trust_remote_code_in_fresh_process_without_hf_cir(converted, reference_dir, tmp_path):
    output_dir, model = converted
    image = reference_dir / "lincir" / "images" / "p02_pil_palette_wide.png"
    processor = LinCIRProcessor.from_pretrained(output_dir)
    from PIL import Image

    with Image.open(image) as opened:
        inputs = processor(images=opened, text="a sketch of $ next to $")
    with torch.no_grad():
        expected = model.get_composed_features(**inputs).pooler_output
    result = tmp_path / "remote.pt"
    script = textwrap.dedent(
        f"""
        import sys

        class BlockHfCir:
            def find_spec(self, name, path=None, target=None):
                if name == "hf_cir" or name.startswith("hf_cir."):
                    raise ImportError("hf_cir is blocked in this process")

        sys.meta_path.insert(0, BlockHfCir())
        import torch
        from PIL import Image
        from transformers import AutoModel, AutoProcessor

        model = AutoModel.from_pretrained({str(output_dir)!r}, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained({str(output_dir)!r}, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        assert type(processor).__name__ == "LinCIRProcessor"
        inputs = processor(images=Image.open({str(image)!r}), text="a sketch of $ next to $")
        with torch.no_grad():
            out = model.get_composed_features(**inputs).pooler_output
        assert not any(p.requires_grad for p in model.text_model.parameters())
        assert not [m for m in sys.modules if m.startswith("hf_cir")]
        torch.save(out, {str(result)!r})
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    completed = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert torch.equal(torch.load(result, weights_only=True), expected)
