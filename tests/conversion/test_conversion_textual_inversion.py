"""`hf-cir convert searle` / `hf-cir convert pic2word`: released formats in, safetensors LinCIR-family folders out that
load with `AutoModel` after `import hf_cir.models` (and with remote code alone), reproduce the references, and carry each
method's card (citation, license)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file
from transformers import AutoModel, AutoProcessor

import hf_cir.models  # noqa: F401  (registers the LinCIR family with the Auto classes)
from hf_cir import LinCIRModel
from hf_cir.cli import main as cli_main
from hf_cir.conversion.pic2word import convert_pic2word_checkpoint
from hf_cir.conversion.searle import convert_searle_checkpoint

TOLERANCE = 1e-5
CHECKPOINTS = {"searle": ("--phi-checkpoint", "SEARLE_tiny.pt"), "pic2word": ("--checkpoint", "pic2word_tiny.pt")}


def fixture_dir(reference_dir, method):
    return reference_dir / "textual_inversion" / method


@pytest.fixture(scope="module")
def converted(reference_dir, tmp_path_factory):
    """Both fixture checkpoints converted with the CLI, as a user would."""
    root = tmp_path_factory.mktemp("converted")
    folders = {}
    for method, (flag, name) in CHECKPOINTS.items():
        folders[method] = root / method
        code = cli_main(
            [
                "convert",
                method,
                flag,
                str(fixture_dir(reference_dir, method) / name),
                "--clip",
                str(reference_dir / "clip"),
                "--output-dir",
                str(folders[method]),
            ]
        )
        assert code == 0
    return folders


@pytest.mark.parametrize("method", sorted(CHECKPOINTS))
def test_help_has_examples(capsys, method):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["convert", method, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    flag, _ = CHECKPOINTS[method]
    assert "examples:" in out and f"hf-cir convert {method} {flag}" in out and "--clip openai/clip-vit" in out


@pytest.mark.parametrize("method", sorted(CHECKPOINTS))
def test_converted_folder_loads_with_auto_classes_and_matches_reference(converted, reference_dir, method):
    folder = converted[method]
    assert (
        (folder / "model.safetensors").is_file() and not list(folder.glob("*.bin")) and not list(folder.glob("*.pt"))
    )
    model = AutoModel.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder)
    assert type(model) is LinCIRModel and model.config.method_name == method
    assert processor.placeholder_token == model.config.placeholder_token
    assert processor.prompt_template == model.config.prompt_template
    document = json.loads((fixture_dir(reference_dir, method) / "cases.json").read_text())
    tensors = load_file(fixture_dir(reference_dir, method) / "expected.safetensors")
    for case in document["cases"]:
        inputs = processor(text=case["texts"], compose=True)
        image = {key: tensors[value] for key, value in case["inputs"].items()}
        with torch.no_grad():
            out = model.get_composed_features(inputs["input_ids"], return_dict=True, **image).pooler_output
        assert (out - tensors[case["expected"]["composed_embeds"]]).abs().max() <= TOLERANCE, case["name"]


@pytest.mark.parametrize(
    ("method", "license", "citation", "title"),
    [
        ("searle", "cc-by-nc-4.0", "@inproceedings{baldrati2023zero", "SEARLE"),
        ("pic2word", "apache-2.0", "@article{saito2023pic2word", "Pic2Word"),
    ],
)
def test_converted_model_card(converted, method, license, citation, title):
    card = ModelCard.load(converted[method] / "README.md")
    assert card.data.license == license and card.data.model_name == title
    assert method in card.data.tags and "composed-image-retrieval" in card.data.tags
    assert citation in card.text and "gu2024lincir" not in card.text
    assert f"# {title}" in card.text and "Source:** converted with hf-cir" in card.text
    placeholder = "$" if method == "searle" else "*"
    assert f"replaces the first `{placeholder}`" in card.text
    assert str(converted[method].parent) not in card.content  # no local absolute paths


def test_pic2word_training_checkpoint_and_bare_state_dict(reference_dir, tmp_path):
    """The full layout `src/main.py` saves (CLIP weights, optimizer state) and a bare IM2TEXT state dict both load
    with `weights_only=True`; only the IM2TEXT weights are used."""
    released = torch.load(fixture_dir(reference_dir, "pic2word") / "pic2word_tiny.pt", weights_only=True)
    img2text = released["state_dict_img2text"]
    full = {
        **released,
        "state_dict": {"module.token_embedding.weight": torch.zeros(4, 2), "module.logit_scale": torch.tensor(4.6)},
        "optimizer": {
            "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(2)}},
            "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.98), "params": [0]}],
        },
    }
    torch.save(full, tmp_path / "epoch_30.pt")
    torch.save({key.removeprefix("module."): value for key, value in img2text.items()}, tmp_path / "bare.pt")
    outputs = []
    for name in ("epoch_30.pt", "bare.pt"):
        model = convert_pic2word_checkpoint(tmp_path / name, reference_dir / "clip", tmp_path / f"out-{name}")
        outputs.append({key: value.clone() for key, value in model.phi.state_dict().items()})
        assert model.config.phi_hidden_size == 96 and model.config.phi_num_hidden_layers == 2
    for key, value in img2text.items():
        name = key.removeprefix("module.")
        assert torch.equal(outputs[0][name], value) and torch.equal(outputs[1][name], value)


def test_bad_checkpoints(reference_dir, tmp_path):
    clip = reference_dir / "clip"
    searle = torch.load(fixture_dir(reference_dir, "searle") / "SEARLE_tiny.pt", weights_only=True)["Phi"]
    pic2word = fixture_dir(reference_dir, "pic2word") / "pic2word_tiny.pt"

    wrong = {**searle, "layers.0.weight": torch.zeros(256, 768)}  # trained on a 768-d CLIP
    torch.save({"Phi": wrong}, tmp_path / "wrong.pt")
    with pytest.raises(ValueError, match=r"\(256, 768\).*\(256, 64\)"):
        convert_searle_checkpoint(tmp_path / "wrong.pt", clip, tmp_path / "o1")
    with pytest.raises(ValueError, match="not a phi state dict.*'Phi'"):
        convert_searle_checkpoint(pic2word, clip, tmp_path / "o2")  # a Pic2Word file given as SEARLE
    with pytest.raises(ValueError, match="not a Pic2Word IM2TEXT state dict.*'state_dict_img2text'"):
        convert_pic2word_checkpoint(
            fixture_dir(reference_dir, "searle") / "SEARLE_tiny.pt", clip, tmp_path / "o3"
        )  # a SEARLE file given as Pic2Word
    released = torch.load(pic2word, weights_only=True)
    no_head = {k: v for k, v in released["state_dict_img2text"].items() if "fc_out" not in k}
    torch.save({"state_dict_img2text": no_head}, tmp_path / "no_head.pt")
    with pytest.raises(ValueError, match=r"missing keys \['fc_out.bias', 'fc_out.weight'\]"):
        convert_pic2word_checkpoint(tmp_path / "no_head.pt", clip, tmp_path / "o4")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="weights_only"):
        convert_pic2word_checkpoint(garbage, clip, tmp_path / "o5")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        convert_searle_checkpoint(tmp_path / "missing.pt", clip, tmp_path / "o6")
    assert not any(path.name.startswith("o") for path in tmp_path.iterdir())


def test_cli_reports_bad_input_in_one_line(capsys, reference_dir, tmp_path):
    code = cli_main(
        [
            "convert",
            "pic2word",
            "--checkpoint",
            str(tmp_path / "nope.pt"),
            "--clip",
            str(reference_dir / "clip"),
            "--output-dir",
            str(tmp_path / "out"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "nope.pt" in err and "Traceback" not in err


def test_pic2word_remote_code_in_fresh_process_without_hf_cir(converted, reference_dir, tmp_path):
    """The remote-code copies of the modeling files hold the whole family (IM2TEXT, first-placeholder replacement)."""
    folder = converted["pic2word"]
    document = json.loads((fixture_dir(reference_dir, "pic2word") / "cases.json").read_text())
    case = next(case for case in document["cases"] if case["name"] == "e06_two_placeholders")
    tensors = fixture_dir(reference_dir, "pic2word") / "expected.safetensors"
    script = textwrap.dedent(
        f"""
        import sys

        class BlockHfCir:
            def find_spec(self, name, path=None, target=None):
                if name == "hf_cir" or name.startswith("hf_cir."):
                    raise ImportError("hf_cir is blocked in this process")

        sys.meta_path.insert(0, BlockHfCir())
        import torch
        from safetensors.torch import load_file
        from transformers import AutoModel, AutoProcessor

        model = AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained({str(folder)!r}, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        tensors = load_file({str(tensors)!r})
        ids = processor(text={case["texts"]!r}, compose=True)["input_ids"]
        with torch.no_grad():
            out = model.get_composed_features(ids, image_embeds=tensors[{case["inputs"]["image_embeds"]!r}],
                                              return_dict=True).pooler_output
        diff = (out - tensors[{case["expected"]["composed_embeds"]!r}]).abs().max().item()
        assert diff <= 1e-5, diff
        assert not [m for m in sys.modules if m.startswith("hf_cir")]
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    completed = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
