"""`hf-cir search`: query an index with a reference image and a modification text."""

from __future__ import annotations

import argparse
import json
import sys
import warnings

from ._common import add_model_arguments, add_progress_argument, load_model_from_args

EXAMPLE = """example (runs as written after the toy examples of `hf-cir index --help`):
  hf-cir search --index toy-lincir.index --image toy:images/small-red-circle-left-plain.png --text "make it blue"
  hf-cir search --index toy-compodiff.index --image toy:images/small-red-circle-left-plain.png \\
      --text "make it blue" --negative-text "green" --top-k 5 --json --save-grid results.png

with your own index:
  hf-cir search --index pictures.index --image beach.jpg --text "at night" --top-k 10
  hf-cir search --index pictures.index --model path/to/diffusion-model --image car.jpg --text "is red" \\
      --negative-text "blurry" --mask car_mask.png --json --save-grid results.png

The model defaults to the one that built the index. Methods: the model's own (the model folder says which:
{own}), or the baselines image, text and sum (normalised image + text embeddings). When the reference image is
itself an image of the index it is left out of the results (--include-query keeps it).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from hf_cir.families import all_methods, methods_taking, own_methods

    parser = subparsers.add_parser(
        "search",
        help="search an index with a composed query",
        description="Rank the images of an index for a reference image plus a modification text.",
        epilog=EXAMPLE.format(own=", ".join(own_methods())),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--index", required=True, help="an index folder written by `hf-cir index`")
    add_model_arguments(parser, required=False)
    parser.add_argument("--image", default=None, help="the reference image")
    parser.add_argument("--text", default=None, help="the modification text")
    parser.add_argument(
        "--negative-text",
        default=None,
        help=f"what the result should not be ({', '.join(methods_taking('negative_text'))} only)",
    )
    parser.add_argument(
        "--mask", default=None, help=f"mask image of the region to change ({', '.join(methods_taking('mask'))} only)"
    )
    parser.add_argument(
        "--method",
        default=None,
        choices=list(all_methods()),
        help="default: the model's own",
    )
    parser.add_argument("--top-k", type=int, default=10, help="number of results (default 10)")
    parser.add_argument("--exact", action="store_true", help="exact search even if the index has a faiss index")
    parser.add_argument(
        "--include-query",
        action="store_true",
        help="keep the reference image in the results when it is an image of the index (left out by default)",
    )
    parser.add_argument(
        "--allow-other-model",
        action="store_true",
        help="search an index built by another image encoder (its scores then compare two embedding spaces)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--save-grid", default=None, metavar="PNG", help="write a contact sheet of the results")
    add_progress_argument(parser)
    parser.set_defaults(func=run)


# How the query's inputs are named in errors (`ComposedQuery.check`).
QUERY_OPTIONS = {"text": "--text", "reference": "--image", "mask": "--mask", "negative_text": "--negative-text"}


def _query(args: argparse.Namespace):
    from hf_cir.retrieval.query import ComposedQuery

    return ComposedQuery(text=args.text, image=args.image, negative_text=args.negative_text, mask=args.mask)


def _check_query_arguments(args: argparse.Namespace) -> None:
    """What can be said about the arguments before any file is opened (the method's rules: the family registry)."""
    if args.image is None and args.text is None:
        raise ValueError("give a query: --image, --text or both.")
    if args.top_k < 1:
        raise ValueError(f"--top-k must be at least 1, got {args.top_k}.")
    if args.include_query and args.image is None:
        raise ValueError("--include-query does not apply without --image (there is no query image to keep).")
    if args.method is not None:
        _query(args).check(args.method, QUERY_OPTIONS)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from hf_cir.families import read_model_folder
    from hf_cir.retrieval import GalleryIndex, save_contact_sheet
    from hf_cir.retrieval.query import retrieve
    from hf_cir.utils import load_image

    _check_query_arguments(args)
    # Every file of the query is opened before a model loads: a bad one fails at once.
    image = load_image(args.image, name="--image") if args.image is not None else None
    mask = load_image(args.mask, name="--mask") if args.mask is not None else None
    index = GalleryIndex.load(args.index)
    # The folder is read once: its family and its own method (a config may name one of its family's methods).
    folder = read_model_folder(args.model or index.info.get("model"))
    method = folder.check_method(args.method, option="--method")
    query = _query(args)
    query.mask = mask
    query.check(method, QUERY_OPTIONS)  # before the weights load
    model = load_model_from_args(args, folder)
    index.check_model(model, allow_other_model=args.allow_other_model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = retrieve(
            model,
            index,
            query,
            method,
            args.top_k,
            include_reference=args.include_query,
            exact=True if args.exact else None,
            names=QUERY_OPTIONS,
        )
    for warning in caught:  # e.g. words the tokenizer does not know
        if not issubclass(warning.category, (DeprecationWarning, FutureWarning)):
            print(f"hf-cir search: warning: {warning.message}", file=sys.stderr)
    hits, left_out = result.hits, result.excluded
    if args.save_grid:
        # The sheet opens only files that resolve inside the index's image root.
        tiles = [
            replace(hit, absolute_path=str(index.image_file(stored)) if (stored := _stored_path(hit)) else "")
            for hit in hits
        ]
        label = f"[{method}] {args.text or ''}" + (f" (not: {args.negative_text})" if args.negative_text else "")
        save_contact_sheet(args.save_grid, [(image, label)], [tiles])
    if args.json:
        output = {
            "index": str(args.index),
            "model": model.name_or_path,
            "method": method,
            "query": {"image": args.image, "text": args.text, "negative_text": args.negative_text, "mask": args.mask},
            "excluded": left_out,
            "results": [hit.to_dict() for hit in hits],
        }
        if args.save_grid:
            output["grid"] = str(args.save_grid)
        print(json.dumps(output, indent=1))
    else:
        width = max((len(hit.path) for hit in hits), default=4)
        print(f"{'rank':>4}  {'score':>7}  path")
        for hit in hits:
            print(f"{hit.rank:>4}  {hit.score:7.4f}  {hit.path.ljust(width)}")
        if left_out is not None:
            print(f"(the query image {left_out} is left out; --include-query keeps it)")
        if args.save_grid:
            print(f"Contact sheet: {args.save_grid}")
    return 0


def _stored_path(hit) -> str | None:
    """The image file a hit stands for, relative to the image root (`None` for a dataset row without a file)."""
    return hit.metadata.get("path") if hit.metadata else hit.path
