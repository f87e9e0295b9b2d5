# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""Run the benchmark suite one script after another (never two at once: they would disturb each other's timings).

Each script prints its table and writes `RESULTS/<name>.json`; this runner then prints every table again.

    python benchmarks/run_all.py                      # the full CPU suite (tens of minutes on 2 cores)
    python benchmarks/run_all.py --quick              # small sizes, a few minutes: a smoke run
    python benchmarks/run_all.py --only retrieval compodiff
    python benchmarks/run_all.py --device cuda --dtypes float16 bfloat16   # what benchmarks/gpu.sh runs

The training-throughput benchmark lives in `benchmarks/bench_training.py` (run it on its own).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from benchutils import format_table  # noqa: E402

SUITE = ("retrieval", "compodiff", "lincir", "query_latency")


def commands(args) -> dict[str, list[str]]:
    cpu = args.device == "cpu"
    dtypes = args.dtypes or (["float32", "float16"] if cpu else ["float16", "bfloat16", "float32"])
    model_dtypes = args.dtypes or (["float32"] if cpu else ["float16", "bfloat16", "float32"])
    threads = ["--threads", str(args.threads)] if args.threads else []
    retrieval = ["--device", args.device, "--dtypes", *dtypes]
    compodiff = ["--device", args.device, "--dtypes", *model_dtypes, *threads]
    lincir = ["--device", args.device, "--dtypes", *model_dtypes, *threads]
    latency = [*threads]
    if args.quick:
        retrieval += ["--sizes", "100000", "--repeats", "3", "--hnsw-max", "0", "--recall-queries", "50"]
        compodiff += ["--sizes", "tiny", "full", "--configs", "1x4", "--repeats", "2"]
        lincir += ["--batches", "1", "8", "--repeats", "5"]
        latency += ["--models", "lincir", "--repeats", "1"]
    if not cpu:
        retrieval += ["--no-faiss"]
    return {
        "retrieval": ["bench_retrieval.py", *retrieval],
        "compodiff": ["bench_compodiff.py", *compodiff],
        "lincir": ["bench_lincir.py", *lincir],
        "query_latency": ["bench_query_latency.py", *latency],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=SUITE, default=None, help="run only these benchmarks")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of every script")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtypes", nargs="+", default=None, help="model/index dtypes (default per device)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads for the model benchmarks")
    parser.add_argument("--results", default=str(HERE / "results"), help="folder of the JSON results")
    args = parser.parse_args(argv)
    selected = args.only or (SUITE if args.device == "cpu" else SUITE[:3])
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    failures = []
    for name in selected:
        script, *options = commands(args)[name]
        output = results / f"{name}.json"
        command = [sys.executable, str(HERE / script), *options, "--json", str(output)]
        print(f"\n$ {' '.join(command)}", flush=True)
        start = time.perf_counter()
        code = subprocess.call(command)
        print(f"# {name}: exit {code} after {time.perf_counter() - start:.0f} s", flush=True)
        if code:
            failures.append(name)
    print("\n# Summary")
    for name in selected:
        path = results / f"{name}.json"
        if name in failures or not path.exists():
            print(f"\n## {name}: FAILED")
            continue
        payload = json.loads(path.read_text())
        print(f"\n## {name}\n")
        print(format_table(payload["rows"]))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
