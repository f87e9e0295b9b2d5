"""`hf-cir search`: query an index with a reference image and a modification text."""

from __future__ import annotations

import argparse
import json

from ._common import USER_ERRORS, add_model_arguments, load_model_from_args, report_error

EXAMPLE = """example:
  hf-cir search --index pictures.index --image beach.jpg --text "at night" --top-k 10
  hf-cir search --index pictures.index --model path/to/compodiff --image car.jpg --text "is red" \\
      --negative-text "blurry" --mask car_mask.png --json --save-grid results.png

The model defaults to the one that built the index. Methods: the model's own (lincir or compodiff), or the
baselines image, text and sum (normalised image + text embeddings).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from hf_cir.retrieval import METHODS

    parser = subparsers.add_parser(
        "search",
        help="search an index with a composed query",
        description="Rank the images of an index for a reference image plus a modification text.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--index", required=True, help="an index folder written by `hf-cir index`")
    add_model_arguments(parser, required=False)
    parser.add_argument("--image", default=None, help="the reference image")
    parser.add_argument("--text", default=None, help="the modification text")
    parser.add_argument("--negative-text", default=None, help="what the result should not be (CompoDiff only)")
    parser.add_argument("--mask", default=None, help="mask image of the region to change (CompoDiff only)")
    parser.add_argument(
        "--method",
        default=None,
        choices=list(METHODS),
        help="default: the model's own",
    )
    parser.add_argument("--top-k", type=int, default=10, help="number of results (default 10)")
    parser.add_argument("--exact", action="store_true", help="exact search even if the index has a faiss index")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--save-grid", default=None, metavar="PNG", help="write a contact sheet of the results")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hf_cir.retrieval import GalleryIndex, save_contact_sheet

    try:
        if args.image is None and args.text is None:
            raise ValueError("give a query: --image, --text or both.")
        if args.top_k < 1:
            raise ValueError(f"--top-k must be at least 1, got {args.top_k}.")
        index = GalleryIndex.load(args.index)
        model = load_model_from_args(args, args.model or index.info.get("model"))
        index.check_model(model)
        method = model.check_method(args.method)
        if args.text is None and method != "image":
            raise ValueError(f"method {method!r} needs --text (only --method image works with an image alone).")
        if args.image is None and method in ("lincir", "image", "sum"):
            raise ValueError(f"method {method!r} needs --image.")
        query = model.encode_queries(
            [args.text or ""],
            images=[args.image] if args.image is not None and method != "text" else None,
            method=method,
            negative_texts=[args.negative_text] if args.negative_text is not None else None,
            mask_images=[args.mask] if args.mask is not None else None,
        )
        hits = index.search(query, args.top_k, exact=True if args.exact else None)[0]
        if args.save_grid:
            label = f"[{method}] {args.text or ''}" + (f" (not: {args.negative_text})" if args.negative_text else "")
            save_contact_sheet(args.save_grid, [(args.image, label)], [hits])
    except USER_ERRORS as error:
        return report_error("search", error)
    if args.json:
        output = {
            "index": str(args.index),
            "model": model.name_or_path,
            "method": method,
            "query": {"image": args.image, "text": args.text, "negative_text": args.negative_text, "mask": args.mask},
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
        if args.save_grid:
            print(f"Contact sheet: {args.save_grid}")
    return 0
