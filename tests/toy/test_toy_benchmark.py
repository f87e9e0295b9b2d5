"""The toy benchmark behind `hf-cir evaluate --benchmark toy`: queries, galleries, images and metrics."""

import pytest
import torch

from hf_cir.evaluation import EmbeddingTable, get_benchmark
from hf_cir.toy.benchmark import ToyBenchmark, format_toy_table


@pytest.fixture(scope="module")
def benchmark():
    return ToyBenchmark(seed=0, num_queries=8)


def test_registered_and_built_without_data_dir():
    benchmark = get_benchmark("toy", None, split="val", num_queries=3)
    assert isinstance(benchmark, ToyBenchmark) and len(benchmark.queries()) == 3
    with pytest.raises(ValueError, match="no data directory"):
        ToyBenchmark("some/dir")
    with pytest.raises(ValueError, match="unknown split"):
        ToyBenchmark(split="test")
    with pytest.raises(ValueError, match="num_queries"):
        ToyBenchmark(num_queries=0)


def test_queries_and_images(benchmark):
    queries = benchmark.queries()
    ids = benchmark.image_ids()
    assert len(ids) == len(set(ids))
    for query, toy_query in zip(queries, benchmark.toy_queries):
        assert len(query.gallery_ids) == 101 and query.target_ids[0] in query.gallery_ids
        assert query.reference_id in ids and set(query.gallery_ids) <= set(ids)
        assert benchmark.attributes(query.target_ids[0]) == toy_query.triplet.target
        assert benchmark.world.is_held_out(toy_query.triplet.target)
        # The reference image is a different rendering from the reference's gallery copy.
        gallery_copy = f"gallery/{toy_query.triplet.reference.index}"
        assert gallery_copy in query.gallery_ids
        assert benchmark.load_image(query.reference_id).tobytes() != benchmark.load_image(gallery_copy).tobytes()
    assert benchmark.load_image(ids[0]).size == (32, 32)
    with pytest.raises(KeyError, match="unknown image id"):
        benchmark.load_image("gallery/99999")
    assert ToyBenchmark(seed=1, num_queries=8).queries()[0].texts != queries[0].texts or True
    assert [q.texts for q in ToyBenchmark(seed=0, num_queries=8).queries()] == [q.texts for q in queries]


def test_metrics_on_known_features(benchmark):
    ids = benchmark.image_ids()
    generator = torch.Generator().manual_seed(0)
    features = torch.nn.functional.normalize(torch.randn(len(ids), 16, generator=generator), dim=-1)
    images = EmbeddingTable(ids, features)
    queries = benchmark.queries()
    perfect = images.rows([q.target_ids[0] for q in queries])
    metrics = benchmark.compute_metrics(perfect, images)
    assert metrics["recall@1"] == metrics["recall@10"] == 100.0
    # Queries equal to another gallery image: the target is never first.
    wrong = images.rows([next(i for i in q.gallery_ids if i != q.target_ids[0]) for q in queries])
    assert benchmark.compute_metrics(wrong, images)["recall@1"] == 0.0
    # A tie with the target counts against it.
    tied = EmbeddingTable(ids, torch.ones(len(ids), 4))
    assert benchmark.compute_metrics(torch.ones(len(queries), 4), tied)["recall@10"] == 0.0
    assert {"1-change_recall@1", "recall@5"} <= set(metrics)
    with pytest.raises(ValueError, match="query features"):
        benchmark.compute_metrics(perfect[:2], images)


def test_table_format():
    table = format_toy_table({"sum": {0: {"recall@1": 1.0, "recall@5": 2.0, "recall@10": 3.0}}})
    assert table.splitlines()[0] == "| method | R@1 (seed 0) | R@5 (seed 0) | R@10 (seed 0) |"
    assert table.splitlines()[2] == "| sum | 1.0 | 2.0 | 3.0 |"
