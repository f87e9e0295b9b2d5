"""Training library pieces: data loading from every local format, caption filtering, the resumable index stream,
crash-safe checkpoints, EMA in safetensors, training model cards and pushing to the Hub (up to the network call)."""

import argparse
import json
import os
import shutil
from pathlib import Path

import datasets
import pytest
import torch
from diffusers.training_utils import EMAModel
from huggingface_hub import ModelCard

from hf_cir.hub import write_model_card
from hf_cir.training import (
    IndexStream,
    check_output_dir,
    claim_outputs,
    create_ema,
    filter_captions,
    find_latest_checkpoint,
    list_checkpoints,
    load_ema,
    load_training_dataset,
    push_output_to_hub,
    require_columns,
    resolve_resume_checkpoint,
    save_ema,
    training_arguments,
    training_details_markdown,
)
from hf_cir.training.checkpointing import TRAINING_STATE_NAME

CAPTIONS = ["a red car", "a dog on the grass", "two cats"]


@pytest.mark.parametrize("suffix", ["txt", "csv", "json", "jsonl", "parquet"])
def test_load_training_dataset_reads_every_local_format(tmp_path, suffix):
    path = tmp_path / f"captions.{suffix}"
    if suffix == "txt":
        path.write_text("\n".join(CAPTIONS) + "\n")
    elif suffix == "parquet":
        datasets.Dataset.from_dict({"text": CAPTIONS}).to_parquet(str(path))
    elif suffix == "csv":
        path.write_text("text,id\n" + "\n".join(f"{c},{i}" for i, c in enumerate(CAPTIONS)) + "\n")
    else:
        lines = [json.dumps({"text": c}) for c in CAPTIONS]
        path.write_text("\n".join(lines) + "\n" if suffix == "jsonl" else "\n".join(lines))
    dataset = load_training_dataset(train_files=[str(path)], cache_dir=str(tmp_path / "cache"))
    assert dataset["text"] == CAPTIONS


def test_load_training_dataset_reads_saved_and_file_folders(tmp_path):
    datasets.Dataset.from_dict({"caption": CAPTIONS}).save_to_disk(str(tmp_path / "saved"))
    assert load_training_dataset(str(tmp_path / "saved"))["caption"] == CAPTIONS
    (tmp_path / "files").mkdir()
    datasets.Dataset.from_dict({"caption": CAPTIONS}).to_parquet(str(tmp_path / "files" / "part-0.parquet"))
    assert load_training_dataset(str(tmp_path / "files"), cache_dir=str(tmp_path / "cache"))["caption"] == CAPTIONS


def test_load_training_dataset_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_training_dataset(train_files=[str(tmp_path / "missing.txt")])
    (tmp_path / "a.xml").write_text("<a/>")
    with pytest.raises(ValueError, match="must all be one of"):
        load_training_dataset(train_files=[str(tmp_path / "a.xml")])
    with pytest.raises(ValueError, match="exactly one"):
        load_training_dataset()
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no dataset files"):
        load_training_dataset(str(tmp_path / "empty"))


def test_missing_column_error_lists_the_columns():
    dataset = datasets.Dataset.from_dict({"caption": CAPTIONS, "url": ["u"] * 3})
    with pytest.raises(ValueError, match=r"--text_column 'text'.*\['caption', 'url'\]"):
        require_columns(dataset, {"--text_column": "text"})


def test_filter_captions_skips_and_counts_empty_and_non_string():
    dataset = datasets.Dataset.from_dict({"text": ["a cat", None, "", "   ", "$", "a dog"]})
    kept, skipped = filter_captions(dataset, "text", "$")
    assert kept["text"] == ["a cat", "a dog"] and skipped == 4
    numbers = datasets.Dataset.from_dict({"text": [1, 2]})
    with pytest.raises(ValueError, match="--text_column 'text' holds int64 values; expected text"):
        filter_captions(numbers, "text", "$")
    with pytest.raises(ValueError, match="no usable caption: all 3 rows of --text_column 'text' are empty"):
        filter_captions(datasets.Dataset.from_dict({"text": ["", None, "$"]}), "text", "$")


