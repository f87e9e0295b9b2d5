"""training/train_lincir.py on the tiny fixture CLIP: it learns, its output loads, its card records the run, a
SIGKILLed run resumes bit-identically, a 2-process run matches a 1-process run, and bad input fails clearly."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import ModelCard

from hf_cir import LinCIRModel, LinCIRProcessor

from .helpers import (
    ROOT,
    card_arguments,
    card_command,
    load_script,
    run_arguments,
    run_in_process,
    run_subprocess,
    run_two_processes,
    weights,
)

SCRIPT = load_script("train_lincir")
COLORS = "red blue green yellow black white".split()
OBJECTS = "car dog cat boat house chair".split()
PLACES = ["on the grass", "in a room", "near the sea", "on a road"]


@pytest.fixture(scope="module")
def captions_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "captions.jsonl"
    rows = [{"text": f"A {c} {o} {p}."} for c, o, p in zip(COLORS * 4, OBJECTS[1:] + OBJECTS * 3, PLACES * 6)]
    rows[3:3] = [{"text": None}, {"text": ""}, {"text": "   "}, {"text": "$"}]  # skipped and counted
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def base_args(clip_dir, data, output_dir, *extra):
    return [
        "--clip_model_name_or_path", clip_dir, "--train_file", data, "--output_dir", output_dir,
        "--keyword_extractor", "builtin", "--train_batch_size", 4, "--gradient_accumulation_steps", 2,
        "--max_train_steps", 6, "--checkpointing_steps", 2, "--learning_rate", 5e-3, "--lr_warmup_steps", 1,
        "--lr_scheduler", "cosine", "--max_grad_norm", 1.0, "--use_ema", "--ema_decay", 0.9, "--seed", 7, *extra,
    ]  # fmt: skip


@pytest.fixture
def progress_bars_restored():
    """`--no-progress` turns the libraries' bars off in this process: turn them on again for the next tests."""
    yield
    import datasets
    import huggingface_hub
    import transformers
    from diffusers.utils import logging as diffusers_logging

    transformers.utils.logging.enable_progress_bar()
    diffusers_logging.enable_progress_bar()
    datasets.enable_progress_bars()
    huggingface_hub.utils.enable_progress_bars()


