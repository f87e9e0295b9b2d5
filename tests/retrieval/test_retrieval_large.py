"""A 100k-image index of random embeddings: one query answers fast, and the exact and faiss paths agree."""

import time

import torch

from hf_cir.retrieval import GalleryIndex
from hf_cir.retrieval.search import FaissIndex


def test_100k_index_query_latency_and_faiss_agreement(tmp_path):
    count, dim = 100_000, 64
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(count, dim, generator=generator)
    paths = [f"images/{i:06d}.jpg" for i in range(count)]
    index = GalleryIndex(paths, embeddings, tmp_path, {"embedding_dim": dim})
    queries = torch.randn(4, dim, generator=generator)
    exact = index.search(queries, k=10)  # warm-up
    timings = []
    for row in range(4):
        start = time.perf_counter()
        index.search(queries[row : row + 1], k=10)
        timings.append(time.perf_counter() - start)
    assert sorted(timings)[1] < 0.050, f"one query took {sorted(timings)[1] * 1000:.1f} ms"
    index._backend = FaissIndex(index._normalized, kind="flat")
    approximate = index.search(queries, k=10)
    assert [[h.path for h in hits] for hits in exact] == [[h.path for h in hits] for hits in approximate]
    for exact_hits, faiss_hits in zip(exact, approximate):
        assert all(abs(a.score - b.score) < 1e-5 for a, b in zip(exact_hits, faiss_hits))