def test_index_stream_resumes_and_shards():
    stream = IndexStream(7, seed=5)
    drawn = [stream.take(3) for _ in range(6)]
    flat = [i for batch in drawn for i in batch]
    assert sorted(flat[:7]) == list(range(7)) and sorted(flat[7:14]) == list(range(7))
    assert flat[:7] != flat[7:14]  # a fresh permutation per epoch
    resumed = IndexStream(7, seed=5, position=9)
    assert resumed.take(9) == flat[9:18]
    assert IndexStream(7, seed=6).take(7) != flat[:7]


def _fake_checkpoint(root, step, complete=True):
    folder = root / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    if complete:
        (folder / TRAINING_STATE_NAME).write_text(json.dumps({"global_step": step}))
    return folder


def test_latest_checkpoint_ignores_incomplete_and_temporary_folders(tmp_path):
    _fake_checkpoint(tmp_path, 2)
    _fake_checkpoint(tmp_path, 10)
    _fake_checkpoint(tmp_path, 12, complete=False)  # e.g. copied by hand, half done
    (tmp_path / ".checkpoint-14.tmp").mkdir()  # a write in progress when the process died
    (tmp_path / "checkpoint-x").mkdir()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-10"]
    assert find_latest_checkpoint(tmp_path).name == "checkpoint-10"
    assert resolve_resume_checkpoint(tmp_path, "latest").name == "checkpoint-10"
    assert resolve_resume_checkpoint(tmp_path, "checkpoint-2").name == "checkpoint-2"
    assert resolve_resume_checkpoint(tmp_path / "nothing", "latest") is None
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_resume_checkpoint(tmp_path, str(tmp_path / "checkpoint-99"))
    with pytest.raises(ValueError, match="not a complete checkpoint"):
        resolve_resume_checkpoint(tmp_path, str(tmp_path / "checkpoint-12"))


def test_check_output_dir_refuses_to_mix_runs(tmp_path):
    identity = {"script": "train_lincir.py", "data": "a.txt"}
    check_output_dir(tmp_path, identity, None)
    _fake_checkpoint(tmp_path, 4)
    # A checkpoint hf-cir did not record is never taken as a run's (nor deleted by --overwrite_output_dir).
    with pytest.raises(FileExistsError, match="checkpoint-4 was not written by an hf-cir training run"):
        check_output_dir(tmp_path, identity, None, overwrite=True)
    shutil.rmtree(tmp_path / "checkpoint-4")
    claim_outputs(tmp_path, ["checkpoint-4"])  # recorded before it is written, as `save_checkpoint` does
    _fake_checkpoint(tmp_path, 4)
    with pytest.raises(ValueError, match="already holds checkpoints"):
        check_output_dir(tmp_path, identity, None)
    check_output_dir(tmp_path, identity, "latest")  # the same run resumes
    with pytest.raises(ValueError, match=r"another run \(data: checkpoints have 'a.txt', this run has 'b.txt'\)"):
        check_output_dir(tmp_path, {**identity, "data": "b.txt"}, "latest")
    check_output_dir(tmp_path, {**identity, "data": "b.txt"}, None, overwrite=True)
    assert list_checkpoints(tmp_path) == []


def test_ema_round_trips_through_safetensors(tmp_path):
    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    ema = EMAModel(module.parameters(), decay=0.9)
    for _ in range(3):
        with torch.no_grad():
            for p in module.parameters():
                p.add_(1.0)
        ema.step(module.parameters())
    names = [n for n, _ in module.named_parameters()]
    save_ema(ema, names, tmp_path)
    assert not any(f.suffix in (".bin", ".pkl", ".pt") for f in tmp_path.iterdir())
    restored = EMAModel(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)).parameters(), decay=0.9)
    load_ema(restored, names, tmp_path)
    assert restored.optimization_step == ema.optimization_step == 3
    for a, b in zip(restored.shadow_params, ema.shadow_params):
        assert torch.equal(a, b)
    with pytest.raises(FileNotFoundError, match="no EMA weights"):
        load_ema(restored, names, tmp_path / "nowhere")


