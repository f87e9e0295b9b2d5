"""Exact and faiss nearest-neighbour search: same top-k as brute force, deterministic ties, round trips, errors."""

import sys

import pytest
import torch

from hf_cir.retrieval.search import ExactIndex, FaissIndex, is_faiss_available, top_k_lowest_index

faiss_required = pytest.mark.skipif(not is_faiss_available(), reason="faiss-cpu is not installed (extra `faiss`)")


def brute_force(gallery: torch.Tensor, queries: torch.Tensor, k: int):
    """Reference ranking: every score in float64, sorted by (-score, index)."""
    scores = queries.double() @ gallery.double().T
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    return scores.gather(1, order).float(), order


def random_gallery(n=3000, d=48, b=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    gallery = torch.nn.functional.normalize(torch.randn(n, d, generator=generator), dim=-1)
    queries = torch.nn.functional.normalize(torch.randn(b, d, generator=generator), dim=-1)
    return gallery, queries


@pytest.mark.parametrize("chunk_size", [97, 1024, 100_000])
@pytest.mark.parametrize("batch", [1, 3, 6])
def test_exact_float32_matches_brute_force(chunk_size, batch):
    gallery, queries = random_gallery()
    scores, indices = ExactIndex(gallery, chunk_size=chunk_size).search(queries[:batch], k=10)
    expected_scores, expected_indices = brute_force(gallery, queries[:batch], 10)
    assert scores.dtype == torch.float32 and indices.dtype == torch.int64
    assert scores.shape == indices.shape == (batch, 10)
    assert torch.equal(indices, expected_indices)
    torch.testing.assert_close(scores, expected_scores, atol=1e-6, rtol=0)


@pytest.mark.parametrize("batch", [1, 5])
def test_exact_float16_is_exact_over_the_stored_values(batch):
    gallery, queries = random_gallery(seed=1)
    index = ExactIndex(gallery, dtype=torch.float16, chunk_size=500)
    assert index.embeddings.dtype == torch.float16
    scores, indices = index.search(queries[:batch], k=10)
    expected_scores, expected_indices = brute_force(gallery.half().float(), queries[:batch], 10)
    assert torch.equal(indices, expected_indices)
    # Candidates are re-scored in float32: scores are float32 inner products, not float16-rounded ones.
    torch.testing.assert_close(scores, expected_scores, atol=1e-6, rtol=0)


def test_one_dimensional_query_and_numpy_input():
    gallery, queries = random_gallery()
    index = ExactIndex(gallery.numpy())
    scores, indices = index.search(queries[0], k=3)
    assert indices.shape == (1, 3)
    assert torch.equal(indices, index.search(queries[:1].numpy(), k=3)[1])


def test_exact_ties_keep_the_lower_index_first_across_chunks():
    # 30 equal best rows spread over several chunks; top-12 must be the 12 lowest of them, in index order.
    gallery = torch.zeros(200, 4)
    gallery[:, 1] = 1.0
    tied = torch.arange(35, 185, 5)
    gallery[tied] = torch.tensor([1.0, 0.0, 0.0, 0.0])
    query = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    for chunk_size in (7, 64, 1000):
        scores, indices = ExactIndex(gallery, chunk_size=chunk_size).search(query, k=12)
        assert indices[0].tolist() == tied[:12].tolist()
        assert scores[0].tolist() == [1.0] * 12
    # Past the tied block, the zero scores also come in index order.
    _, indices = ExactIndex(gallery, chunk_size=7).search(query, k=33)
    assert indices[0, 30:].tolist() == [0, 1, 2]


def test_top_k_lowest_index_helper():
    scores = torch.tensor([[0.2, 0.9, 0.9, 0.9, 0.1], [0.5, 0.5, 0.5, 0.5, 0.5]])
    values, positions = top_k_lowest_index(scores, 2)
    assert positions.tolist() == [[1, 2], [0, 1]]
    values, positions = top_k_lowest_index(scores, 3, indices=torch.tensor([[9, 8, 7, 6, 5], [4, 3, 2, 1, 0]]))
    assert positions.tolist() == [[6, 7, 8], [0, 1, 2]]
    assert values.tolist()[1] == [0.5] * 3


@faiss_required
@pytest.mark.parametrize("batch", [1, 6])
def test_faiss_flat_matches_exact_and_brute_force(batch):
    gallery, queries = random_gallery(seed=2)
    flat_scores, flat_indices = FaissIndex(gallery, kind="flat").search(queries[:batch], 10)
    exact_scores, exact_indices = ExactIndex(gallery).search(queries[:batch], 10)
    _, expected = brute_force(gallery, queries[:batch], 10)
    assert torch.equal(flat_indices, exact_indices)
    assert torch.equal(flat_indices, expected)
    torch.testing.assert_close(flat_scores, exact_scores, atol=1e-6, rtol=0)


@faiss_required
def test_faiss_flat_ties_equal_exact_ties():
    gallery = torch.zeros(120, 8)
    gallery[:, 2] = 1.0
    gallery[10:60] = torch.nn.functional.one_hot(torch.tensor(0), 8).float()
    query = torch.nn.functional.one_hot(torch.tensor([0]), 8).float()
    # more than 20 queries sends faiss down its BLAS code path: both paths must order ties the same way
    for queries in (query, query.repeat(25, 1)):
        flat = FaissIndex(gallery, kind="flat").search(queries, 15)
        exact = ExactIndex(gallery, chunk_size=16).search(queries, 15)
        assert torch.equal(flat[1], exact[1])
        assert flat[1][0].tolist() == list(range(10, 25))


@faiss_required
def test_faiss_approximate_indexes_reach_high_recall():
    # Clustered data like real embeddings; queries near gallery items.
    generator = torch.Generator().manual_seed(3)
    centers = torch.randn(20, 32, generator=generator)
    gallery = centers[torch.randint(0, 20, (4000,), generator=generator)] + 0.3 * torch.randn(
        4000, 32, generator=generator
    )
    gallery = torch.nn.functional.normalize(gallery, dim=-1)
    queries = torch.nn.functional.normalize(gallery[:50] + 0.1 * torch.randn(50, 32, generator=generator), dim=-1)
    _, exact = ExactIndex(gallery).search(queries, 10)
    for kind, params in (("ivf", {"nlist": 32, "nprobe": 8}), ("hnsw", {"m": 16, "ef_search": 64})):
        index = FaissIndex(gallery, kind=kind, **params)
        _, approx = index.search(queries, 10)
        recall = sum(len(set(a) & set(e)) for a, e in zip(approx.tolist(), exact.tolist())) / exact.numel()
        assert recall >= 0.95, (kind, recall)
    ivf = FaissIndex(gallery, kind="ivf", nlist=32, nprobe=1)
    ivf.nprobe = 32  # visiting every list is an exhaustive search
    assert torch.equal(ivf.search(queries, 10)[1], exact)


@faiss_required
@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_faiss_index_save_load_round_trip(tmp_path, kind):
    gallery, queries = random_gallery(n=800)
    params = {"flat": {}, "ivf": {"nlist": 8, "nprobe": 3}, "hnsw": {"ef_search": 40}}[kind]
    index = FaissIndex(gallery, kind=kind, **params)
    index.save(tmp_path / "faiss.index")
    loaded = FaissIndex.load(tmp_path / "faiss.index")
    assert loaded.kind == kind and loaded.ntotal == 800 and loaded.dim == gallery.shape[1]
    assert loaded.nprobe == index.nprobe and loaded.ef_search == index.ef_search
    assert torch.equal(loaded.search(queries, 10)[1], index.search(queries, 10)[1])


def test_exact_index_errors(tmp_path):
    gallery, queries = random_gallery(n=50, d=8)
    index = ExactIndex(gallery)
    with pytest.raises(ValueError, match="dimension 9.*8-dimensional"):
        index.search(torch.randn(2, 9), 3)
    with pytest.raises(ValueError, match=r"`k` \(51\) is larger than the number of indexed embeddings \(50\)"):
        index.search(queries, 51)
    with pytest.raises(ValueError, match="`k` must be a positive integer"):
        index.search(queries, 0)
    with pytest.raises(ValueError, match="NaN"):
        index.search(torch.full((1, 8), float("nan")), 3)
    with pytest.raises(ValueError, match=r"shape \[B, D\]"):
        index.search(torch.randn(1, 2, 8), 3)
    with pytest.raises(ValueError, match="`dtype` must be one of"):
        ExactIndex(gallery, dtype=torch.int8)
    with pytest.raises(ValueError, match=r"shape \[N, D\]"):
        ExactIndex(torch.randn(8))
    with pytest.raises(ValueError, match="at least one"):
        ExactIndex(torch.randn(0, 8))
    with pytest.raises(ValueError, match="NaN or infinite"):
        ExactIndex(torch.tensor([[1.0, float("inf")]]))
    with pytest.raises(ValueError, match="`chunk_size`"):
        ExactIndex(gallery, chunk_size=0)
    with pytest.raises(TypeError, match="`embeddings` must be a torch.Tensor"):
        ExactIndex([[1.0, 2.0]])
    with pytest.raises(ValueError, match=r"shape \[B, D\] with B >= 1"):
        index.search(torch.randn(0, 8), 3)  # an empty batch of queries
    with pytest.raises(ValueError, match="`k` must be a positive integer, got 2.5"):
        index.search(queries, 2.5)


@faiss_required
def test_faiss_index_errors(tmp_path):
    gallery, queries = random_gallery(n=100, d=8)
    with pytest.raises(ValueError, match="`kind` must be one of"):
        FaissIndex(gallery, kind="lsh")
    with pytest.raises(ValueError, match="`nlist`"):
        FaissIndex(gallery, kind="ivf", nlist=500)
    with pytest.raises(ValueError, match="`ef_search`"):
        FaissIndex(gallery, kind="hnsw", ef_search=0)
    flat = FaissIndex(gallery)
    with pytest.raises(ValueError, match="dimension 4.*8-dimensional"):
        flat.search(torch.randn(1, 4), 3)
    with pytest.raises(ValueError, match="`nprobe` applies to an IVF index"):
        flat.nprobe = 3
    ivf = FaissIndex(gallery, kind="ivf", nlist=2)
    with pytest.raises(ValueError, match=r"`nprobe` must be an integer in \[1, 2\]"):
        ivf.nprobe = 3
    with pytest.raises(FileNotFoundError, match="does not exist"):
        FaissIndex.load(tmp_path / "missing.index")
    (tmp_path / "garbage.index").write_bytes(b"nonsense")
    with pytest.raises(ValueError, match="garbage.json \\(the settings of garbage.index\\) is missing or corrupt"):
        FaissIndex.load(tmp_path / "garbage.index")
    flat.save(tmp_path / "good.index")
    import faiss

    assert faiss.read_index(str(tmp_path / "good.index")).ntotal == len(gallery)  # a plain faiss file
    truncated = (tmp_path / "good.index").read_bytes()[:100]
    (tmp_path / "truncated.index").write_bytes(truncated)
    (tmp_path / "truncated.json").write_text((tmp_path / "good.json").read_text())
    with pytest.raises(ValueError, match="truncated.index is corrupt: faiss cannot read it"):
        FaissIndex.load(tmp_path / "truncated.index")


def test_faiss_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` now raises ImportError
    assert not is_faiss_available()
    with pytest.raises(ImportError, match=r"pip install hf-cir\[faiss\]"):
        FaissIndex(torch.randn(10, 4))


@pytest.mark.parametrize("threads", [1, 2])
def test_threaded_and_sequential_scans_agree(threads):
    # Few queries on a CPU float32 index spread the chunks over a thread pool of torch.get_num_threads() workers.
    gallery, queries = random_gallery(n=4000, seed=4)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        scores, indices = ExactIndex(gallery, chunk_size=300).search(queries[:2], k=10)
    finally:
        torch.set_num_threads(previous)
    expected_scores, expected_indices = brute_force(gallery, queries[:2], 10)
    assert torch.equal(indices, expected_indices)
    torch.testing.assert_close(scores, expected_scores, atol=1e-6, rtol=0)


def test_exact_index_owns_its_scan_threads():
    import threading

    from hf_cir.retrieval.search import ExactIndex

    def scan_threads():
        return [t for t in threading.enumerate() if t.name.startswith("hf-cir-search")]

    torch.set_num_threads(2)  # the autouse fixture restores the suite's setting afterwards
    gallery = torch.nn.functional.normalize(torch.randn(4096, 16), dim=-1)
    with ExactIndex(gallery, chunk_size=512) as index:
        scores, indices = index.search(gallery[:1], k=3)
        assert indices[0, 0].item() == 0
        assert scan_threads()  # the float32 single-query scan ran on the index's own pool
    assert not scan_threads()
    again = ExactIndex(gallery, chunk_size=512)
    assert torch.equal(again.search(gallery[:1], k=3)[1], indices)  # a closed index searches again
    again.close()
