# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""LinCIR composed encoding against a plain CLIP text forward of the same batch, in one run.

The text tower has the size of CLIP ViT-L/14's (hidden 768, 12 layers, 12 heads, 77 positions, projection 768;
random weights); phi is LinCIR's (768 -> 3072 -> 3072 -> 768). Both paths encode the same 77-token texts ("a photo
of $ that ..."): the baseline with `CLIPTextModelWithProjection` as is, LinCIR with `get_composed_features` (phi of
an image embedding, swapped into the placeholder slot, one text forward). Target: composed <= 1.1x plain.

    python benchmarks/bench_lincir.py                   # batch 1 and 64, CPU float32
    python benchmarks/bench_lincir.py --device cuda --dtypes float16 bfloat16
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchutils import format_table, machine_description, parse_dtype, synchronize, write_json  # noqa: E402

MODIFICATIONS = [
    "is red and made of wood",
    "has two of them on a beach",
    "is shown at night in the rain",
    "as a cartoon drawing with a smiling face",
]


def vit_l14_text_config(**overrides):
    """CLIP ViT-L/14's text tower: hidden 768, 12 layers, 12 heads, 77 positions, projection 768."""
    from transformers import CLIPTextConfig

    values = dict(
        vocab_size=49408,
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        max_position_embeddings=77,
        projection_dim=768,
        hidden_act="quick_gelu",
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )
    values.update(overrides)
    return CLIPTextConfig(**values)


def vit_l14_vision_config(**overrides):
    """CLIP ViT-L/14's vision tower: 224 px, patch 14, hidden 1024, 24 layers, 16 heads, projection 768."""
    from transformers import CLIPVisionConfig

    values = dict(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        image_size=224,
        patch_size=14,
        projection_dim=768,
        hidden_act="quick_gelu",
    )
    values.update(overrides)
    return CLIPVisionConfig(**values)


def build_lincir(tokenizer, vision: str = "tiny", device: str = "cpu", dtype: torch.dtype = torch.float32, seed=0):
    """A random-weight LinCIR with a ViT-L/14-sized text tower; `vision="vit-l"` also makes the vision tower full size."""
    from hf_cir import LinCIRConfig, LinCIRModel

    torch.manual_seed(seed)
    vision_config = (
        vit_l14_vision_config()
        if vision == "vit-l"
        else vit_l14_vision_config(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    )
    placeholder_token_id = tokenizer.convert_tokens_to_ids(tokenizer.tokenize("$"))[0]
    config = LinCIRConfig(
        text_config=vit_l14_text_config(),
        vision_config=vision_config,
        projection_dim=768,
        placeholder_token_id=placeholder_token_id,
    )
    model = LinCIRModel(config).to(device=device, dtype=dtype).eval()
    return model


def clip_tokenizer():
    """The real CLIP tokenizer: from open-clip-torch's BPE file, else from the test fixture's tokenizer files."""
    from hf_cir.utils import build_clip_tokenizer

    try:
        return build_clip_tokenizer()
    except FileNotFoundError:  # no open-clip-torch (e.g. a GPU machine): the fixture ships the same tokenizer
        from transformers import CLIPTokenizer

        return CLIPTokenizer.from_pretrained(Path(__file__).resolve().parents[1] / "tests/fixtures/reference/clip")


def composed_texts(batch: int) -> list[str]:
    return [f"a photo of $ that {MODIFICATIONS[i % len(MODIFICATIONS)]}" for i in range(batch)]


def paired_timings(first, second, repeats: int, device: str):
    """Alternate the two calls `repeats` times (after one warm-up each) so that machine load hits both alike."""
    first(), second()
    synchronize(device)
    times = ([], [])
    for _ in range(repeats):
        for fn, bucket in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            fn()
            synchronize(device)
            bucket.append(time.perf_counter() - start)
    return times


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtypes", nargs="+", default=["float32"])
    parser.add_argument("--repeats", type=int, default=10, help="timed pairs at batch 1 (scaled down for big batches)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda but no CUDA device is available")
    tokenizer = clip_tokenizer()
    machine = machine_description()
    print(f"# LinCIR composed encoding vs plain CLIP text forward (ViT-L/14 text tower), {args.device}")
    print("# " + ", ".join(f"{key}={value}" for key, value in machine.items()), flush=True)
    rows = []
    for dtype in [parse_dtype(name) for name in args.dtypes]:
        model = build_lincir(tokenizer, device=args.device, dtype=dtype)
        for batch in args.batches:
            inputs = tokenizer(composed_texts(batch), padding="max_length", max_length=77, return_tensors="pt")
            input_ids = inputs.input_ids.to(args.device)
            image_embeds = torch.randn(batch, 768, generator=torch.Generator().manual_seed(batch)).to(
                args.device, dtype
            )

            @torch.no_grad()
            def plain(input_ids=input_ids, model=model):
                return model.text_model(input_ids=input_ids).text_embeds

            @torch.no_grad()
            def composed(input_ids=input_ids, image_embeds=image_embeds, model=model):
                return model.get_composed_features(input_ids=input_ids, image_embeds=image_embeds).pooler_output

            repeats = max(3, args.repeats // max(1, batch // 8)) if args.device == "cpu" else args.repeats
            plain_times, composed_times = paired_timings(plain, composed, repeats, args.device)
            ratio_best = min(composed_times) / min(plain_times)
            ratio_median = statistics.median(c / p for c, p in zip(composed_times, plain_times))
            row = {
                "dtype": str(dtype).replace("torch.", ""),
                "batch": batch,
                "plain text ms": 1e3 * min(plain_times),
                "composed ms": 1e3 * min(composed_times),
                "ratio (best/best)": ratio_best,
                "ratio (median of pairs)": ratio_median,
                "target": "<= 1.1x",
                "repeats": repeats,
            }
            rows.append(row)
            print(format_table([row]).splitlines()[-1], flush=True)
        model = None  # free it before the next dtype's model
    print()
    print(format_table(rows))
    payload = {"benchmark": "lincir", "machine": machine, "args": vars(args), "rows": rows}
    write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