def test_ema_of_a_diffusers_model_uses_emamodel_save_pretrained(tmp_path):
    from hf_cir import CompoDiffPriorTransformer

    def prior():
        return CompoDiffPriorTransformer(
            embedding_dim=16, num_layers=1, num_attention_heads=2, attention_head_dim=8, text_embed_dim=16, mask_size=4
        )

    module = prior()
    ema = create_ema(module, True, 0.9, "cpu")
    for _ in range(2):
        with torch.no_grad():
            for p in module.parameters():
                p.add_(0.5)
        ema.step(module.parameters())
    names = [n for n, _ in module.named_parameters()]
    save_ema(ema, names, tmp_path, "prior_ema")
    # diffusers' own format: a prior folder that loads as a model, with the EMA's counters in its config.
    assert CompoDiffPriorTransformer.from_pretrained(tmp_path / "prior_ema").config.num_layers == 1
    assert json.loads((tmp_path / "prior_ema" / "config.json").read_text())["optimization_step"] == 2
    restored = create_ema(prior(), True, 0.9, "cpu")
    load_ema(restored, names, tmp_path, "prior_ema")
    assert restored.optimization_step == 2 and restored.decay == 0.9
    assert all(torch.equal(a, b) for a, b in zip(restored.shadow_params, ema.shadow_params))
    with pytest.raises(FileNotFoundError, match="no EMA weights"):
        load_ema(restored, names, tmp_path, "elsewhere")


def test_training_card_lists_arguments_without_secrets(tmp_path):
    args = argparse.Namespace(learning_rate=3e-4, train_batch_size=8, hub_token="hf_secret", output_dir=tmp_path)
    assert "hub_token" not in training_arguments(args)
    details = training_details_markdown(
        "train_lincir.py", args, data={"captions": 3}, results={"final_train_loss": 0.1}
    )
    card = ModelCard(f"---\nlicense: apache-2.0\n---\n# A run\n\n## Training\n\n{details}\n")
    write_model_card(card, tmp_path)
    text = (tmp_path / "README.md").read_text()
    assert "| `learning_rate` | `0.0003` |" in text and "| `train_batch_size` | `8` |" in text
    assert "hf_secret" not in text and "| captions | `3` |" in text
    assert ModelCard.load(tmp_path / "README.md").data.license == "apache-2.0"


def test_push_to_hub_uploads_the_model_without_training_state(tmp_path, monkeypatch):
    import huggingface_hub

    (tmp_path / "README.md").write_text("---\nlicense: mit\n---\n")
    _fake_checkpoint(tmp_path, 2)
    calls = {}

    class RepoUrl:
        repo_id = "me/model"

    monkeypatch.setattr(
        huggingface_hub, "create_repo", lambda repo_id, **kw: calls.setdefault("create", (repo_id, kw)) and RepoUrl()
    )
    monkeypatch.setattr(huggingface_hub, "upload_folder", lambda **kw: calls.setdefault("upload", kw))
    push_output_to_hub(tmp_path, "me/model", token="t", private=True)
    assert calls["create"] == ("me/model", {"exist_ok": True, "token": "t", "private": True})
    upload = calls["upload"]
    assert upload["repo_id"] == "me/model" and upload["folder_path"] == str(tmp_path)
    assert "checkpoint-*" in upload["ignore_patterns"] and "training_run.json" in upload["ignore_patterns"]
    os.remove(tmp_path / "README.md")
    with pytest.raises(FileNotFoundError, match="README.md"):
        push_output_to_hub(tmp_path, "me/model")


def test_benchmark_validation_evaluates_the_model_being_trained(tiny_clip_dir):
    import hf_cir.toy  # noqa: F401  (registers the toy benchmark, as train_lincir.py does)
    from hf_cir import LinCIRModel, LinCIRProcessor
    from hf_cir.training.validation import benchmark_validation

    model = LinCIRModel.from_clip(tiny_clip_dir)
    processor = LinCIRProcessor.from_pretrained(tiny_clip_dir)
    validate = benchmark_validation("toy", num_queries=4)
    metrics = validate(model, processor, 10)
    assert {"recall@1", "recall@10"} <= set(metrics) and all(0.0 <= v <= 100.0 for v in metrics.values())
    with pytest.raises(ValueError, match="Unknown benchmark"):
        benchmark_validation("nope")


