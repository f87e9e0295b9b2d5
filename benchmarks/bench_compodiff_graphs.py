# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""CompoDiff sampling with the loop captured as one CUDA graph (`CapturedSamplingLoop`), beside the two eager paths.

For each dtype and batch x samples the script runs `CompoDiffPipeline` (full-size prior: 768-d, 12 layers, text
1280, 140M parameters, random weights; `CompoDiffScheduler`, 10 steps = 9 prior evaluations; precomputed
conditions, so only the prior runs) three ways with the same seed:

- reference: `pipe.use_context_cache = False`, which recomputes everything at every step for every row and
  guidance branch, as the reference sampler (navervision/CompoDiff) does;
- today: the default eager path (cached context, `pipe.sampling_loop = None`);
- captured: `pipe.sampling_loop = CapturedSamplingLoop()`: the first call captures (its time is the `capture s`
  column), the timed calls replay.

It prints the best time of each, the speed-ups, and every output's largest difference and smallest cosine against
the float32 output of today's path (the same weights and inputs, cast), plus the captured output's largest
difference against today's output in the same dtype (0 when the replay computes exactly the eager numbers).

    python benchmarks/bench_compodiff_graphs.py --device cuda            # the GPU table of benchmarks/README.md
    python benchmarks/bench_compodiff_graphs.py --device cpu --quick     # smoke run: tiny prior; captured falls back

On a CPU the captured path runs the ordinary loop (CUDA graphs need CUDA), so its column measures the fallback.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_compodiff import build_pipeline, make_conditions  # noqa: E402
from benchutils import (  # noqa: E402
    format_table,
    machine_description,
    measure,
    parse_batch_configs,
    parse_dtype,
    synchronize,
    write_json,
)

from hf_cir.pipelines.compodiff.captured_sampling import CapturedSamplingLoop  # noqa: E402

PATHS = ("reference", "today", "captured")


def sample(pipe, conditions, batch_samples, steps: int, seed: int) -> torch.Tensor:
    generator = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        return pipe(
            num_inference_steps=steps, num_samples_per_prompt=batch_samples[1], generator=generator, **conditions
        ).image_embeds.float()


def set_path(pipe, path: str, loop: CapturedSamplingLoop) -> None:
    pipe.use_context_cache = path != "reference"
    pipe.sampling_loop = loop if path == "captured" else None


def compare(output: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    difference = (output - reference).abs().max().item()
    cosine = torch.nn.functional.cosine_similarity(output, reference, dim=-1).min().item()
    return difference, cosine


def time_paths(pipe, loop, conditions, config, args):
    """`(outputs, timings, capture seconds)` of the three paths; the captured path's first call captures."""
    outputs, timings = {}, {}

    def run(path):
        outputs[path] = sample(pipe, conditions, config, args.steps, args.seed)

    set_path(pipe, "captured", loop)
    synchronize(args.device)
    start = time.perf_counter()
    run("captured")  # captures on CUDA
    synchronize(args.device)
    capture_seconds = time.perf_counter() - start
    for path in PATHS:  # a warm-up call, then the timed calls
        set_path(pipe, path, loop)
        timings[path] = measure(lambda path=path: run(path), repeats=args.repeats, warmup=1, device=args.device)
    set_path(pipe, "today", loop)
    return outputs, timings, capture_seconds


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float16", "bfloat16"])
    parser.add_argument("--configs", nargs="+", default=["1x4", "32x2"], help="BATCHxSAMPLES per prompt")
    parser.add_argument("--size", default="full", choices=["full", "tiny"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per path")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny prior, 2 repeats, 4 steps: a smoke run")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.repeats, args.steps = "tiny", 2, 4
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda but no CUDA device is available (use --device cpu for a smoke run)")
    configs = parse_batch_configs(parser, args.configs)
    dtypes = [parse_dtype(name) for name in args.dtypes]
    if torch.float32 not in dtypes:
        dtypes.insert(0, torch.float32)  # the outputs are compared with float32's
    dtypes.sort(key=lambda dtype: dtype != torch.float32)

    machine = machine_description()
    print(f"# CompoDiff sampling: reference / today / captured, {args.size} prior, {args.steps} steps, {args.device}")
    print("# " + ", ".join(f"{key}={value}" for key, value in machine.items()), flush=True)
    started = time.perf_counter()
    float32_outputs = {}
    rows = []
    for dtype in dtypes:
        pipe = build_pipeline(args.size, args.device, dtype, seed=args.seed)
        parameters = sum(p.numel() for p in pipe.prior.parameters())
        for config in configs:
            conditions = make_conditions(pipe, config[0])  # drawn in float32, then cast: the same inputs
            loop = CapturedSamplingLoop()
            outputs, timings, capture_seconds = time_paths(pipe, loop, conditions, config, args)
            if dtype == torch.float32:
                float32_outputs[config] = outputs["today"]
            reference = float32_outputs[config]
            row = {
                "prior": f"{args.size} ({parameters / 1e6:.1f}M)",
                "dtype": str(dtype).replace("torch.", ""),
                "batch": config[0],
                "samples": config[1],
                **{f"{path} s": timings[path].best for path in PATHS},
                "captured vs today": timings["today"].best / timings["captured"].best,
                "captured vs reference": timings["reference"].best / timings["captured"].best,
                "capture s": capture_seconds,
                "graphs": loop.replays > 0,
            }
            for path in PATHS:
                difference, cosine = compare(outputs[path], reference)
                row[f"{path} max abs diff vs fp32"] = difference
                row[f"{path} min cos vs fp32"] = cosine
            row["captured - today (same dtype)"] = (outputs["captured"] - outputs["today"]).abs().max().item()
            row["max abs out"] = reference.abs().max().item()
            rows.append(row)
            print(format_table([row]).splitlines()[-1], flush=True)
        del pipe
    columns = [
        "prior",
        "dtype",
        "batch",
        "samples",
        "reference s",
        "today s",
        "captured s",
        "captured vs today",
        "captured vs reference",
        "capture s",
        "graphs",
        "today max abs diff vs fp32",
        "captured max abs diff vs fp32",
        "captured min cos vs fp32",
        "captured - today (same dtype)",
        "reference max abs diff vs fp32",
        "max abs out",
    ]
    print()
    print(format_table(rows, columns))
    print(
        f"\nbest of {args.repeats} calls per path; `graphs` = the captured path replayed CUDA graphs (False: it ran "
        "the ordinary loop, as on a CPU); differences against the float32 output of today's path."
    )
    payload = {
        "benchmark": "compodiff_graphs",
        "machine": machine,
        "args": vars(args),
        "rows": rows,
        "wall_s": time.perf_counter() - started,
    }
    write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
