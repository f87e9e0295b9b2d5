"""Benchmark helpers and tiny smoke runs of the benchmark scripts (the real runs are in benchmarks/README.md)."""

import json
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bench_compodiff  # noqa: E402
import bench_retrieval  # noqa: E402
import benchutils  # noqa: E402


def test_measure_counts_repeats_and_orders_best_and_median():
    calls = []
    timing = benchutils.measure(lambda: calls.append(1), repeats=4, warmup=2)
    assert len(calls) == 6
    assert timing.repeats == 4 and 0 <= timing.best <= timing.median
    with pytest.raises(ValueError, match="repeats"):
        benchutils.measure(lambda: None, repeats=0)


def test_read_bandwidth_is_positive_and_machine_is_described():
    assert benchutils.read_bandwidth(torch.ones(1 << 16), repeats=2) > 0
    machine = benchutils.machine_description()
    assert machine["torch"] == torch.__version__ and machine["cpu_count"] >= 1


def test_format_table_and_parse_dtype():
    table = benchutils.format_table([{"a": 1234.5, "b": 0.001234}, {"a": "x", "c": 3.14159}])
    assert table.splitlines() == ["| a | b | c |", "|---|---|---|", "| 1234 | 1.23e-03 |  |", "| x |  | 3.14 |"]
    assert benchutils.format_table([]) == ""
    assert benchutils.parse_dtype("bf16") is torch.bfloat16
    with pytest.raises(ValueError, match="Unknown dtype 'int8'"):
        benchutils.parse_dtype("int8")


def test_recall_helpers():
    exact = torch.tensor([[1, 2, 3], [4, 5, 6]])
    approx = torch.tensor([[3, 2, 9], [4, 5, 6]])
    assert bench_retrieval.recall_at_k(approx, exact) == pytest.approx(5 / 6)
    assert bench_retrieval.same_top_k(approx, exact) == 0.5
    vectors = bench_retrieval.random_unit_vectors(100, 8, seed=0, block=30)
    torch.testing.assert_close(vectors.norm(dim=-1), torch.ones(100))
    assert torch.equal(vectors, bench_retrieval.random_unit_vectors(100, 8, seed=0, block=30))


def test_retrieval_benchmark_smoke(tmp_path, capsys):
    output = tmp_path / "retrieval.json"
    payload = bench_retrieval.main(
        ["--sizes", "3000", "--dim", "32", "--repeats", "1", "--recall-queries", "8", "--hnsw-max", "0"]
        + ["--ivf-max", "0", "--json", str(output)]
    )
    assert json.loads(output.read_text())["rows"] == json.loads(json.dumps(payload["rows"], default=str))
    exact = [row for row in payload["rows"] if row["method"] == "ExactIndex"]
    assert {row["params"] for row in exact} == {"float32", "float16"}
    assert exact[0]["recall@10 (random)"] == 1.0  # float32 exact is the reference itself
    flat = [row for row in payload["rows"] if row["method"] == "FaissIndex flat"]
    if flat:  # faiss installed: the flat index returns the exact top-10
        assert flat[0]["same top-10 (random)"] == 1.0
    assert "| N | method |" in capsys.readouterr().out


def test_compodiff_benchmark_fast_path_equals_plain_path_at_pipeline_level():
    # Uneven batch x samples, 3 guidance branches: the cached path must reproduce the recompute-everything path.
    payload = bench_compodiff.main(["--sizes", "tiny", "--configs", "3x2", "1x3", "--repeats", "1", "--steps", "4"])
    for row in payload["rows"]:
        assert row["max abs diff"] <= 1e-5, row
        assert row["plain s"] > 0 and row["fast s"] > 0 and row["bound"] > 0


def test_compodiff_irreducible_work_excludes_context_projections():
    pipe = bench_compodiff.build_pipeline("tiny", "cpu", torch.float32)
    layers = bench_compodiff.irreducible_linears(pipe.prior)
    assert len(layers) == 7 * pipe.prior.config.num_layers
    assert not any(layer is block.cross_attn.to_kv for block in pipe.prior.transformer_blocks for layer in layers)
