# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""Images per second of the embedding engine with 0, 1 and 2 DataLoader workers, against the model alone.

Same run, same model, same images (JPEG files written once to a temporary folder):
- "model alone": `RetrievalModel.encode_pixel_values` on pixel values prepared beforehand (no decoding, no
  preprocessing): the ceiling the data path should reach;
- "engine, N workers": `hf_cir.retrieval.engine.embed_source` over an `ImageFolderSource` (decoding and the
  model's image preprocessing in N DataLoader workers; 0 = in the main process), shards written to disk.

"model busy" = model-alone time / engine time. Defaults: the shipped toy LinCIR (tiny, so the data path dominates:
the hardest case for it), 512 images of 256x256. Pass `--model` for a real checkpoint and `--device cuda` on a GPU.

    python benchmarks/bench_embedding_throughput.py
    python benchmarks/bench_embedding_throughput.py --model random-vit-b32 --images 256 --batch-size 32
    python benchmarks/bench_embedding_throughput.py --model path/to/lincir --device cuda --images 4096
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchutils import format_table, machine_description, synchronize, write_json  # noqa: E402

from hf_cir.retrieval import load_retrieval_model  # noqa: E402
from hf_cir.retrieval.engine import embed_source, prepare_work_dir  # noqa: E402
from hf_cir.retrieval.sources import ImageFolderSource  # noqa: E402
from hf_cir.toy import toy_checkpoint  # noqa: E402
from hf_cir.utils.units import ProcessGroup  # noqa: E402

VIT_B32 = "random-vit-b32"


def random_vit_b32_lincir(folder: Path) -> str:
    """A LinCIR folder on a CLIP with a ViT-B/32-sized image tower (224 px, 12 x 768) and random weights, using the
    toy tokenizer: a model whose image encoder costs what a real one does on this machine."""
    from transformers import AutoTokenizer, CLIPConfig, CLIPImageProcessor, CLIPModel

    from hf_cir import LinCIRModel, LinCIRProcessor

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(toy_checkpoint("clip"))
    text = {"vocab_size": len(tokenizer), "hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12}
    vision = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12}
    config = CLIPConfig(
        text_config={**text, "num_attention_heads": 8, "max_position_embeddings": 77},
        vision_config={**vision, "image_size": 224, "patch_size": 32},
        projection_dim=512,
    )
    CLIPModel(config).save_pretrained(folder / "clip")
    tokenizer.save_pretrained(folder / "clip")
    CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}).save_pretrained(
        folder / "clip"
    )
    LinCIRModel.from_clip(folder / "clip").save_pretrained(folder / "lincir")
    LinCIRProcessor.from_pretrained(folder / "clip").save_pretrained(folder / "lincir")
    return str(folder / "lincir")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model",
        default=str(toy_checkpoint("lincir")),
        help=f"a LinCIR folder, or {VIT_B32!r}: a ViT-B/32-sized image tower with random weights (built in a temp dir)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" / "embedding_throughput.json"))
    args = parser.parse_args()

    if args.model == VIT_B32:
        args.model = random_vit_b32_lincir(Path(tempfile.mkdtemp(prefix="hf-cir-vit-b32-")))
    model = load_retrieval_model(args.model, device=args.device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        rng = np.random.default_rng(0)
        for i in range(args.images):
            pixels = rng.integers(0, 255, (args.size, args.size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:06d}.jpg", quality=90)
        source = ImageFolderSource(folder)
        preprocess = model.image_preprocessor()
        pixels = preprocess([Image.open(folder / p).convert("RGB") for p in source.paths[: args.batch_size]])
        batches = -(-args.images // args.batch_size)
        model.encode_pixel_values(pixels)  # warm-up
        synchronize(args.device)
        start = time.perf_counter()
        for _ in range(batches):
            model.encode_pixel_values(pixels.to(model.device))
        synchronize(args.device)
        alone = time.perf_counter() - start
        rows.append({"path": "model alone (pre-decoded tensors)", "images/s": args.images / alone, "model busy": 1.0})
        for workers in args.workers:
            work = Path(tmp) / f"run-{workers}"
            prepare_work_dir(work, {"fingerprint": "bench", "workers": workers})
            start = time.perf_counter()
            run = embed_source(
                model, source, work, ProcessGroup(), batch_size=args.batch_size, num_workers=workers,
                show_progress=False,
            )  # fmt: skip
            synchronize(args.device)
            seconds = time.perf_counter() - start
            assert run.computed == args.images
            rows.append(
                {
                    "path": f"engine, {workers} workers",
                    "images/s": args.images / seconds,
                    "model busy": alone / seconds,
                }
            )
            print(format_table(rows[-1:]), flush=True)
    print(format_table(rows))
    torch_threads = torch.get_num_threads()
    write_json(
        args.json, {"machine": machine_description(), "settings": vars(args), "threads": torch_threads, "rows": rows}
    )


if __name__ == "__main__":
    main()
