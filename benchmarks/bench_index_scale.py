# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""Galleries of 1M and 10M synthetic clustered 768-d embeddings: exact float16 search against compressed IVF-PQ.

For each size the script writes the gallery in chunks to disk in the index format v2 (float16 embedding shards,
`hf_cir.retrieval.storage`; RAM holds one chunk at a time), then measures in the same run:

- the baseline, exact float16: the memory-mapped block scan of `ShardedEmbeddings.search` (bytes per vector,
  total size, ms per query); its top-10 of every query is the ground truth;
- each compressed kind (`hf_cir.retrieval.compressed`: IVF + 4-bit fast-scan PQ, the plan chosen by
  `plan_compressed_index` and forced sub-quantiser counts), each at a few `nprobe` / re-rank sizes: bytes per vector
  and total size of the faiss file, build time (training + adding every vector), recall@10 against exact search
  after exact re-ranking from the stored float16 embeddings, and ms per query (one query at a time).

Data: `clusters` centres drawn uniformly on the sphere; each vector is a centre plus Gaussian noise (cosine about
0.5 to its centre), normalised. Queries are fresh draws of the same mixture. Threads: `--threads` (default 2).

    python benchmarks/bench_index_scale.py --sizes 1000000
    python benchmarks/bench_index_scale.py --sizes 1000000 10000000 --work-dir /big/disk
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning (read when torch / faiss load OpenMP, so before they are imported):
# on a shared machine spinning faiss and torch thread teams slow each other down several times.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchutils import format_table, machine_description, write_json  # noqa: E402

from hf_cir.retrieval.compressed import (  # noqa: E402
    CompressedIndex,
    add_rows,
    plan_compressed_index,
    train_compressed_index,
)
from hf_cir.retrieval.index import IN_RAM_EXACT_BYTES  # noqa: E402
from hf_cir.retrieval.search import ExactIndex  # noqa: E402
from hf_cir.retrieval.storage import ShardedEmbeddings, write_shard  # noqa: E402

CHUNK = 250_000


