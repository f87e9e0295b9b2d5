# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""Top-10 search over random normalised embeddings: exact torch scans, faiss flat, IVF and HNSW, side by side.

For each gallery size the script measures, in the same run:
- the machine's memory read bandwidth (a streaming sum over the float32 gallery, best of several passes),
- `hf_cir.retrieval.search.ExactIndex` in float32 and float16 (one query; a batch of 32), and the plain
  `torch.topk(queries @ gallery.T)` baseline,
- `FaissIndex` flat, IVF (a sweep of `nprobe`) and HNSW (a sweep of `ef_search`), with recall@10 against the exact
  float32 top-10 for two query sets: independent random queries (the hardest case for an approximate index: the
  data has no structure) and "near" queries (a gallery item plus noise, cosine ~0.7 to it, as when the target is in
  the gallery).

Scan bandwidth = bytes of stored embeddings / one-query latency; "% bw" relates it to the measured read bandwidth.

    python benchmarks/bench_retrieval.py                      # 100k and 1M, CPU
    python benchmarks/bench_retrieval.py --sizes 100000 --json out.json
    python benchmarks/bench_retrieval.py --device cuda --dtypes float16 bfloat16 float32 --no-faiss
"""

from __future__ import annotations

import argparse
import gc
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchutils import format_table, machine_description, measure, parse_dtype, read_bandwidth, write_json  # noqa: E402

from hf_cir.retrieval.search import ExactIndex, FaissIndex, is_faiss_available  # noqa: E402


def random_unit_vectors(n: int, dim: int, seed: int, device: str = "cpu", block: int = 65536) -> torch.Tensor:
    """`n` random unit vectors, generated block by block (no second full-size temporary)."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    out = torch.empty(n, dim, device=device)
    for start in range(0, n, block):
        rows = torch.randn(min(block, n - start), dim, generator=generator)
        out[start : start + rows.shape[0]] = torch.nn.functional.normalize(rows, dim=-1)
    return out


def clustered_unit_vectors(
    n: int, dim: int, seed: int, clusters: int = 1000, spread: float = 0.75, device: str = "cpu", block: int = 65536
) -> torch.Tensor:
    """Unit vectors around `clusters` random centres (cosine ~0.8 to their centre): structured like real embeddings."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(clusters, dim, generator=generator), dim=-1)
    out = torch.empty(n, dim, device=device)
    for start in range(0, n, block):
        rows = min(block, n - start)
        members = centres[torch.randint(0, clusters, (rows,), generator=generator)]
        noise = torch.randn(rows, dim, generator=generator) * (spread / math.sqrt(dim))
        out[start : start + rows] = torch.nn.functional.normalize(members + noise, dim=-1)
    return out


def near_queries(gallery: torch.Tensor, count: int, seed: int, noise: float = 1.0) -> torch.Tensor:
    """Gallery items plus isotropic noise of norm ~`noise` (cosine ~1/sqrt(1+noise^2) to the item)."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    picks = torch.randint(0, gallery.shape[0], (count,), generator=generator)
    dim = gallery.shape[1]
    perturbation = torch.randn(count, dim, generator=generator) * (noise / math.sqrt(dim))
    return torch.nn.functional.normalize(gallery[picks].cpu() + perturbation, dim=-1).to(gallery.device)


def recall_at_k(approx: torch.Tensor, exact: torch.Tensor) -> float:
    """Mean over queries of |approx top-k ∩ exact top-k| / k."""
    hits = sum(len(set(a) & set(e)) for a, e in zip(approx.tolist(), exact.tolist()))
    return hits / exact.numel()


def same_top_k(approx: torch.Tensor, exact: torch.Tensor) -> float:
    """Fraction of queries whose ranked top-k lists are identical."""
    return (approx.cpu() == exact.cpu()).all(dim=1).float().mean().item()


