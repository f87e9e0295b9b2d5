# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""End-to-end latency of one composed query, broken down, for LinCIR and CompoDiff (random weights, full size).

One reference image (512x512) and one modification text, then top-10 search over a gallery of random normalised
embeddings (100k by default):

- LinCIR (ViT-L/14): preprocessing (image processor + tokenizer), image encoder (ViT-L/14 vision), phi, text
  encoder (ViT-L/14 text tower with the pseudo token), search.
- CompoDiff (ViT-L/14 image space, OpenCLIP ViT-bigG/14-sized text tower): preprocessing, image encoder (the same
  ViT-L/14 vision tower), text encoder (bigG-sized; the empty negative prompt is cached by the pipeline after the
  first call, as in a running service), prior (10 steps, cached-context fast path, and the plain path for
  comparison), search.

Each stage is timed on its own (best of `--repeats`), and the whole query is timed once more end to end.

    python benchmarks/bench_query_latency.py
    python benchmarks/bench_query_latency.py --models lincir --gallery-size 1000000 --gallery-dtype float16
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_lincir import build_lincir, clip_tokenizer, vit_l14_text_config  # noqa: E402
from bench_retrieval import random_unit_vectors  # noqa: E402
from benchutils import format_table, machine_description, measure, parse_dtype, write_json  # noqa: E402

from hf_cir.retrieval.search import ExactIndex  # noqa: E402

MODIFICATION = "is red and made of wood"


def image_processor():
    try:  # transformers 5 without torchvision: the PIL-backed processor, imported directly
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil as processor_class
    except ImportError:  # pragma: no cover - older transformers
        from transformers import CLIPImageProcessor as processor_class
    return processor_class(
        size={"shortest_edge": 224},
        crop_size={"height": 224, "width": 224},
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
    )


def bigg_text_config():
    """OpenCLIP ViT-bigG/14's text tower: hidden 1280, 32 layers, 20 heads, 77 positions."""
    return vit_l14_text_config(
        hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20, hidden_act="gelu"
    )


def add(rows, model, stage, timing, note=None):
    rows.append({"model": model, "stage": stage, "ms": timing.best_ms, "median ms": timing.median_ms, "note": note})
    print(format_table([rows[-1]]).splitlines()[-1], flush=True)


