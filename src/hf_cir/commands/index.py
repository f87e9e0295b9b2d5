"""`hf-cir index`: embed an image folder with a LinCIR or CompoDiff model into a searchable index."""

from __future__ import annotations

import argparse
import json
import sys
import warnings

from ._common import add_model_arguments, add_progress_argument, load_model_from_args, sampling_from_args

EXAMPLE = """example (runs as written: toy:lincir, toy:compodiff and toy:images name the shipped toy models and images):
  hf-cir index --model toy:lincir --images toy:images --output toy-lincir.index
  hf-cir index --model toy:compodiff --images toy:images --output toy-compodiff.index --faiss hnsw

with your own models and images (the same options):
  hf-cir index --model path/to/lincir-model --images ~/Pictures --output pictures.index
  hf-cir index --model path/to/lincir-model --dataset my_images/ --image-column image --output my.index
  hf-cir index --model path/to/lincir-model --dataset data/*.parquet --streaming --output my.index
  hf-cir index --model path/to/lincir-model --webdataset "shards/{00000..00099}.tar" --output laion.index \
      --num-workers 4 --embedding-dtype float16 --faiss ivf-pq --memory-budget 2GB
  accelerate launch --multi_gpu --num_processes 2 -m hf_cir index --device cpu --model ... (same options)
  hf-cir index --upgrade old.index          # convert an index of format 1 to format 2 in place

Under accelerate launch each process embeds its own shards (shard i: process i mod N) and writes them itself.
Run the same command again after an interruption: finished shards are not recomputed.
--overwrite replaces only an earlier hf-cir index (never the images folder, a folder holding it, or other files).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from hf_cir.retrieval.kinds import index_kind_choices, index_kind_help

    parser = subparsers.add_parser(
        "index",
        help="embed images (a folder, a datasets source, webdataset tars) into a searchable index",
        description=(
            "Embed every image under --images (recursively), of a datasets source (--dataset, optionally "
            "--streaming) or of webdataset tar shards (--webdataset) with --model, and save the embeddings and "
            "metadata to --output. Images are decoded in --num-workers DataLoader workers. Unreadable, non-image "
            "and empty inputs are skipped and listed."
        ),
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_arguments(parser, required=False)
    inputs = parser.add_mutually_exclusive_group()
    inputs.add_argument("--images", default=None, help="the image folder (searched recursively)")
    inputs.add_argument(
        "--dataset",
        default=None,
        nargs="+",
        help="a datasets source with an image column: image folder (metadata.jsonl), Parquet/Arrow files, a "
        "save_to_disk folder or a Hub id",
    )
    inputs.add_argument(
        "--webdataset", default=None, help='webdataset tar shards, e.g. "shards/{00000..00099}.tar" (img2dataset)'
    )
    inputs.add_argument("--upgrade", default=None, metavar="INDEX", help="convert an index of format 1 in place")
    parser.add_argument("--image-column", default=None, help="--dataset: the image column (default: detected)")
    parser.add_argument("--id-column", default=None, help="--dataset: a column of unique ids (default: row number)")
    parser.add_argument("--split", default="train", help="--dataset: the split (default train)")
    parser.add_argument(
        "--streaming",
        action="store_true",
        help="--dataset: read it as a stream (load_dataset(..., streaming=True)), shards of --save-every rows",
    )
    parser.add_argument("--output", default=None, help="the index folder to write")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    parser.add_argument(
        "--save-every", type=int, default=4096, help="images per resumable shard (default 4096; webdataset: one tar)"
    )
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers decoding images (default 0)")
    parser.add_argument(
        "--embedding-dtype", choices=["float32", "float16"], default="float32", help="stored embeddings' dtype"
    )
    parser.add_argument(
        "--faiss",
        choices=index_kind_choices(),
        default=None,
        help=index_kind_help(),
    )
    parser.add_argument(
        "--memory-budget", default=None, help="memory the ivf-pq index may take, e.g. 2GB (sets its code size)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an earlier hf-cir index at --output (nothing else)"
    )
    add_progress_argument(parser)
    parser.add_argument("--json", action="store_true", help="print a JSON summary instead of text")
    parser.set_defaults(func=run)


def _check_arguments(args: argparse.Namespace) -> None:
    """Everything that can be refused before a model loads."""
    from pathlib import Path

    from hf_cir.retrieval.index import INDEX_FOLDER
    from hf_cir.retrieval.storage import index_damage
    from hf_cir.utils.io import check_replaceable

    if args.upgrade is None and (args.model is None or args.output is None):
        raise ValueError("give --model and --output (and --images, --dataset or --webdataset), or --upgrade INDEX.")
    if args.upgrade is None and not (args.images or args.dataset or args.webdataset):
        raise ValueError("give the images: --images FOLDER, --dataset SOURCE or --webdataset PATTERN.")
    if args.streaming and not args.dataset:
        raise ValueError("--streaming reads a --dataset source as a stream; give --dataset SOURCE.")
    for option, value in (("--batch-size", args.batch_size), ("--save-every", args.save_every)):
        if value < 1:
            raise ValueError(f"{option} must be at least 1, got {value}.")
    if args.num_workers < 0:
        raise ValueError(f"--num-workers must be at least 0, got {args.num_workers}.")
    if args.memory_budget is not None:
        from hf_cir.retrieval.compressed import parse_memory_size
        from hf_cir.retrieval.kinds import check_index_kind_options

        parse_memory_size(args.memory_budget)
        check_index_kind_options(args.faiss, args.memory_budget, "--faiss", "--memory-budget")
    if args.upgrade is not None or not args.images:
        return
    sampling = sampling_from_args(args)
    if sampling:
        options = ", ".join("--" + key.replace("_", "-") for key in sampling)
        raise ValueError(
            f"{options}: sampling options do not apply to indexing (gallery images are encoded, not sampled)."
        )
    images, output = Path(args.images), Path(args.output)
    if not images.is_dir():
        raise FileNotFoundError(f"--images: {images} is not a folder.")
    if output.exists() and not args.overwrite and index_damage(output) is None:  # a damaged index is repaired
        raise FileExistsError(f"--output: {output} already exists; pass --overwrite to replace an earlier index.")
    if not (output / "manifest.json").exists():
        check_replaceable(output, INDEX_FOLDER, {"--images": images}, argument="--output")


def _source(args: argparse.Namespace):
    from hf_cir.retrieval.sources import DatasetSource, WebDatasetSource

    if args.webdataset:
        return WebDatasetSource(args.webdataset)
    if args.dataset:
        dataset = args.dataset[0] if len(args.dataset) == 1 else args.dataset
        return DatasetSource(
            dataset,
            image_column=args.image_column,
            id_column=args.id_column,
            split=args.split,
            streaming=args.streaming,
        )
    return args.images


def run(args: argparse.Namespace) -> int:
    import os

    from hf_cir.retrieval import GalleryIndex

    _check_arguments(args)
    if args.upgrade is not None:
        index = GalleryIndex.upgrade(args.upgrade, dtype=args.embedding_dtype)
        print(f"{args.upgrade}: index format {index.info['version']}, {len(index)} images.")
        return 0
    model = load_model_from_args(args)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        index = GalleryIndex.build(
            model,
            _source(args),
            args.output,
            batch_size=args.batch_size,
            save_every=args.save_every,
            show_progress=not args.no_progress,
            faiss=args.faiss,
            overwrite=args.overwrite,
            num_workers=args.num_workers,
            dtype=args.embedding_dtype,
            memory_budget=args.memory_budget,
        )
    if int(os.environ.get("RANK", "0")) != 0:  # under `accelerate launch`: the main process reports
        return 0
    for warning in caught:
        if not issubclass(warning.category, (DeprecationWarning, FutureWarning)):
            print(f"warning: {warning.message}", file=sys.stderr)
    summary = {
        "index": str(args.output),
        "model": model.name_or_path,
        "model_type": model.model_type,
        "embedding_dim": model.embedding_dim,
        "images": len(index),
        "computed": index.computed,
        "skipped": index.skipped,
        "faiss": args.faiss,
    }
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print(
            f"Indexed {len(index)} images ({summary['computed']} embedded now) with {model.name_or_path} "
            f"({model.model_type}, {model.embedding_dim}-d) into {args.output}; skipped {len(index.skipped)} file(s)."
        )
    return 0