@pytest.fixture(scope="module")
def finished_run(tiny_clip_dir, captions_file, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("lincir") / "run"
    run_in_process(SCRIPT, base_args(tiny_clip_dir, captions_file, output_dir))
    return output_dir


def test_training_learns_and_writes_a_loadable_documented_model(finished_run, tiny_clip_dir, captions_file):
    history = [h for h in json.loads((finished_run / "training_log.json").read_text()) if "train/loss" in h]
    losses = [h["train/loss"] for h in history]
    assert [h["step"] for h in history] == list(range(1, 7))
    assert sum(losses[-2:]) / 2 < 0.6 * losses[0], losses

    model = LinCIRModel.from_pretrained(finished_run)
    processor = LinCIRProcessor.from_pretrained(finished_run)
    assert model.config.placeholder_token_id == processor.placeholder_token_id == 259
    inputs = processor(text=["$ on the grass"], return_tensors="pt")
    with torch.no_grad():
        query = model.get_composed_features(
            inputs["input_ids"], image_embeds=torch.randn(1, model.config.projection_dim)
        ).pooler_output
    assert query.shape == (1, model.config.projection_dim) and torch.isfinite(query).all()
    # The output holds the EMA weights of phi, which differ from the last checkpoint's raw weights.
    saved_phi = weights(finished_run / "model.safetensors", "phi.")
    assert saved_phi and all(v.dtype == torch.float32 for v in saved_phi.values())
    assert not list(finished_run.glob("*.bin")) and not list(finished_run.glob("*.pkl"))

    card = (finished_run / "README.md").read_text()
    for row in ("| `learning_rate` | `0.005` |", '| `keyword_extractor` | `"builtin"` |', "| `seed` | `7` |"):
        assert row in card
    assert "| skipped_captions | `4` |" in card and f"| num_captions | `{len(COLORS) * 4 - 1}` |" in card
    # A phi trained here is not the released weights: no CC BY-NC. The fixture CLIP's folder declares no license
    # and the run named none, so the card states none.
    metadata = yaml.safe_load(card.split("---\n")[1])
    assert "license" not in metadata and "cc-by-nc" not in card and "**License:** not stated" in card
    assert metadata["pipeline_tag"] == "image-feature-extraction" and metadata["model_name"] == "LinCIR"
    assert ModelCard.load(finished_run / "README.md").data.to_dict() == metadata
    # The equivalent command reads back as the run's arguments (local paths as the card shows them); no local
    # absolute path anywhere in the card.
    assert card_arguments(SCRIPT, card) == run_arguments(SCRIPT, base_args(tiny_clip_dir, captions_file, finished_run))
    assert str(finished_run.parent) not in card and str(tiny_clip_dir) not in card and str(ROOT) not in card
    assert [p.name for p in sorted(finished_run.glob("checkpoint-*"))] == ["checkpoint-2", "checkpoint-4"]


def test_card_command_reruns_the_training_and_the_step_bar_shows(
    tiny_clip_dir, captions_file, tmp_path, monkeypatch, capfd
):
    """Run from a working directory with relative paths, then run the card's command, as written, from another
    directory with the same inputs: the same arguments and bit-identical weights. The run shows a tqdm step bar."""

    def workdir(name):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "clip").symlink_to(tiny_clip_dir, target_is_directory=True)
        (folder / "training").symlink_to(ROOT / "training", target_is_directory=True)
        shutil.copy(captions_file, folder / "captions.jsonl")
        return folder

    argv = [
        "--clip_model_name_or_path", "clip", "--train_file", "captions.jsonl", "--output_dir", "run",
        "--keyword_extractor", "builtin", "--train_batch_size", "4", "--max_train_steps", "2", "--seed", "5",
        "--learning_rate", "5e-3", "--use_ema", "--ema_decay", "0.9", "--checkpointing_steps", "100", "--cpu",
        "--license", "mit",
    ]  # fmt: skip
    first = workdir("first")
    monkeypatch.chdir(first)
    run_in_process(SCRIPT, argv)
    bar = capfd.readouterr().err
    assert "Steps: 100%" in bar and "2/2" in bar and "loss=" in bar
    card = (first / "run" / "README.md").read_text()
    assert yaml.safe_load(card.split("---\n")[1])["license"] == "mit"
    words = card_command(card)
    assert words[:3] == ["accelerate", "launch", "training/train_lincir.py"]
    hidden = ("hub_token", "resume_from_checkpoint")
    parsed, original = vars(SCRIPT.parse_args(words[3:])), vars(SCRIPT.parse_args(argv))
    assert {k: v for k, v in parsed.items() if k not in hidden} == {
        k: v for k, v in original.items() if k not in hidden
    }

    second = workdir("second")
    block = card.split("```bash\n", 1)[1].split("\n```", 1)[0]
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "HF_HUB_OFFLINE": "1",
    }
    rerun = subprocess.run(["bash", "-c", block], cwd=second, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    again, reference = weights(second / "run" / "model.safetensors"), weights(first / "run" / "model.safetensors")
    assert again.keys() == reference.keys() and all(torch.equal(again[k], reference[k]) for k in reference)
    assert (second / "run" / "README.md").read_text() == card


def test_sigkilled_run_resumes_bit_identically(finished_run, tiny_clip_dir, captions_file, tmp_path):
    output_dir = tmp_path / "killed"
    killed = run_subprocess("train_lincir", base_args(tiny_clip_dir, captions_file, output_dir), kill_at="step:3")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert [p.name for p in output_dir.glob("checkpoint-*")] == ["checkpoint-2"]
    assert not (output_dir / "model.safetensors").exists()

    run_in_process(SCRIPT, base_args(tiny_clip_dir, captions_file, output_dir, "--resume_from_checkpoint", "latest"))
    resumed, reference = weights(output_dir / "model.safetensors"), weights(finished_run / "model.safetensors")
    assert resumed.keys() == reference.keys()
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)
    for name in ("phi.safetensors", "ema_phi.safetensors"):
        assert weights(output_dir / "checkpoint-4" / name).keys()
        assert all(
            torch.equal(a, b)
            for a, b in zip(
                weights(output_dir / "checkpoint-4" / name).values(),
                weights(finished_run / "checkpoint-4" / name).values(),
            )
        )
    log = json.loads((output_dir / "training_log.json").read_text())
    assert log == json.loads((finished_run / "training_log.json").read_text())


def test_two_process_run_matches_one_process_run(tiny_clip_dir, captions_file, tmp_path):
    common = [
        "--clip_model_name_or_path", tiny_clip_dir, "--train_file", captions_file, "--keyword_extractor", "builtin",
        "--max_train_steps", 3, "--learning_rate", 5e-3, "--seed", 3, "--use_ema", "--ema_decay", 0.5,
        "--noise_std", 0.0, "--phi_dropout", 0.0,
        # Adam divides by sqrt(v) + eps: with the default eps, a gradient entry near 0 turns a 1e-12 difference of
        # the all-reduce's summation order into an lr-sized step. A larger eps keeps the comparison about the run.
        "--adam_epsilon", 1e-4,
    ]  # fmt: skip
    run_in_process(SCRIPT, [*common, "--train_batch_size", 4, "--output_dir", tmp_path / "one", "--cpu"])
    run_two_processes("train_lincir", [*common, "--train_batch_size", 2, "--output_dir", tmp_path / "two"])
    one, two = (
        weights(tmp_path / "one" / "model.safetensors", "phi."),
        weights(tmp_path / "two" / "model.safetensors", "phi."),
    )
    assert one.keys() == two.keys()
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=0, atol=1e-5)  # steps move them by ~1e-2
    losses = [
        [h["train/loss"] for h in json.loads((tmp_path / run / "training_log.json").read_text())]
        for run in ("one", "two")
    ]
    torch.testing.assert_close(torch.tensor(losses[1]), torch.tensor(losses[0]), rtol=1e-5, atol=1e-7)


