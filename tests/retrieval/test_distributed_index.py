"""`accelerate launch --multi_gpu --num_processes 2 -m hf_cir index --device cpu`: equal to one process, resumable
after one of the processes is killed (real gloo processes on the CPU)."""

import os
import socket
import subprocess
import sys
import textwrap

import datasets
import torch

from hf_cir.retrieval import GalleryIndex, load_retrieval_model

from .conftest import make_gallery

# Runs `hf-cir` under the launcher; with KILL_RANK/KILL_AT_CALL set, that process SIGKILLs itself when it is about
# to encode its KILL_AT_CALL-th batch (the fault is injected here, not in the library).
LAUNCHED = textwrap.dedent(
    """
    import os, signal, sys
    from hf_cir.retrieval.adapters.lincir import LinCIRRetrievalModel

    original = LinCIRRetrievalModel.encode_pixel_values
    calls = 0

    def encode(self, pixel_values):
        global calls
        calls += 1
        if os.environ.get("RANK") == os.environ.get("KILL_RANK") and calls == int(os.environ.get("KILL_AT_CALL", 0)):
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, pixel_values)

    LinCIRRetrievalModel.encode_pixel_values = encode
    from hf_cir.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(script, arguments, tmp_path, **env):
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()), str(script), *arguments,
    ]  # fmt: skip
    environment = dict(os.environ, OMP_NUM_THREADS="1", HF_HOME=str(tmp_path / "hf"), **env)
    return subprocess.run(command, capture_output=True, text=True, timeout=900, env=environment)


def committed_units(partial):
    return (
        {path.name: path.stat().st_mtime_ns for path in (partial / "embeddings").glob("*.npy")}
        if (partial / "units").is_dir()
        else {}
    )


def test_two_processes_equal_one_and_resume_after_a_kill(lincir_dir, tmp_path):
    photos = tmp_path / "photos"
    names = make_gallery(photos, with_bad_files=False)
    script = tmp_path / "launched.py"
    script.write_text(LAUNCHED)
    output = tmp_path / "two.index"
    arguments = ["index", "--device", "cpu", "--model", str(lincir_dir), "--images", str(photos)]
    arguments += ["--output", str(output), "--save-every", "1", "--batch-size", "1", "--no-progress", "--json"]

    # Rank 1 owns units 1, 3, 5 (one image each) and dies before its second batch: unit 1 is committed.
    killed = launch(script, arguments, tmp_path, KILL_RANK="1", KILL_AT_CALL="2")
    assert killed.returncode != 0
    assert not output.exists()
    partial = tmp_path / "two.index.partial"
    markers = {path.stem for path in (partial / "units").glob("*.json")}
    assert "000001" in markers and "000003" not in markers and "000005" not in markers, markers
    finished = {name: mtime for name, mtime in committed_units(partial).items() if name[:-4] in markers}

    rerun = launch(script, arguments, tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    summary = rerun.stdout[rerun.stdout.index("{") :]
    import json

    assert json.loads(summary)["computed"] == len(names) - len(markers)  # finished shards are not recomputed
    assert not partial.exists()
    for name, mtime in finished.items():
        assert (output / "embeddings" / name).stat().st_mtime_ns == mtime  # the very files of the killed run

    two = GalleryIndex.load(output)
    one = GalleryIndex.build(
        load_retrieval_model(lincir_dir, device="cpu"), photos, tmp_path / "one.index", save_every=1,
        show_progress=False,
    )  # fmt: skip
    assert two.paths == one.paths == names
    torch.testing.assert_close(two.embeddings, one.embeddings, rtol=0, atol=1e-6)


def test_two_processes_split_a_stream_and_equal_one(lincir_dir, tmp_path):
    """A stream's number of units is known only at its end: each process reads it through, embeds its own units
    (unit i on process i mod 2), and the manifest is written after both finished."""
    from .test_streaming_sources import write_parquet_gallery

    parquet = tmp_path / "gallery.parquet"
    names = write_parquet_gallery(tmp_path / "photos", parquet)
    script = tmp_path / "launched.py"
    script.write_text(LAUNCHED)
    output = tmp_path / "two.index"
    arguments = ["index", "--device", "cpu", "--model", str(lincir_dir), "--dataset", str(parquet), "--streaming"]
    arguments += ["--output", str(output), "--save-every", "2", "--no-progress"]
    result = launch(script, arguments, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    two = GalleryIndex.load(output)
    assert two.info["num_shards"] == 3 and len(two) == len(names)
    one = GalleryIndex.build(
        load_retrieval_model(lincir_dir, device="cpu"), datasets.Dataset.from_parquet(str(parquet)),
        tmp_path / "one.index", show_progress=False,
    )  # fmt: skip
    assert two.paths == one.paths
    torch.testing.assert_close(two.embeddings, one.embeddings, rtol=0, atol=1e-6)
