"""Index format v2 (memory-mapped shards, Parquet metadata), the exact block scan, compressed IVF-PQ with re-ranking,
merging IVF parts built apart, and folders of format 1."""

import json

import faiss
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from hf_cir.retrieval import GalleryIndex
from hf_cir.retrieval.compressed import (
    CompressedIndex,
    add_rows,
    merge_compressed_parts,
    parse_memory_size,
    plan_compressed_index,
    train_compressed_index,
)
from hf_cir.retrieval.search import ExactIndex
from hf_cir.retrieval.storage import ShardedEmbeddings


def clustered(count, dim=64, clusters=20, seed=0):
    generator = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(clusters, dim, generator=generator), dim=-1)
    labels = torch.randint(0, clusters, (count,), generator=generator)
    return F.normalize(centres[labels] + 0.1 * torch.randn(count, dim, generator=generator), dim=-1)


def in_memory_index(embeddings, tmp_path):
    paths = [f"img/{i:05d}.jpg" for i in range(len(embeddings))]
    return GalleryIndex(paths, embeddings * 3.0, tmp_path, {"embedding_dim": embeddings.shape[1], "model": "m"})


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_v2_round_trip_is_memory_mapped_and_exact(tmp_path, dtype):
    gallery = clustered(3000)
    index = in_memory_index(gallery, tmp_path)
    index.save(tmp_path / "index", dtype=dtype, shard_size=1000)
    loaded = GalleryIndex.load(tmp_path / "index")
    assert loaded.info["version"] == 2 and loaded.info["num_shards"] == 3
    assert isinstance(loaded._table.shards[0], np.memmap)  # nothing read into RAM
    assert loaded.paths == index.paths and len(loaded) == 3000
    tolerance = 1e-6 if dtype == "float32" else 3e-3
    torch.testing.assert_close(
        loaded.get_embeddings([5, 2500]), index.embeddings[[5, 2500]], rtol=tolerance, atol=tolerance
    )
    queries = clustered(4, seed=1)
    exact = ExactIndex(loaded._table.to_tensor()).search(queries, 10)
    scanned = loaded._table.search(queries, 10, block_rows=700)  # the larger-than-RAM path, across shards
    torch.testing.assert_close(scanned[0], exact[0], rtol=1e-5, atol=1e-5)
    assert torch.equal(scanned[1], exact[1])
    hits = loaded.search(queries[:1], k=3)[0]
    assert [h.path for h in hits] == [index.paths[i] for i in exact[1][0, :3].tolist()]
    assert hits[0].metadata == {"id": hits[0].path, "path": hits[0].path}


def test_compressed_index_recall_mmap_and_plain_faiss_file(tmp_path):
    gallery = clustered(6000)
    index = in_memory_index(gallery, tmp_path)
    index.info["faiss"] = "ivf-pq"
    index.save(tmp_path / "index", dtype="float16", faiss_kwargs={"m": 32})  # 16 bytes a vector: 1/8 of float16
    loaded = GalleryIndex.load(tmp_path / "index")
    assert isinstance(loaded._backend, CompressedIndex)
    assert faiss.read_index(str(tmp_path / "index" / "faiss.index")).ntotal == 6000  # plain faiss opens it
    settings = json.loads((tmp_path / "index" / "faiss.json").read_text())
    assert settings["factory"].endswith("x4fs") and settings["kind"] == "ivf-pq"
    queries = clustered(50, seed=3)
    truth = ExactIndex(gallery).search(queries, 10)[1]
    loaded._backend.nprobe = loaded._backend.settings["nlist"]  # every list: only the PQ shortlist approximates
    loaded._backend.settings["min_rerank"] = 300
    approximate = torch.tensor([[index.paths.index(h.path) for h in hits] for hits in loaded.search(queries, k=10)])
    recall = np.mean([len(set(a.tolist()) & set(b.tolist())) / 10 for a, b in zip(approximate, truth)])
    assert recall >= 0.9, recall
    # Without re-ranking the PQ scores are approximate; with it they are the stored embeddings' exact scores.
    scores, rows = loaded._backend.search(F.normalize(queries[:2], dim=-1), 5)
    exact_scores = (loaded._table.rows(rows.reshape(-1)).reshape(2, 5, -1) @ queries[:2, :, None])[..., 0]
    torch.testing.assert_close(scores, exact_scores, rtol=1e-5, atol=1e-5)


