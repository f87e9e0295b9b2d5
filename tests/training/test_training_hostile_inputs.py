"""Hostile input for the training scripts: each case ends with one line naming the problem and exit status 2 (no
traceback), files the user owns are never replaced or deleted, and a damaged or killed run resumes from an intact
checkpoint and ends where a clean run ends."""

import json
import re
import shutil
import signal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from hf_cir.training import verify_checkpoint
from hf_cir.training.data import check_data_file

from .helpers import load_script, run_cli, run_subprocess, weights

LINCIR = load_script("train_lincir")
COMPODIFF = load_script("train_compodiff")
CAPTIONS = [f"a {color} {thing} on the grass" for color in ("red", "blue", "green") for thing in ("car", "dog")]


def lincir_args(clip_dir, data, output_dir, *extra):
    return [
        "--clip_model_name_or_path", clip_dir, "--train_file", data, "--output_dir", output_dir,
        "--keyword_extractor", "builtin", "--train_batch_size", 2, "--max_train_steps", 3, "--checkpointing_steps", 1,
        "--learning_rate", 5e-3, "--seed", 11, "--no-progress", *extra,
    ]  # fmt: skip


def one_error_line(capsys, prog: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(f"{prog}: error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def captions(tmp_path):
    path = tmp_path / "captions.txt"
    path.write_text("\n".join(CAPTIONS) + "\n")
    return path


@pytest.fixture(scope="module")
def clean_run(tiny_clip_dir, tmp_path_factory):
    """A 3-step LinCIR run with a checkpoint after every step."""
    root = tmp_path_factory.mktemp("clean")
    data = root / "captions.txt"
    data.write_text("\n".join(CAPTIONS) + "\n")
    assert run_cli(LINCIR, lincir_args(tiny_clip_dir, data, root / "run"), "train_lincir.py") == 0
    return root / "run", data


def _bytes(path):
    return path.read_bytes()


BAD_CAPTION_FILES = {
    # name: (file name, content, what the one line says)
    "binary junk": ("captions.txt", bytes(range(256)) * 8, r"captions.txt holds a NUL byte at offset 0: binary data"),
    "latin-1 text": ("captions.txt", "un café au lait\n".encode("latin-1"), r"captions.txt is not UTF-8 text"),
    "only empty lines": ("captions.txt", b"\n\n  \n\n", r"no usable caption: all \d+ rows .* are empty or not text"),
    "zero bytes": ("captions.txt", b"", r"captions.txt is empty"),
    "broken json": ("captions.jsonl", b'{"text": "a red car"}\n{"text": \n', r"captions.jsonl cannot be read as"),
    "not parquet": ("captions.parquet", b"PAR0" + bytes(100), r"captions.parquet is not a parquet file"),
    "numbers, no text": ("captions.jsonl", b'{"text": 1}\n{"text": 2}\n', r"--text_column 'text' holds int64 values"),
    "missing column": ("captions.csv", b"caption,url\na red car,u\n", r"--text_column 'text' is not a column"),
    "list column": ("captions.jsonl", b'{"text": ["a", "b"]}\n', r"--text_column 'text' holds List values"),
}


@pytest.mark.parametrize("case", sorted(BAD_CAPTION_FILES))
def test_bad_captions_are_one_line(case, tiny_clip_dir, tmp_path, capsys):
    name, content, expected = BAD_CAPTION_FILES[case]
    data = tmp_path / name
    data.write_bytes(content)
    assert run_cli(LINCIR, lincir_args(tiny_clip_dir, data, tmp_path / "out"), "train_lincir.py") == 2
    line = one_error_line(capsys, "train_lincir.py")
    assert re.search(expected, line), line
    assert not list((tmp_path / "out").glob("checkpoint-*")) and not (tmp_path / "out" / "README.md").exists()


def test_missing_dataset_folder_is_one_line(tiny_clip_dir, tmp_path, capsys):
    argv = lincir_args(tiny_clip_dir, "x", tmp_path / "out")
    argv[argv.index("--train_file") : argv.index("--train_file") + 2] = ["--dataset_name", "./no/such/folder"]
    assert run_cli(LINCIR, argv, "train_lincir.py") == 2
    assert "--dataset_name ./no/such/folder does not exist" in one_error_line(capsys, "train_lincir.py")


def test_binary_captions_from_the_command_line_is_one_line_exit_2(tiny_clip_dir, tmp_path):
    data = tmp_path / "captions.txt"
    data.write_bytes(bytes(range(256)) * 8)
    result = run_subprocess("train_lincir", lincir_args(tiny_clip_dir, data, tmp_path / "out"))
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"train_lincir.py: error: --train_file {data} holds")


@pytest.mark.parametrize("overwrite", [False, True])
def test_user_files_in_the_output_folder_are_never_replaced(overwrite, tiny_clip_dir, captions, tmp_path, capsys):
    output_dir = tmp_path / "out"
    (output_dir / "checkpoint-1").mkdir(parents=True)
    (output_dir / "README.md").write_text("my notes")
    (output_dir / "checkpoint-1" / "mine.txt").write_text("my work")
    extra = ["--overwrite_output_dir"] if overwrite else []
    assert run_cli(LINCIR, lincir_args(tiny_clip_dir, captions, output_dir, *extra), "train_lincir.py") == 2
    assert f"{output_dir / 'README.md'} was not written by an hf-cir training run" in one_error_line(
        capsys, "train_lincir.py"
    )
    (output_dir / "README.md").unlink()  # the folder alone is refused as well
    assert run_cli(LINCIR, lincir_args(tiny_clip_dir, captions, output_dir, *extra), "train_lincir.py") == 2
    assert f"{output_dir / 'checkpoint-1'} was not written" in one_error_line(capsys, "train_lincir.py")
    assert (output_dir / "checkpoint-1" / "mine.txt").read_text() == "my work"
    assert sorted(p.name for p in output_dir.iterdir()) == ["checkpoint-1"]


def test_unrelated_user_files_stay_and_pruning_deletes_only_our_checkpoints(tiny_clip_dir, captions, tmp_path):
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    (output_dir / "notes.txt").write_text("my notes")
    argv = lincir_args(tiny_clip_dir, captions, output_dir, "--checkpoints_total_limit", 1)
    assert run_cli(LINCIR, argv, "train_lincir.py") == 0
    assert (output_dir / "notes.txt").read_text() == "my notes"
    assert [p.name for p in output_dir.glob("checkpoint-*")] == ["checkpoint-2"]
    written = json.loads((output_dir / "training_run.json").read_text())["written"]
    assert "notes.txt" not in written and {"README.md", "model.safetensors", "checkpoint-2"} <= set(written)
    assert "checkpoint-1" not in written
    # Our own outputs are replaced by the next run over the same folder.
    assert run_cli(LINCIR, [*argv, "--overwrite_output_dir"], "train_lincir.py") == 0
    assert (output_dir / "notes.txt").read_text() == "my notes"


def test_output_dir_that_is_a_file_is_one_line(tiny_clip_dir, captions, tmp_path, capsys):
    (tmp_path / "out").write_text("a file")
    assert run_cli(LINCIR, lincir_args(tiny_clip_dir, captions, tmp_path / "out"), "train_lincir.py") == 2
    assert "is a file, not a folder" in one_error_line(capsys, "train_lincir.py")
    assert (tmp_path / "out").read_text() == "a file"


DAMAGES = {
    "truncated weights": ("phi.safetensors", lambda p: p.write_bytes(p.read_bytes()[:100])),
    "lying header": ("phi.safetensors", lambda p: p.write_bytes(b"\xff" * 8 + p.read_bytes()[8:])),
    "empty optimizer": ("optimizer.bin", lambda p: p.write_bytes(b"")),
    "flipped optimizer byte": ("optimizer.bin", lambda p: p.write_bytes(_flip(p.read_bytes()))),
    "truncated random states": ("random_states_0.pkl", lambda p: p.write_bytes(p.read_bytes()[:50])),
    "broken training state": ("training_state.json", lambda p: p.write_text('{"global_step": ')),
}


def _flip(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_checkpoint_is_named(damage, clean_run, tmp_path):
    run_dir, _ = clean_run
    checkpoint = tmp_path / "checkpoint-2"
    shutil.copytree(run_dir / "checkpoint-2", checkpoint)
    verify_checkpoint(checkpoint)
    name, corrupt = DAMAGES[damage]
    corrupt(checkpoint / name)
    with pytest.raises(ValueError, match=rf"The checkpoint file {checkpoint / name} is damaged"):
        verify_checkpoint(checkpoint)


def test_resuming_a_damaged_checkpoint(clean_run, tiny_clip_dir, tmp_path, capsys, caplog):
    run_dir, data = clean_run
    output_dir = tmp_path / "run"
    shutil.copytree(run_dir, output_dir)
    damaged = output_dir / "checkpoint-2" / "phi.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:100])
    # Named explicitly: one line naming the damaged file.
    explicit = lincir_args(tiny_clip_dir, data, output_dir, "--resume_from_checkpoint", output_dir / "checkpoint-2")
    assert run_cli(LINCIR, explicit, "train_lincir.py") == 2
    assert f"{damaged} is damaged" in one_error_line(capsys, "train_lincir.py")
    # `latest`: said, and the run resumes from checkpoint-1 and ends where the clean run ended.
    latest = lincir_args(tiny_clip_dir, data, output_dir, "--resume_from_checkpoint", "latest")
    assert run_cli(LINCIR, latest, "train_lincir.py") == 0
    assert f"{damaged} is damaged" in caplog.text and "Resuming from the previous intact checkpoint" in caplog.text
    resumed, clean = weights(output_dir / "model.safetensors"), weights(run_dir / "model.safetensors")
    assert resumed.keys() == clean.keys() and all(torch.equal(resumed[k], clean[k]) for k in clean)
    verify_checkpoint(output_dir / "checkpoint-2")  # rewritten by the resumed run
    # Nothing intact left: one line.
    for checkpoint in output_dir.glob("checkpoint-*"):
        (checkpoint / "optimizer.bin").write_bytes(b"")
    assert run_cli(LINCIR, latest, "train_lincir.py") == 2
    assert "No intact checkpoint is left" in one_error_line(capsys, "train_lincir.py")


def test_killed_while_checkpointing_resumes_equal_to_a_clean_run(clean_run, tiny_clip_dir, tmp_path):
    run_dir, data = clean_run
    output_dir = tmp_path / "killed"
    killed = run_subprocess("train_lincir", lincir_args(tiny_clip_dir, data, output_dir), kill_at="checkpoint:2")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert (output_dir / ".checkpoint-2.tmp").is_dir()  # our own half-written checkpoint: no obstacle
    assert (
        run_cli(LINCIR, lincir_args(tiny_clip_dir, data, output_dir, "--resume_from_checkpoint", "latest"), "x") == 0
    )
    resumed, clean = weights(output_dir / "model.safetensors"), weights(run_dir / "model.safetensors")
    assert all(torch.equal(resumed[k], clean[k]) for k in clean)
    assert not (output_dir / ".checkpoint-2.tmp").exists()


# -- CompoDiff ---------------------------------------------------------------------------------------------------------

PRIOR = ["--num_layers", 1, "--num_attention_heads", 2, "--attention_head_dim", 8, "--mask_size", 4]


def compodiff_args(data, output_dir, *extra):
    return [
        "--stage", 1, "--train_data", *data, "--output_dir", output_dir, "--train_batch_size", 2, "--max_train_steps",
        1, "--text_drop_probability", 0, "--no-progress", *PRIOR, *extra,
    ]  # fmt: skip


def _embedding_rows(count, text_embeds=None):
    return [
        {"target_image_embeds": [0.1 * i] * 16, "text_embeds": text_embeds or [[0.2 * i] * 16] * 3}
        for i in range(count)
    ]


def _jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _bad_chunk(root):
    (root / "data").mkdir(parents=True)
    (root / "embeddings_info.json").write_text("{}")
    (root / "data" / "000000.parquet").write_bytes(b"junk" * 10)
    return root


def _string_embeddings(root):
    table = pa.table({"target_image_embeds": ["x", "y"], "text_embeds": [[[0.0]], [[1.0]]]})
    root.mkdir()
    pq.write_table(table, root / "rows.parquet")
    return root


def _junk_file(root):
    (root / "embeddings.bin").write_bytes(bytes(range(256)))
    return root / "embeddings.bin"


def _no_rows(root):
    root.mkdir()
    schema = pa.schema([("target_image_embeds", pa.list_(pa.float32())), ("text_embeds", pa.list_(pa.float32()))])
    pq.write_table(schema.empty_table(), root / "rows.parquet")
    return root


def _broken_info(root):
    _bad_chunk(root)
    (root / "embeddings_info.json").write_text("{")
    return root


BAD_EMBEDDINGS = {
    "junk file": (_junk_file, r"--train_data: training files must all be one of"),
    "junk parquet chunk": (lambda t: _bad_chunk(t / "e"), r"000000.parquet is not a parquet file"),
    "text embeddings": (lambda t: _string_embeddings(t / "e"), r"column 'target_image_embeds' holds string"),
    "no rows": (lambda t: _no_rows(t / "e"), r"rows.parquet holds no rows"),
    "broken info": (lambda t: _broken_info(t / "e"), r"embeddings_info.json is damaged"),
    "missing folder": (lambda t: t / "nope" / "e", r"--train_data .*nope/e does not exist"),
}


@pytest.mark.parametrize("case", sorted(BAD_EMBEDDINGS))
def test_bad_train_data_is_one_line(case, tmp_path, capsys):
    make, expected = BAD_EMBEDDINGS[case]
    data = make(tmp_path)
    assert run_cli(COMPODIFF, compodiff_args([data], tmp_path / "out"), "train_compodiff.py") == 2
    line = one_error_line(capsys, "train_compodiff.py")
    assert re.search(expected, line) and "--train_data" in line, line


def test_compodiff_never_replaces_user_files(tmp_path):
    data = _jsonl(tmp_path / "e" / "rows.jsonl", _embedding_rows(4))
    output_dir = tmp_path / "out"
    (output_dir / "prior").mkdir(parents=True)
    (output_dir / "prior" / "mine.txt").write_text("my work")
    result = run_subprocess("train_compodiff", compodiff_args([data.parent], output_dir))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"train_compodiff.py: error: --output_dir: {output_dir / 'prior'} was not written by an hf-cir training run; "
        "refusing to replace it. Move it away or choose another --output_dir."
    )
    assert (output_dir / "prior" / "mine.txt").read_text() == "my work"
    assert sorted(p.name for p in output_dir.iterdir()) == ["prior"]


def test_check_data_file_reads_the_whole_file(tmp_path):
    path = tmp_path / "captions.txt"
    path.write_bytes(b"a red car\n" * 200_000 + b"\xc3")  # valid for 2 MB, then a cut character
    with pytest.raises(ValueError, match="ends inside a character"):
        check_data_file(path, "text")
    path.write_bytes(b"a red car\n" * 200_000 + "é\n".encode())
    check_data_file(path, "text")


def test_the_record_of_what_hf_cir_wrote(tmp_path):
    from hf_cir.hub.saving import LINCIR_FOLDER
    from hf_cir.training import check_output_dir, claim_outputs, output_entry_matcher, publish_outputs

    may_write = output_entry_matcher(LINCIR_FOLDER)
    # A folder of an earlier hf-cir (a run record without the list): its run's entries are taken as hf-cir's.
    (tmp_path / "training_run.json").write_text(json.dumps({"script": "train_lincir.py"}))
    (tmp_path / "checkpoint-2").mkdir()
    (tmp_path / "checkpoint-2" / "training_state.json").write_text('{"global_step": 2}')
    (tmp_path / "README.md").write_text("an earlier card")
    (tmp_path / "notes.txt").write_text("mine")
    check_output_dir(tmp_path, {"script": "train_lincir.py"}, "latest", may_write=may_write)
    written = json.loads((tmp_path / "training_run.json").read_text())["written"]
    assert {"checkpoint-2", "README.md"} <= set(written) and "notes.txt" not in written
    # A name claimed later that exists and is not listed: refused, nothing written.
    (tmp_path / "best").mkdir()
    with pytest.raises(FileExistsError, match=r"best was not written by an hf-cir training run"):
        claim_outputs(tmp_path, ["best"])
    # Publishing replaces listed entries only; an unlisted one stops it before anything moves.
    names = publish_outputs(tmp_path, lambda folder: (folder / "README.md").write_text("new card"))
    assert names == ["README.md"] and (tmp_path / "README.md").read_text() == "new card"
    (tmp_path / "config.json").write_text("{}")  # the user's, written during training
    with pytest.raises(FileExistsError, match=r"config.json was not written.*left in .*unpublished-"):
        publish_outputs(tmp_path, lambda folder: [(folder / n).write_text("x") for n in ("README.md", "config.json")])
    assert (tmp_path / "config.json").read_text() == "{}" and (tmp_path / "README.md").read_text() == "new card"
    # A record file that hf-cir did not write is itself refused.
    other = tmp_path / "other"
    other.mkdir()
    (other / "training_run.json").write_text("[1, 2]")
    with pytest.raises(FileExistsError, match="training_run.json was not written"):
        check_output_dir(other, {"script": "train_lincir.py"}, None)
