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
from hf_cir.retrieval.engine import ProcessGroup, embed_source, prepare_work_dir  # noqa: E402
from hf_cir.retrieval.sources import ImageFolderSource  # noqa: E402


def main() -> None:
    from hf_cir.toy import toy_checkpoint

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(toy_checkpoint("lincir")))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" / "embedding_throughput.json"))
    args = parser.parse_args()

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