def test_ivf_parts_built_apart_merge_into_one_index():
    gallery = clustered(4000).numpy()
    plan = plan_compressed_index(4000, 64, m=32)
    trained = train_compressed_index(gallery[::2], plan)
    parts = []
    for rank in range(2):  # as two processes: every other block of rows
        part = faiss.clone_index(trained)
        add_rows(part, [(start, gallery[start : start + 500]) for start in range(rank * 500, 4000, 1000)])
        parts.append(part)
    merged = merge_compressed_parts(parts)
    whole = faiss.clone_index(trained)
    add_rows(whole, [(0, gallery)])
    assert merged.ntotal == whole.ntotal == 4000
    queries = np.ascontiguousarray(clustered(10, seed=5).numpy())
    for index in (merged, whole):
        faiss.extract_index_ivf(index).nprobe = 8
    assert np.array_equal(np.sort(merged.search(queries, 20)[1], 1), np.sort(whole.search(queries, 20)[1], 1))


def test_plan_follows_size_and_budget():
    small = plan_compressed_index(1_000_000, 768)
    assert small.factory == "IVF1024,PQ128x4fs" and small.bytes_per_vector <= 1536 / 16
    assert (small.nprobe, small.rerank_factor, small.min_rerank) == (16, 250, 1000)
    # Lists: the power of two nearest 4 sqrt(N), at most 1,024 and N / 39; `nlist=` overrides.
    assert plan_compressed_index(10_000, 768).nlist == 256 and plan_compressed_index(2_000, 64).nlist == 51
    assert plan_compressed_index(100_000_000, 768).factory == "IVF1024,PQ128x4fs"
    assert plan_compressed_index(100_000_000, 768, nlist=16384).factory == "IVF16384,PQ128x4fs"
    with pytest.raises(ValueError, match="`nlist` must be an integer"):
        plan_compressed_index(1000, 768, nlist=0)
    tight = plan_compressed_index(1_000_000, 768, "40MB")
    assert tight.m < small.m and tight.memory_bytes <= parse_memory_size("40MB")
    with pytest.raises(ValueError, match="cannot hold 1000000 compressed vectors"):
        plan_compressed_index(1_000_000, 768, "1MB")
    with pytest.raises(ValueError, match="is not a size"):
        parse_memory_size("lots")


def test_format_1_folders_load_and_upgrade(tmp_path):
    embeddings = torch.randn(5, 8)
    folder = tmp_path / "old.index"
    folder.mkdir()
    save_file({"embeddings": embeddings}, str(folder / "embeddings.safetensors"))
    info = {"format": "hf-cir-index", "version": 1, "model": "m", "embedding_dim": 8, "root": str(tmp_path),
            "paths": [f"{i}.png" for i in range(5)], "skipped": {"x.txt": "not an image"}}  # fmt: skip
    (folder / "index.json").write_text(json.dumps(info))
    old = GalleryIndex.load(folder)
    assert old.paths == info["paths"] and old._table is None
    before = old.search(embeddings[:2], k=3)
    upgraded = GalleryIndex.upgrade(folder)
    assert (folder / "manifest.json").is_file() and not (folder / "index.json").exists()
    assert upgraded.info["version"] == 2 and upgraded.skipped == {"x.txt": "not an image"}
    torch.testing.assert_close(upgraded.embeddings, embeddings, rtol=1e-6, atol=1e-6)
    assert [[h.path for h in hits] for hits in upgraded.search(embeddings[:2], k=3)] == [
        [h.path for h in hits] for hits in before
    ]
    assert ShardedEmbeddings.open(folder, 1).dim == 8