def test_bad_input_fails_clearly(finished_run, tiny_clip_dir, captions_file, tmp_path):
    csv = tmp_path / "captions.csv"
    csv.write_text("caption,url\na red car,u\na dog,v\n")
    with pytest.raises(ValueError, match=r"--text_column 'text' is not a column.*\['caption', 'url'\]"):
        run_in_process(SCRIPT, base_args(tiny_clip_dir, csv, tmp_path / "a"))
    with pytest.raises(ValueError, match=r"2 usable captions \(0 skipped\), fewer than one batch"):
        run_in_process(SCRIPT, base_args(tiny_clip_dir, csv, tmp_path / "b", "--text_column", "caption"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run_in_process(
            SCRIPT,
            base_args(tiny_clip_dir, captions_file, tmp_path / "c", "--resume_from_checkpoint", tmp_path / "nope"),
        )
    with pytest.raises(ValueError, match="already holds checkpoints"):
        run_in_process(SCRIPT, base_args(tiny_clip_dir, captions_file, finished_run))
    with pytest.raises(ValueError, match="holds checkpoints of another run"):
        run_in_process(
            SCRIPT,
            base_args(
                tiny_clip_dir, csv, finished_run, "--text_column", "caption", "--resume_from_checkpoint", "latest"
            ),
        )
    with pytest.raises(SystemExit):
        SCRIPT.parse_args(["--clip_model_name_or_path", "x", "--output_dir", "o"])  # no data
    with pytest.raises(SystemExit):
        SCRIPT.parse_args([str(a) for a in base_args("x", "d", "o", "--train_batch_size", 0)])
    with pytest.raises(ValueError, match="--validation_fn"):
        run_in_process(SCRIPT, base_args(tiny_clip_dir, captions_file, tmp_path / "d", "--validation_fn", "nothing"))


VALIDATION_FILE = """
import torch

def score_peaking_at_step_4(model, processor, step):
    assert not model.training and not torch.is_grad_enabled()
    return {"score": -abs(step - 4), "step_seen": step}
"""


def test_validation_hook_keeps_the_best_and_the_output_is_pushed(
    tiny_clip_dir, captions_file, tmp_path, monkeypatch, capfd, progress_bars_restored
):
    import huggingface_hub

    pushed = {}

    class RepoUrl:
        repo_id = "me/lincir-test"

    monkeypatch.setattr(
        huggingface_hub, "create_repo", lambda repo_id, **kw: pushed.setdefault("repo", repo_id) and RepoUrl()
    )
    monkeypatch.setattr(huggingface_hub, "upload_folder", lambda **kw: pushed.setdefault("upload", kw))
    output_dir = tmp_path / "validated"
    (tmp_path / "validation.py").write_text(VALIDATION_FILE)
    validation_fn = f"{tmp_path / 'validation.py'}:score_peaking_at_step_4"
    args = base_args(tiny_clip_dir, captions_file, output_dir, "--validation_fn", validation_fn)
    run_in_process(
        SCRIPT,
        [
            *args,
            "--validation_steps",
            2,
            "--checkpointing_steps",
            100,
            "--push_to_hub",
            "--hub_model_id",
            "me/lincir-test",
            "--hub_token",
            "hf_x",
            "--no-progress",
        ],
    )
    # --no-progress: no bar at all, neither the step bar nor transformers' shard-writing or loading bars.
    assert "%|" not in capfd.readouterr().err
    log = json.loads((output_dir / "training_log.json").read_text())
    assert [h["validation/score"] for h in log if "validation/score" in h] == [-2.0, 0.0, -2.0]
    best = json.loads((output_dir / "best" / "validation.json").read_text())
    assert best["step"] == 4 and best["score"] == 0.0
    assert LinCIRModel.from_pretrained(output_dir / "best").config.placeholder_token_id == 259
    card = (output_dir / "README.md").read_text()
    assert "best_score" in card and "me/lincir-test" in card and "hf_x" not in card
    assert pushed["repo"] == "me/lincir-test" and pushed["upload"]["folder_path"] == str(output_dir)
    assert pushed["upload"]["token"] == "hf_x" and "best/*" in pushed["upload"]["ignore_patterns"]
