# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""Galleries of 1M and 10M synthetic clustered 768-d embeddings: exact float16 search against compressed IVF-PQ.

For each size the script writes the gallery in chunks to disk in the index format v2 (float16 embedding shards,
`hf_cir.retrieval.storage`; RAM holds one chunk at a time), then measures in the same run:

- the baseline, exact float16, searched the way `GalleryIndex` does it: `ExactIndex` over the float16 table in RAM
  up to `IN_RAM_EXACT_BYTES`, the memory-mapped block scan of `ShardedEmbeddings.search` beyond (bytes per vector,
  total size, ms per query); the top-10 of every query by one batched block scan is the ground truth;
- each compressed kind of `--kinds` (`hf_cir.retrieval.compressed`: IVF + 4-bit fast-scan PQ; `plan` is the index
  `plan_compressed_index` chooses, `m=M` the plan with `M` sub-quantisers, or a factory string such as
  `IVF1024,PQ128x4fs`), each at a few `nprobe` / re-rank sizes: bytes per vector and total size of the faiss file,
  build time, recall@10 against exact search after exact re-ranking from the stored float16 embeddings, and ms per
  query (one query at a time).

Build time is split into `train s` (k-means of the coarse quantiser plus the PQ codebooks, on `plan.train_size`
sampled rows) and `add s` (assigning and encoding every vector). Kinds of one size with the same coarse quantiser
share it: the first trains it, the others copy its centroids and train only their PQ codebooks, so their `train s`
is PQ training only and a standalone build of one of them costs the first one's k-means on top (`coarse s` and
`coarse quantiser` in the JSON). Each phase records the load average (`os.getloadavg`) at its start and end and the
peak resident memory of the process (anonymous and file-backed pages, sampled every 0.2 s) in the JSON, which is
rewritten after each kind.

Data: `clusters` centres drawn uniformly on the sphere; each vector is a centre plus Gaussian noise (cosine about
0.5 to its centre), normalised. Queries are fresh draws of the same mixture. Threads: `--threads` (default 2).

    python benchmarks/bench_index_scale.py --sizes 1000000 --kinds plan m=64 "IVF1024,PQ128x4fs"
    python benchmarks/bench_index_scale.py --sizes 10000000 --work-dir /big/disk --keep
    # later, on a quieter machine: re-time the queries of the kept galleries and indexes (build times are reused)
    python benchmarks/bench_index_scale.py --sizes 10000000 --work-dir /big/disk --keep --reuse
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import sys
import threading
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
COLUMNS = ["N", "kind", "params", "B/vector", "total MiB", "vs f16", "train s", "add s", "recall@10", "ms/query"]


class Memory:
    """Peak resident memory of this process (anonymous / file-backed pages, from /proc/self/status), sampled."""

    def __init__(self, interval: float = 0.2):
        self.peak = {"RssAnon": 0, "RssFile": 0, "VmRSS": 0}
        self.interval = interval
        threading.Thread(target=self._run, daemon=True).start()

    @staticmethod
    def now() -> dict[str, int]:
        values = {}
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                key, _, rest = line.partition(":")
                if key in ("RssAnon", "RssFile", "VmRSS"):
                    values[key] = int(rest.split()[0]) * 1024
        except OSError:
            pass
        return values

    def _run(self) -> None:
        while True:
            for key, value in self.now().items():
                self.peak[key] = max(self.peak[key], value)
                self.phase_peak[key] = max(self.phase_peak.get(key, 0), value)
            time.sleep(self.interval)

    phase_peak: dict[str, int] = {}

    def gib(self, values: dict[str, int]) -> dict[str, float]:
        return {f"{key} GiB": round(value / 2**30, 3) for key, value in values.items()}


MEMORY: Memory | None = None
PHASES: list[dict] = []


class phase:
    """Time a phase; record the load average at its start and end and its peak memory into `PHASES`."""

    def __init__(self, count: int, name: str):
        self.record = {"N": count, "phase": name}

    def __enter__(self):
        MEMORY.phase_peak = {}
        self.record["load at start"] = [round(x, 2) for x in os.getloadavg()]
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
        for key, value in MEMORY.now().items():
            MEMORY.phase_peak[key] = max(MEMORY.phase_peak.get(key, 0), value)
        self.record["seconds"] = round(self.seconds, 2)
        self.record["load at end"] = [round(x, 2) for x in os.getloadavg()]
        self.record.update({f"peak {k}": v for k, v in MEMORY.gib(MEMORY.phase_peak).items()})
        PHASES.append(self.record)
        print(f"  phase {self.record}", flush=True)


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


