"""A tiny run of benchmarks/bench_compodiff_quality.py (the real run is in benchmarks/README.md)."""

import json
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bench_compodiff_quality  # noqa: E402


def test_toy_quality_rows_and_check(tmp_path, capsys):
    out = tmp_path / "quality.json"
    payload = bench_compodiff_quality.main(
        [
            "--skip-full",
            "--seeds", "0", "1",
            "--num-queries", "8",
            "--schedulers", "DDIMScheduler",
            "--steps", "2",
            "--samples", "1",
            "--precisions", "float32",
            "--setting", "DPMSolverMultistepScheduler:algorithm_type=sde-dpmsolver++,solver_order=1", "2", "1", "float32",
            "--json", str(out),
        ]
    )  # fmt: skip
    rows = payload["toy"]
    assert [row["setting"] for row in rows][0] == bench_compodiff_quality.setting_label(
        bench_compodiff_quality.BASELINE
    )
    # today's default, the preset, the first preset, the grid (DDIM), the extra --setting
    assert len(rows) == 5 and rows[0]["dR@1"] == 0 and rows[0]["evals/query"] == 9
    assert rows[1]["preset"] == "interactive" and rows[2]["scheduler_kwargs"]["algorithm_type"] == "dpmsolver++"
    ddim, sde = rows[3], rows[4]
    assert ddim["evals/query"] == 2 and ddim["rows/eval"] == 3
    assert sde["scheduler_kwargs"] == {"algorithm_type": "sde-dpmsolver++", "solver_order": 1}
    assert (
        sde["setting"]
        == "DPMSolverMultistepScheduler(algorithm_type=sde-dpmsolver++,solver_order=1) 2 steps x1 float32"
    )
    assert {row["within 1 point"] for row in rows} <= {True, False} and rows[0]["within 1 point"]
    for row in rows:
        for k in (1, 5, 10):
            assert row[f"R@{k}"] == (row[f"R@{k} s0"] + row[f"R@{k} s1"]) / 2
    assert payload["check"]["preset"] == "interactive" and "toy within 1 point" in payload["check"]
    assert json.loads(out.read_text())["check"] == payload["check"]
    assert "## Check (issue 15)" in capsys.readouterr().out


def test_scheduler_specs():
    parse = bench_compodiff_quality.parse_scheduler
    assert parse("UniPCMultistepScheduler") == ("UniPCMultistepScheduler", {})
    assert parse(
        "DPMSolverMultistepScheduler:algorithm_type=sde-dpmsolver++,solver_order=2,lower_order_final=false"
    ) == (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "lower_order_final": False},
    )