def bench_size(n: int, args, rows: list[dict], notes: list[str]) -> None:
    device = args.device
    if args.data == "clustered":
        gallery = clustered_unit_vectors(n, args.dim, seed=args.seed, clusters=args.clusters, device=device)
    else:
        gallery = random_unit_vectors(n, args.dim, seed=args.seed, device=device)
    gallery_bytes32 = gallery.numel() * 4
    bandwidth = read_bandwidth(gallery, repeats=args.repeats)
    one = random_unit_vectors(1, args.dim, seed=args.seed + 1, device=device)
    batch = random_unit_vectors(32, args.dim, seed=args.seed + 2, device=device)
    recall_sets = {
        "random": random_unit_vectors(args.recall_queries, args.dim, seed=args.seed + 3, device=device),
        "near": near_queries(gallery, args.recall_queries, seed=args.seed + 4),
    }
    k = args.k
    exact32 = ExactIndex(gallery)  # float32 and contiguous: shares the gallery's memory
    reference = {name: exact32.search(queries, k)[1].cpu() for name, queries in recall_sets.items()}

    def add_row(method, params, build_s, single, batched, nbytes, approx_results):
        gbps = nbytes / single.best / 1e9 if nbytes else None
        row = {
            "N": f"{n:,}" + (" clustered" if args.data == "clustered" else ""),
            "method": method,
            "params": params,
            "build s": build_s,
            "1 query ms (best)": single.best_ms,
            "1 query ms (median)": single.median_ms,
            "batch 32 ms/query": batched.best_ms / 32 if batched is not None else None,
            "scan GB/s": gbps,
            "% of read bw": 100 * gbps / bandwidth if gbps else None,
        }
        for name, approx in approx_results.items():
            row[f"recall@{k} ({name})"] = recall_at_k(approx, reference[name])
        if "random" in approx_results:
            row[f"same top-{k} (random)"] = same_top_k(approx_results["random"], reference["random"])
        rows.append(row)
        print(format_table([row]).splitlines()[-1], flush=True)

    # Baseline: the plain full score matrix + topk, float32.
    single = measure(lambda: torch.topk(one @ gallery.T, k), repeats=args.repeats, device=device)
    add_row("torch q@G.T + topk (baseline)", "float32", None, single, None, gallery_bytes32, {})

    for dtype in args.dtypes:
        if dtype == torch.float32:
            index = exact32
        else:
            start = time.perf_counter()
            index = ExactIndex(gallery, dtype=dtype)
        build = 0.0 if dtype == torch.float32 else time.perf_counter() - start
        single = measure(lambda index=index: index.search(one, k), repeats=args.repeats, device=device)
        batched = measure(lambda index=index: index.search(batch, k), repeats=max(1, args.repeats // 2), device=device)
        approx = {name: index.search(queries, k)[1] for name, queries in recall_sets.items()}
        nbytes = gallery.numel() * index.embeddings.element_size()
        add_row("ExactIndex", str(dtype).replace("torch.", ""), build, single, batched, nbytes, approx)
        if dtype != torch.float32:
            del index
            gc.collect()
    # the read bandwidth again, after the scans: the best of both, so that the ratio is never flattered
    bandwidth = max(bandwidth, read_bandwidth(gallery, repeats=args.repeats))
    for row in rows:
        if row["N"].split()[0] == f"{n:,}" and row["scan GB/s"]:
            row["% of read bw"] = 100 * row["scan GB/s"] / bandwidth
    notes.append(f"N={n:,}: measured read bandwidth {bandwidth:.1f} GB/s (streaming sum over the float32 gallery)")

    if args.no_faiss or device != "cpu":
        return
    if not is_faiss_available():
        notes.append("faiss is not installed: faiss rows skipped (pip install hf-cir[faiss])")
        return

    def faiss_rows(kind, build_kwargs, sweep_name, sweep_values):
        start = time.perf_counter()
        index = FaissIndex(gallery, kind=kind, **build_kwargs)
        build = time.perf_counter() - start
        for value in sweep_values:
            if sweep_name:
                setattr(index, sweep_name, value)
            single = measure(lambda index=index: index.search(one, k), repeats=args.repeats)
            batched = measure(lambda index=index: index.search(batch, k), repeats=max(1, args.repeats // 2))
            approx = {name: index.search(queries, k)[1] for name, queries in recall_sets.items()}
            params = ", ".join(f"{key}={val}" for key, val in build_kwargs.items())
            if sweep_name:
                params = ", ".join(filter(None, [params, f"{sweep_name}={value}"]))
            nbytes = gallery_bytes32 if kind == "flat" else None
            add_row(f"FaissIndex {kind}", params or "-", build, single, batched, nbytes, approx)
            build = None
        index = None  # free it before the next index is built
        gc.collect()

    faiss_rows("flat", {}, None, [None])
    if n <= args.ivf_max:
        nlist = args.nlist or max(1, round(math.sqrt(n)))
        sweep = sorted({max(1, nlist // d) for d in (32, 8, 4, 2)} | {nlist})
        faiss_rows("ivf", {"nlist": nlist}, "nprobe", sweep)
    if n <= args.hnsw_max:
        faiss_rows("hnsw", {"m": args.hnsw_m, "ef_construction": args.ef_construction}, "ef_search", args.ef_search)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000], help="gallery sizes")
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float16"], help="ExactIndex storage dtypes")
    parser.add_argument("--device", default="cpu", help="device of the exact scans (faiss rows run on CPU only)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--recall-queries", type=int, default=100, help="queries per recall set")
    parser.add_argument("--no-faiss", action="store_true", help="exact scans only")
    parser.add_argument("--ivf-max", type=int, default=1_000_000, help="largest gallery that gets an IVF index")
    parser.add_argument("--nlist", type=int, default=None, help="IVF lists (default ~sqrt(N))")
    parser.add_argument("--hnsw-max", type=int, default=100_000, help="largest gallery that gets an HNSW index")
    parser.add_argument("--hnsw-m", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=40)
    parser.add_argument("--ef-search", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument(
        "--data",
        choices=["random", "clustered"],
        default="random",
        help="gallery: independent random unit vectors, or unit vectors around random cluster centres",
    )
    parser.add_argument("--clusters", type=int, default=1000, help="cluster centres of --data clustered")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    args.dtypes = [parse_dtype(name) for name in args.dtypes]
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda but no CUDA device is available")

    machine = machine_description()
    print(f"# Retrieval benchmark: top-{args.k}, {args.dim}-d {args.data} unit vectors, device {args.device}")
    print("# " + ", ".join(f"{key}={value}" for key, value in machine.items()), flush=True)
    rows: list[dict] = []
    notes: list[str] = []
    for n in args.sizes:
        bench_size(n, args, rows, notes)
        gc.collect()
    print()
    print(format_table(rows))
    for note in notes:
        print(f"- {note}")
    payload = {"benchmark": "retrieval", "machine": machine, "args": vars(args), "rows": rows, "notes": notes}
    write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