def kind_plan(kind: str, count: int, dim: int):
    """`plan` (what `plan_compressed_index` chooses), `m=64` (the plan with 64 sub-quantisers) or a faiss factory
    string `IVF{nlist}[_HNSW32],PQ{m}x4fs` (the plan's rules for `nprobe`, re-rank and train size at that `nlist`)."""
    if kind == "plan":
        return plan_compressed_index(count, dim)
    if kind.startswith("m="):
        return plan_compressed_index(count, dim, m=int(kind[2:]))
    match = re.fullmatch(r"IVF(\d+)(_HNSW32)?,PQ(\d+)x4fs", kind)
    if not match:
        raise ValueError(f"Unknown index kind {kind!r}.")
    nlist, m = int(match.group(1)), int(match.group(3))
    plan = plan_compressed_index(count, dim, m=m)
    return dataclasses.replace(
        plan,
        factory=kind,
        nlist=nlist,
        nprobe=min(nlist, max(16, nlist // 64)),
        train_size=int(min(count, max(40 * nlist, 65_536), 500_000)),
        memory_bytes=int(nlist * dim * 4 * (2 if match.group(2) else 1) + count * plan.bytes_per_vector),
    )


def share_coarse_quantizer(sample: np.ndarray, plan, centroids: np.ndarray, seed: int):
    """An index of `plan` whose coarse quantiser holds `centroids` (no k-means): only the PQ codebooks train."""
    import faiss

    index = faiss.index_factory(sample.shape[1], plan.factory, faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.extract_index_ivf(index)
    ivf.cp.seed = seed
    ivf.quantizer.add(np.ascontiguousarray(centroids, dtype=np.float32))  # a trained quantiser: faiss skips k-means
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    ivf.nprobe = plan.nprobe
    return index


def bench_size(args, count: int, save) -> list[dict]:
    """The rows of one gallery size; `save(rows)` is called after each kind (the JSON grows as the run goes)."""
    import faiss

    folder = Path(args.work_dir) / f"gallery-{count}"
    with phase(count, "write gallery (skipped when already on disk)"):
        table, centres = write_gallery(folder, count, args.dim, args.clusters, args.noise, args.seed)
    print(f"[{count}] gallery on disk ({table.nbytes / 2**30:.2f} GiB)", flush=True)
    queries = torch.from_numpy(mixture(args.queries, centres, args.noise, seed=args.seed + 10**6))

    with phase(count, f"ground truth: exact block scan, {len(queries)} queries batched") as timer:
        _, truth = table.search(queries, 10)
    truth_seconds = timer.seconds
    f16_bytes = table.nbytes
    with phase(count, "exact float16 timing"):
        if f16_bytes <= IN_RAM_EXACT_BYTES:  # what `GalleryIndex` does: the float16 table in RAM, `ExactIndex`
            with ExactIndex(table.to_tensor(keep_dtype=True), dtype=torch.float16) as exact:
                exact_ms = per_query_ms(lambda q: exact.search(q, 10), queries[:20])
            how = "ExactIndex, float16 in RAM"
        else:
            exact_ms = per_query_ms(lambda q: table.search(q, 10), queries[: args.exact_timing_queries])
            how = "memory-mapped block scan"
    rows = [
        {
            "N": count,
            "kind": "exact float16 (baseline)",
            "params": how,
            "B/vector": f16_bytes / count,
            "total MiB": f16_bytes / 2**20,
            "vs f16": 1.0,
            "train s": 0.0,
            "add s": 0.0,
            "recall@10": 1.0,
            "ms/query": exact_ms,
        }
    ]
    print(f"[{count}] exact: {exact_ms:.0f} ms/query; ground truth of {len(queries)} in {truth_seconds:.0f} s")
    save(rows)

    base = plan_compressed_index(count, args.dim)
    plans = [kind_plan(kind, count, args.dim) for kind in args.kinds]
    plans = [plan for n, plan in enumerate(plans) if plan.factory not in {p.factory for p in plans[:n]}]
    trained: dict[str, tuple[np.ndarray, float, str]] = {}  # coarse quantiser -> (centroids, seconds, factory)
    for plan in plans:
        coarse = plan.factory.split(",")[0]
        path = folder / f"{plan.factory.replace(',', '_')}.faiss"
        build_path = path.with_suffix(".build.json")
        if args.reuse and path.is_file() and build_path.is_file():
            build = json.loads(build_path.read_text())
            build["reused"] = True
        else:
            rng = np.random.default_rng(args.seed)
            sample = table.rows(np.sort(rng.choice(count, plan.train_size, replace=False))).numpy()
            with phase(count, f"train {plan.factory}") as timer:
                if coarse not in trained:
                    index = train_compressed_index(sample, plan, seed=args.seed)
                else:
                    index = share_coarse_quantizer(sample, plan, trained[coarse][0], args.seed)
            del sample
            if coarse not in trained:
                quantizer = faiss.extract_index_ivf(index).quantizer
                trained[coarse] = (quantizer.reconstruct_n(0, quantizer.ntotal), timer.seconds, plan.factory)
            train_seconds = timer.seconds
            with phase(count, f"add {count} to {plan.factory}") as timer:
                add_rows(index, table.blocks(CHUNK))
            own = trained[coarse][2] == plan.factory
            build = {
                "train s": train_seconds,
                "add s": timer.seconds,
                "coarse s": trained[coarse][1],
                "coarse quantiser": "trained" if own else f"shared with {trained[coarse][2]}",
                "reused": False,
            }
            CompressedIndex(index, plan.to_dict(), table).save(path)
            build_path.write_text(json.dumps(build))
            del index
        size = path.stat().st_size
        loaded = CompressedIndex.load(path, table, mmap=True)
        for nprobe in sorted({plan.nprobe * f for f in args.nprobe_factors}):
            loaded.nprobe = min(nprobe, plan.nlist)
            for rerank in args.rerank:
                with phase(count, f"query {plan.factory} nprobe={loaded.nprobe} rerank={rerank}"):
                    _, found = loaded.search(queries, 10, rerank=rerank)
                    ms = per_query_ms(lambda q, r=rerank, ix=loaded: ix.search(q, 10, rerank=r), queries)
                row = {
                    "N": count,
                    "kind": "IVF-PQ fast-scan + re-rank" + (" (plan)" if plan.factory == base.factory else ""),
                    "params": f"{plan.factory} nprobe={loaded.nprobe} rerank={rerank}",
                    "B/vector": size / count,
                    "total MiB": size / 2**20,
                    "vs f16": size / f16_bytes,
                    "train s": build["train s"],
                    "add s": build["add s"],
                    "coarse s": build["coarse s"],
                    "coarse quantiser": build["coarse quantiser"],
                    "build reused": build["reused"],
                    "recall@10": recall_at(found, truth),
                    "ms/query": ms,
                }
                rows.append(row)
                print(format_table([row], COLUMNS), flush=True)
        del loaded
        save(rows)
        if not args.keep:
            path.unlink()
            path.with_suffix(".json").unlink()
            build_path.unlink()
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    return rows


def main() -> None:
    global MEMORY
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument(
        "--noise", type=float, default=0.06, help="per-dimension noise std (cosine ~0.5 to the centre)"
    )
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--exact-timing-queries", type=int, default=3)
    parser.add_argument(
        "--kinds",
        nargs="+",
        default=["plan", "m=64"],
        help="compressed kinds, in order: `plan`, `m=M` (the plan with M sub-quantisers), or a factory string such "
        "as `IVF1024,PQ128x4fs`; kinds with the same coarse quantiser share it (trained once)",
    )
    parser.add_argument("--nprobe-factors", type=int, nargs="+", default=[1, 2], help="nprobe = plan's nprobe x f")
    parser.add_argument("--rerank", type=int, nargs="+", default=[100, 300])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", default="/tmp/hf-cir-bench-index-scale")
    parser.add_argument("--keep", action="store_true", help="keep the generated galleries and faiss indexes")
    parser.add_argument(
        "--reuse", action="store_true", help="use kept faiss indexes (and their recorded build times); re-time queries"
    )
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" / "index_scale.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import faiss

    faiss.omp_set_num_threads(args.threads)
    MEMORY = Memory()
    rows: list[dict] = []

    def save(current: list[dict]) -> None:
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
        simd = sorted({f for f in flags.split() if f.startswith(("avx", "f16c", "fma"))})
        machine = {**machine_description(), "cpu flags (SIMD)": simd, "faiss": faiss.__version__}
        ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
        memory = {"peak over the run": MEMORY.gib(MEMORY.peak), "RAM GiB": round(ram, 1)}
        payload = {"machine": machine, "settings": vars(args), "memory": memory, "phases": PHASES}
        write_json(args.json, {**payload, "rows": rows + current})

    for count in args.sizes:
        rows.extend(bench_size(args, count, save))
        save([])
    print(format_table(rows, COLUMNS))


if __name__ == "__main__":
    main()