def bench_lincir(args, tokenizer, processor, picture, index, rows):
    model = build_lincir(tokenizer, vision="vit-l")
    repeats = args.repeats
    text = f"a photo of $ that {MODIFICATION}"

    def preprocess():
        return processor(images=picture, return_tensors="pt").pixel_values, tokenizer(
            [text], padding="max_length", max_length=77, return_tensors="pt"
        ).input_ids

    pixel_values, input_ids = preprocess()
    with torch.no_grad():
        image_embeds = model.get_image_features(pixel_values).pooler_output
        pseudo = model.get_pseudo_tokens(image_embeds)
        query = model.get_composed_features(input_ids=input_ids, image_embeds=image_embeds).pooler_output
        t_pre = measure(preprocess, repeats=repeats)
        t_image = measure(lambda: model.get_image_features(pixel_values), repeats=repeats)
        t_phi = measure(lambda: model.get_pseudo_tokens(image_embeds), repeats=repeats)
        t_text = measure(lambda: model.get_composed_features(input_ids=input_ids, image_embeds=image_embeds), repeats)
        t_plain = measure(lambda: model.text_model(input_ids=input_ids).text_embeds, repeats=repeats)
        normalized = torch.nn.functional.normalize(query, dim=-1)
        t_search = measure(lambda: index.search(normalized, 10), repeats=repeats)

        def end_to_end():
            pixels, ids = preprocess()
            embeds = model.get_image_features(pixels).pooler_output
            composed = model.get_composed_features(input_ids=ids, image_embeds=embeds).pooler_output
            return index.search(torch.nn.functional.normalize(composed, dim=-1), 10)

        t_total = measure(end_to_end, repeats=max(1, repeats // 2))
    assert pseudo.shape == (1, 768)
    add(rows, "LinCIR", "preprocess (image + tokenizer)", t_pre)
    add(rows, "LinCIR", "image encoder (ViT-L/14)", t_image)
    add(rows, "LinCIR", "phi", t_phi)
    add(rows, "LinCIR", "text encoder + phi (composed)", t_text, f"plain text forward {t_plain.best_ms:.0f} ms")
    add(rows, "LinCIR", f"search top-10 ({index.ntotal:,}, {str(index.dtype)[6:]})", t_search)
    add(
        rows,
        "LinCIR",
        "end to end",
        t_total,
        f"sum of stages {sum(t.best_ms for t in (t_pre, t_image, t_text, t_search)):.0f} ms",
    )
    return model.vision_model


def bench_compodiff(args, tokenizer, processor, picture, index, rows, vision_model):
    from transformers import CLIPTextModel

    from hf_cir import CompoDiffPipeline, CompoDiffPriorTransformer, CompoDiffScheduler

    torch.manual_seed(0)
    text_encoder = CLIPTextModel(bigg_text_config()).eval()
    prior = CompoDiffPriorTransformer(embedding_dim=768, num_layers=12, text_embed_dim=1280).eval()
    pipe = CompoDiffPipeline(
        prior=prior,
        scheduler=CompoDiffScheduler(),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        image_encoder=vision_model,
        image_processor=processor,
    )
    pipe.set_progress_bar_config(disable=True)
    repeats = args.repeats
    samples = args.samples
    with torch.no_grad():
        pixel_values = processor(images=picture, return_tensors="pt").pixel_values
        image_embeds = pipe.encode_image(pixel_values)
        prompt_embeds, negative_embeds = pipe.encode_prompt(MODIFICATION, "")  # caches the negative prompt
        t_pre = measure(lambda: processor(images=picture, return_tensors="pt").pixel_values, repeats=repeats)
        t_image = measure(lambda: pipe.encode_image(pixel_values), repeats=repeats)
        t_text = measure(lambda: pipe.encode_prompt(MODIFICATION, ""), repeats=repeats)

        def sample(cached):
            pipe.use_context_cache = cached
            return pipe(
                prompt_embeds=prompt_embeds,
                negative_prompt_embeds=negative_embeds,
                image_embeds=image_embeds,
                num_inference_steps=10,
                num_samples_per_prompt=samples,
                generator=torch.Generator().manual_seed(0),
            ).image_embeds

        t_prior = measure(lambda: sample(True), repeats=repeats)
        t_prior_plain = measure(lambda: sample(False), repeats=max(1, repeats // 2))
        pipe.use_context_cache = True
        query = torch.nn.functional.normalize(sample(True), dim=-1)
        t_search = measure(lambda: index.search(query, 10), repeats=repeats)

        def end_to_end():
            embeds = pipe(
                MODIFICATION,
                image=picture,
                num_inference_steps=10,
                num_samples_per_prompt=samples,
                generator=torch.Generator().manual_seed(0),
            ).image_embeds
            return index.search(torch.nn.functional.normalize(embeds, dim=-1), 10)

        t_total = measure(end_to_end, repeats=max(1, repeats // 2))
    add(rows, "CompoDiff", "preprocess (image)", t_pre)
    add(rows, "CompoDiff", "image encoder (ViT-L/14)", t_image)
    add(rows, "CompoDiff", "text encoder (bigG-sized, negative cached)", t_text, "includes tokenizer")
    add(
        rows,
        "CompoDiff",
        f"prior, 10 steps, {samples} samples (cached context)",
        t_prior,
        f"plain path {t_prior_plain.best_ms:.0f} ms ({t_prior_plain.best / t_prior.best:.2f}x)",
    )
    add(rows, "CompoDiff", f"search top-10 ({index.ntotal:,}, {str(index.dtype)[6:]})", t_search)
    add(
        rows,
        "CompoDiff",
        "end to end",
        t_total,
        f"sum of stages {sum(t.best_ms for t in (t_pre, t_image, t_text, t_prior, t_search)):.0f} ms",
    )


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["lincir", "compodiff"], choices=["lincir", "compodiff"])
    parser.add_argument("--gallery-size", type=int, default=100_000)
    parser.add_argument("--gallery-dtype", default="float32")
    parser.add_argument("--samples", type=int, default=4, help="CompoDiff samples per prompt")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    machine = machine_description()
    print("# One composed query end to end, CPU float32, random weights")
    print("# " + ", ".join(f"{key}={value}" for key, value in machine.items()), flush=True)
    tokenizer = clip_tokenizer()
    processor = image_processor()
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8))
    index = ExactIndex(random_unit_vectors(args.gallery_size, 768, seed=0), dtype=parse_dtype(args.gallery_dtype))
    rows: list[dict] = []
    vision_model = None
    if "lincir" in args.models:
        vision_model = bench_lincir(args, tokenizer, processor, picture, index, rows)
    if "compodiff" in args.models:
        if vision_model is None:
            from bench_lincir import vit_l14_vision_config
            from transformers import CLIPVisionModelWithProjection

            vision_model = CLIPVisionModelWithProjection(vit_l14_vision_config()).eval()
        bench_compodiff(args, tokenizer, processor, picture, index, rows, vision_model)
    print()
    print(format_table(rows))
    payload = {"benchmark": "query_latency", "machine": machine, "args": vars(args), "rows": rows}
    write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
