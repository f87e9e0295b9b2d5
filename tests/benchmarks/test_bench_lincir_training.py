"""`benchmarks/gpu.sh --dry-run`: the GPU script's LinCIR training run, on the CPU with the tiny tower (the GPU run
itself needs a GPU and is recorded in benchmarks/README.md)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_script_dry_run_times_bf16_training_and_prints_the_projection(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "RESULTS": str(tmp_path), "OMP_NUM_THREADS": "1"}
    process = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--dry-run"],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert process.returncode == 0, process.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lincir_training.json"]  # the other runs need CUDA
    record = json.loads((tmp_path / "lincir_training.json").read_text())
    (result,) = record["results"]
    assert (result["tower"], result["batch_size"], result["precision"]) == ("tiny", 64, "bf16")
    assert result["configuration"].endswith("(default)") and result["steps_per_s"] > 0
    projection = record["paper_projection"]
    assert projection["projected_minutes"] == pytest.approx(20_000 / result["steps_per_s"] / 60)
    lines = [line for line in process.stdout.splitlines() if line.startswith("PROJECTION (not a measurement)")]
    assert len(lines) == 1 and f"{projection['projected_minutes']:.1f} min" in lines[0]
