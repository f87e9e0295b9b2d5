# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""CompoDiff sampling: the cached-context fast path against the plain recompute-everything path, in one run.

For each prior size (full: 768-d, 12 layers, text 1280, random weights; tiny), batch size and samples per prompt,
the script runs `CompoDiffPipeline` on precomputed conditions (a reference image embedding, 77 text hidden states,
the negative prompt's) with 10 steps twice with the same seed: `pipe.use_context_cache = False` (the baseline: it
recomputes the text projection, the mask MLP and every block's cross-attention keys/values at every step, for every
sample and guidance branch, as the reference sampler does) and the default fast path. It prints both times, the
ratio, the largest output difference, and the *bound*: the plain time divided by the time of the per-step work that
no caching removes (at every step, over all rows and both tokens: every block's self-attention projections,
cross-attention query and output projections and feed-forward matrix products), timed as bare `F.linear` calls of
the same shapes. The ratio cannot exceed the bound by much (the fast path's last block computes only the read-out
token, which the bound does not credit).

    python benchmarks/bench_compodiff.py                           # full + tiny, batch 1/32, 2/4 samples, CPU fp32
    python benchmarks/bench_compodiff.py --sizes full --configs 1x4 32x2
    python benchmarks/bench_compodiff.py --device cuda --dtypes float16 bfloat16
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchutils import (  # noqa: E402
    format_table,
    machine_description,
    measure,
    parse_batch_configs,
    parse_dtype,
    synchronize,
    write_json,
)

from hf_cir import CompoDiffPipeline, CompoDiffPriorTransformer, CompoDiffScheduler  # noqa: E402

PRIOR_SIZES = {
    # The released CompoDiff prior (ViT-L/14 image space, OpenCLIP bigG text hidden states): ~140M parameters.
    "full": {"embedding_dim": 768, "num_layers": 12, "text_embed_dim": 1280},
    "tiny": {
        "embedding_dim": 64,
        "num_layers": 2,
        "num_attention_heads": 2,
        "attention_head_dim": 32,
        "num_cross_attention_heads": 2,
        "text_embed_dim": 64,
        "mask_size": 8,
    },
}
TARGETS = {(1, 4): 3.0, (32, 2): 3.5}  # the targets for the full-size prior on CPU
TEXT_LENGTH = 77


