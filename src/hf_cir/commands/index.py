"""`hf-cir index`: embed an image folder with a LinCIR or CompoDiff model into a searchable index."""

from __future__ import annotations

import argparse
import json
import sys
import warnings

from ._common import USER_ERRORS, add_model_arguments, load_model_from_args, report_error

EXAMPLE = """example:
  hf-cir index --model path/to/lincir-model --images ~/Pictures --output pictures.index
  hf-cir index --model path/to/compodiff --images ~/Pictures --output pictures.index --faiss hnsw

Run the same command again after an interruption: finished images are not recomputed.
"""

def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "index",
        help="embed an image folder into a searchable index",
        description=(
            "Embed every image under --images (recursively) with --model and save the embeddings and paths to "
            "--output. Unreadable, non-image and empty files are skipped and listed."
        ),
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_arguments(parser)
    parser.add_argument("--images", required=True, help="the image folder (searched recursively)")
    parser.add_argument("--output", required=True, help="the index folder to write")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    parser.add_argument("--save-every", type=int, default=256, help="images per resumable chunk (default 256)")
    parser.add_argument(
        "--faiss", choices=["flat", "ivf", "hnsw"], default=None, help="also build a faiss index (large galleries)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing index at --output")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print a JSON summary instead of text")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hf_cir.retrieval import GalleryIndex

    try:
        model = load_model_from_args(args)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            index = GalleryIndex.build(
                model,
                args.images,
                args.output,
                batch_size=args.batch_size,
                save_every=args.save_every,
                show_progress=not args.no_progress,
                faiss=args.faiss,
                overwrite=args.overwrite,
            )
    except USER_ERRORS as error:
        return report_error("index", error)
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