def mixture(count: int, centres: np.ndarray, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(centres), count)
    vectors = centres[labels] + rng.standard_normal((count, centres.shape[1]), dtype=np.float32) * noise
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def write_gallery(folder: Path, count: int, dim: int, clusters: int, noise: float, seed: int) -> ShardedEmbeddings:
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    shards = -(-count // CHUNK)
    if not (folder / "embeddings" / f"{shards - 1:06d}.npy").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        for number in range(shards):
            n = min(CHUNK, count - number * CHUNK)
            ids = pa.array([f"{number * CHUNK + i:09d}" for i in range(n)])
            table = pa.table({"id": ids, "norm": pa.array(np.ones(n, dtype=np.float32))})
            write_shard(folder, number, mixture(n, centres, noise, seed + 1 + number), table, "float16")
    return ShardedEmbeddings.open(folder, shards), centres


def recall_at(found: torch.Tensor, truth: torch.Tensor, k: int = 10) -> float:
    hits = [len(set(a[:k].tolist()) & set(b[:k].tolist())) for a, b in zip(found, truth)]
    return float(np.mean(hits)) / k


def per_query_ms(fn, queries: torch.Tensor) -> float:
    fn(queries[:1])  # warm-up
    start = time.perf_counter()
    for row in range(len(queries)):
        fn(queries[row : row + 1])
    return 1e3 * (time.perf_counter() - start) / len(queries)


def bench_size(args, count: int) -> list[dict]:
    folder = Path(args.work_dir) / f"gallery-{count}"
    start = time.perf_counter()
    table, centres = write_gallery(folder, count, args.dim, args.clusters, args.noise, args.seed)
    print(
        f"[{count}] gallery on disk in {time.perf_counter() - start:.0f} s ({table.nbytes / 2**30:.2f} GiB)",
        flush=True,
    )
    queries = torch.from_numpy(mixture(args.queries, centres, args.noise, seed=args.seed + 10**6))

    start = time.perf_counter()
    _, truth = table.search(queries, 10)
    truth_seconds = time.perf_counter() - start
    exact_queries = queries[: args.exact_timing_queries]
    f16_bytes = table.nbytes
    if f16_bytes <= IN_RAM_EXACT_BYTES:  # what `GalleryIndex` does: the float16 table in RAM, `ExactIndex`
        with ExactIndex(table.to_tensor(keep_dtype=True), dtype=torch.float16) as exact:
            exact_ms = per_query_ms(lambda q: exact.search(q, 10), queries[:20])
        how = "ExactIndex, float16 in RAM"
    else:
        exact_ms = per_query_ms(lambda q: table.search(q, 10), exact_queries)
        how = "memory-mapped block scan"
    rows = [
        {
            "N": count,
            "kind": "exact float16 (baseline)",
            "params": how,
            "B/vector": f16_bytes / count,
            "total MiB": f16_bytes / 2**20,
            "vs f16": 1.0,
            "build s": 0.0,
            "recall@10": 1.0,
            "ms/query": exact_ms,
        }
    ]
    print(
        f"[{count}] exact: {exact_ms:.0f} ms/query; ground truth of {len(queries)} queries in {truth_seconds:.0f} s",
        flush=True,
    )

    plans = [plan_compressed_index(count, args.dim)] + [
        plan_compressed_index(count, args.dim, m=m)
        for m in args.extra_m
        if m != plan_compressed_index(count, args.dim).m
    ]
    for plan in plans:
        start = time.perf_counter()
        rng = np.random.default_rng(args.seed)
        sample_rows = np.sort(rng.choice(count, plan.train_size, replace=False))
        index = train_compressed_index(table.rows(sample_rows).numpy(), plan, seed=args.seed)
        add_rows(index, table.blocks(CHUNK))
        build_seconds = time.perf_counter() - start
        path = folder / f"{plan.factory.replace(',', '_')}.faiss"
        compressed = CompressedIndex(index, plan.to_dict(), table)
        compressed.save(path)
        size = path.stat().st_size
        del compressed, index
        loaded = CompressedIndex.load(path, table, mmap=True)
        for nprobe in sorted({plan.nprobe, 2 * plan.nprobe}):
            loaded.nprobe = min(nprobe, plan.nlist)
            for rerank in args.rerank:
                _, found = loaded.search(queries, 10, rerank=rerank)
                row = {
                    "N": count,
                    "kind": "IVF-PQ fast-scan + re-rank",
                    "params": f"{plan.factory} nprobe={loaded.nprobe} rerank={rerank}",
                    "B/vector": size / count,
                    "total MiB": size / 2**20,
                    "vs f16": size / f16_bytes,
                    "build s": build_seconds,
                    "recall@10": recall_at(found, truth),
                    "ms/query": per_query_ms(lambda q, r=rerank, ix=loaded: ix.search(q, 10, rerank=r), queries),
                }
                rows.append(row)
                print(format_table([row]), flush=True)
        path.unlink()
        path.with_suffix(".json").unlink()
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument(
        "--noise", type=float, default=0.06, help="per-dimension noise std (cosine ~0.5 to the centre)"
    )
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--exact-timing-queries", type=int, default=3)
    parser.add_argument("--extra-m", type=int, nargs="*", default=[64, 192], help="other PQ sub-quantiser counts")
    parser.add_argument("--rerank", type=int, nargs="+", default=[100, 300])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", default="/tmp/hf-cir-bench-index-scale")
    parser.add_argument("--keep", action="store_true", help="keep the generated galleries")
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" / "index_scale.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import faiss

    faiss.omp_set_num_threads(args.threads)
    rows = []
    for count in args.sizes:
        rows.extend(bench_size(args, count))
        write_json(args.json, {"machine": machine_description(), "settings": vars(args), "rows": rows})
    print(format_table(rows))


if __name__ == "__main__":
    main()
