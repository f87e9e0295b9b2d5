"""A CPU smoke run of benchmarks/bench_compodiff_graphs.py (the GPU table is prepared in benchmarks/README.md)."""

import json
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bench_compodiff_graphs  # noqa: E402


def test_cpu_quick_run_falls_back_and_compares_with_float32(tmp_path, capsys):
    out = tmp_path / "graphs.json"
    payload = bench_compodiff_graphs.main(
        [
            "--device",
            "cpu",
            "--quick",
            "--dtypes",
            "bfloat16",
            "--configs",
            "1x2",
            "--repeats",
            "1",
            "--json",
            str(out),
        ]
    )
    rows = payload["rows"]
    assert [(row["dtype"], row["batch"], row["samples"]) for row in rows] == [("float32", 1, 2), ("bfloat16", 1, 2)]
    for row in rows:
        assert row["graphs"] is False  # a CPU: the captured path ran the ordinary loop ...
        assert row["captured - today (same dtype)"] == 0.0  # ... and gave its numbers exactly
        assert all(row[f"{path} s"] > 0 for path in bench_compodiff_graphs.PATHS)
    assert rows[0]["today max abs diff vs fp32"] == 0.0 and rows[0]["captured min cos vs fp32"] > 0.9999
    assert rows[0]["reference max abs diff vs fp32"] < 1e-4  # the plain path agrees to float32 rounding
    assert json.loads(out.read_text())["rows"][1]["dtype"] == "bfloat16"
    assert "| reference s | today s | captured s |" in capsys.readouterr().out