def build_pipeline(size: str, device: str, dtype: torch.dtype, seed: int = 0) -> CompoDiffPipeline:
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # `.to(dtype)` warns about keeping no modules in float32
    torch.manual_seed(seed)
    prior = CompoDiffPriorTransformer(**PRIOR_SIZES[size]).to(device=device).eval()
    if dtype != torch.float32:
        prior = prior.to(dtype=dtype)
    pipe = CompoDiffPipeline(prior=prior, scheduler=CompoDiffScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def make_conditions(pipe: CompoDiffPipeline, batch: int, seed: int = 1) -> dict:
    config = pipe.prior.config
    generator = torch.Generator().manual_seed(seed)
    device, dtype = pipe.prior.device, pipe.prior.dtype
    return {
        "prompt_embeds": torch.randn(batch, TEXT_LENGTH, config.text_embed_dim, generator=generator).to(device, dtype),
        "negative_prompt_embeds": torch.randn(1, TEXT_LENGTH, config.text_embed_dim, generator=generator).to(
            device, dtype
        ),
        "image_embeds": torch.randn(batch, config.embedding_dim, generator=generator).to(device, dtype),
    }


def irreducible_linears(prior: CompoDiffPriorTransformer) -> list[torch.nn.Linear]:
    """Per-step matrix products that depend on the step: all but the cross-attention key/value projection."""
    layers = []
    for block in prior.transformer_blocks:
        layers += [block.self_attn.to_q, block.self_attn.to_kv, block.self_attn.to_out]
        layers += [block.cross_attn.to_q, block.cross_attn.to_out]
        layers += [block.ff.proj_in, block.ff.proj_out]
    return layers


def time_irreducible_step(prior, rows: int, tokens: int, repeats: int) -> float:
    """Seconds of one step's step-dependent matrix products over `rows` x `tokens` token vectors (best of repeats)."""
    layers = irreducible_linears(prior)
    device, dtype = prior.device, prior.dtype
    inputs = {
        layer.in_features: torch.randn(rows * tokens, layer.in_features, device=device, dtype=dtype)
        for layer in layers
    }

    @torch.no_grad()
    def step():
        for layer in layers:
            F.linear(inputs[layer.in_features], layer.weight)

    return measure(step, repeats=repeats, device=device).best


def run_config(pipe, batch: int, samples: int, steps: int, repeats: int, seed: int) -> dict:
    conditions = make_conditions(pipe, batch)
    device = pipe.prior.device

    def sample(cached: bool):
        pipe.use_context_cache = cached
        generator = torch.Generator(device="cpu").manual_seed(seed)
        with torch.no_grad():
            return pipe(
                num_inference_steps=steps,
                num_samples_per_prompt=samples,
                generator=generator,
                **conditions,
            ).image_embeds

    outputs = {}

    def timed(cached: bool):
        outputs[cached] = sample(cached)

    # Interleave the two paths so that other load on the machine hits both alike.
    warmup = 1 if repeats > 1 else 0
    fast = measure(lambda: timed(True), repeats=repeats, warmup=warmup, device=device)
    plain = measure(lambda: timed(False), repeats=repeats, warmup=warmup, device=device)
    pipe.use_context_cache = True
    difference = (outputs[True].float() - outputs[False].float()).abs().max().item()
    scale = outputs[False].float().abs().max().item()
    # Network evaluations per call and rows per evaluation in the plain path (3 guidance branches).
    pipe.scheduler.set_timesteps(steps, device=device)
    evaluations = len(pipe.scheduler.timesteps)
    irreducible = evaluations * time_irreducible_step(pipe.prior, 3 * batch * samples, 2, repeats=max(3, repeats))
    return {
        "plain s": plain.best,
        "fast s": fast.best,
        "ratio": plain.best / fast.best,
        "bound": plain.best / irreducible,
        "irreducible s": irreducible,
        "max abs diff": difference,
        "max abs out": scale,
        "evaluations": evaluations,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["full", "tiny"], choices=sorted(PRIOR_SIZES))
    parser.add_argument(
        "--configs", nargs="+", default=["1x2", "1x4", "32x2", "32x4"], help="BATCHxSAMPLES per prompt"
    )
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtypes", nargs="+", default=["float32"])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per path (batch < 8)")
    parser.add_argument("--repeats-large", type=int, default=1, help="timed runs per path for batch >= 8, full size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    configs = parse_batch_configs(parser, args.configs)
    dtypes = [parse_dtype(name) for name in args.dtypes]
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda but no CUDA device is available")

    machine = machine_description()
    print(f"# CompoDiff sampling, {args.steps} steps, plain (recompute everything) vs cached context, {args.device}")
    print("# " + ", ".join(f"{key}={value}" for key, value in machine.items()), flush=True)
    rows = []
    for size in args.sizes:
        for dtype in dtypes:
            pipe = build_pipeline(size, args.device, dtype, seed=args.seed)
            parameters = sum(p.numel() for p in pipe.prior.parameters())
            for batch, samples in configs:
                repeats = args.repeats_large if (size == "full" and batch >= 8) else args.repeats
                result = run_config(pipe, batch, samples, args.steps, repeats, args.seed)
                target = TARGETS.get((batch, samples)) if size == "full" else None
                row = {
                    "prior": f"{size} ({parameters / 1e6:.1f}M)",
                    "dtype": str(dtype).replace("torch.", ""),
                    "batch": batch,
                    "samples": samples,
                    **result,
                    "target": f">= {target}x" if target else None,
                    "repeats": repeats,
                }
                rows.append(row)
                print(format_table([row]).splitlines()[-1], flush=True)
                synchronize(args.device)
            del pipe
    columns = [
        "prior",
        "dtype",
        "batch",
        "samples",
        "plain s",
        "fast s",
        "ratio",
        "bound",
        "target",
        "max abs diff",
        "max abs out",
        "repeats",
    ]
    print()
    print(format_table(rows, columns))
    print(
        "\nratio = plain / fast (best of `repeats` runs each); bound = plain / (evaluations x time of the per-step "
        "matrix products that caching cannot remove, over all rows)."
    )
    payload = {"benchmark": "compodiff", "machine": machine, "args": vars(args), "rows": rows}
    write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