def test_dataset_fingerprint_is_still_where_datasets_keeps_it():
    # The one private attribute of `datasets` hf-cir reads: fail loudly here when a release moves it.
    from hf_cir.training.data import dataset_fingerprint

    dataset = datasets.Dataset.from_dict({"text": ["a red cube", "a blue ball"]})
    mapped = dataset.map(lambda row: {"text": row["text"].upper()})
    assert isinstance(dataset_fingerprint(dataset), str) and dataset_fingerprint(dataset)
    assert dataset_fingerprint(mapped) != dataset_fingerprint(dataset)


PREVIOUS_LAYOUT = Path(__file__).resolve().parents[1] / "fixtures" / "previous_layout"


def test_checkpoint_ema_of_an_earlier_version_still_resumes(tmp_path):
    # `ema_prior.safetensors` was written by hf-cir cb68ad2's `save_ema` (make_previous_ema.py beside it); checkpoints
    # of that version hold it where the current one writes a `prior_ema` save_pretrained folder.
    from accelerate import Accelerator
    from safetensors.torch import load_file

    from hf_cir import CompoDiffPriorTransformer
    from hf_cir.training import register_checkpoint_hooks

    legacy = PREVIOUS_LAYOUT / "ema_checkpoint" / "ema_prior.safetensors"
    expected = load_file(str(legacy))
    accelerator = Accelerator(cpu=True)
    prior = accelerator.prepare(CompoDiffPriorTransformer.from_pretrained(PREVIOUS_LAYOUT / "compodiff" / "prior"))
    ema = create_ema(prior, True, 0.999, "cpu")
    register_checkpoint_hooks(
        accelerator,
        "prior.safetensors",
        ema=ema,
        ema_weights_name="prior_ema",
        legacy_ema_weights_names=("ema_prior.safetensors",),
    )
    accelerator.save_state(str(tmp_path))
    shutil.rmtree(tmp_path / "prior_ema")
    shutil.copyfile(legacy, tmp_path / "ema_prior.safetensors")  # the checkpoint as the earlier version wrote it
    accelerator.load_state(str(tmp_path))
    names = [name for name, _ in prior.named_parameters()]
    assert ema.optimization_step == 7
    assert all(torch.equal(shadow, expected[name]) for shadow, name in zip(ema.shadow_params, names))
    assert not torch.equal(ema.shadow_params[0], next(prior.parameters()).detach())  # the file's, not the model's
    with pytest.raises(FileNotFoundError, match="no EMA weights"):
        load_ema(ema, names, tmp_path, "prior_ema")  # without the legacy name the old file is not guessed
    with pytest.raises(ValueError, match="tracks no diffusers model"):
        accelerator.save_state(str(tmp_path / "again"))
        load_ema(EMAModel(prior.parameters()), names, tmp_path / "again", "prior_ema")


def test_a_checkpoint_removes_temporary_folders_left_by_a_killed_run(tmp_path):
    from accelerate import Accelerator

    from hf_cir.training.checkpointing import save_checkpoint

    accelerator = Accelerator(cpu=True)
    accelerator.prepare(torch.nn.Linear(2, 2))
    claim_outputs(tmp_path, [".checkpoint-4.tmp", ".checkpoint-9.tmp"])  # recorded by the killed run first
    for name in (".checkpoint-4.tmp", ".checkpoint-7.tmp", ".checkpoint-9.tmp", ".checkpoint-x.tmp"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(b"half written")
    (tmp_path / "notes.txt").write_text("mine")
    save_checkpoint(accelerator, tmp_path, 6, {"epoch": 0})
    assert (tmp_path / "checkpoint-6" / TRAINING_STATE_NAME).is_file()
    left = sorted(path.name for path in tmp_path.iterdir())
    # Only the temporaries hf-cir recorded go; an unrecorded one stays, whatever its name.
    assert left == [".checkpoint-7.tmp", ".checkpoint-x.tmp", "checkpoint-6", "notes.txt", "training_run.json"]
    assert json.loads((tmp_path / "training_run.json").read_text())["written"] == ["checkpoint-6", "training_run.json"]
