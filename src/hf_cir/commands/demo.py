"""`hf-cir demo`: composed image retrieval end to end on the embedded toy world, offline, in about a minute."""

from __future__ import annotations

import argparse

from ._common import add_progress_argument

EXAMPLE = """example:
  hf-cir demo                          # 6 queries, recall table, toy_runs/demo.png
  hf-cir demo --num-queries 3 --output /tmp/demo.png --recall-queries 0
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run composed queries on the toy world with the shipped LinCIR and CompoDiff",
        description=(
            "Build the toy gallery, run a handful of held-out composed queries (reference image + modification text) "
            "with LinCIR, CompoDiff and the sum baseline, print the ranked results and a recall table, and write a "
            "PNG contact sheet. Uses the toy checkpoints shipped with hf-cir; needs no network."
        ),
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--output", default="toy_runs/demo.png", help="the contact sheet PNG (default: toy_runs/demo.png)"
    )
    parser.add_argument("--num-queries", type=int, default=6, help="composed queries to show (default: 6)")
    parser.add_argument("--top-k", type=int, default=5, help="results per method (default: 5)")
    parser.add_argument("--seed", type=int, default=0, help="picks the queries and renderings (default: 0)")
    parser.add_argument(
        "--recall-queries",
        type=int,
        default=200,
        help="held-out queries of the recall table; 0 skips it (default: 200)",
    )
    parser.add_argument(
        "--checkpoints", default=None, help="folder with clip/, lincir/, compodiff/ (default: shipped)"
    )
    parser.add_argument("--device", default="cpu", help="default: cpu")
    add_progress_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from hf_cir.toy.demo import run_demo

    for name in ("num_queries", "top_k"):
        if getattr(args, name) < 1:
            print(f"hf-cir demo: error: --{name.replace('_', '-')} must be at least 1.", file=sys.stderr)
            return 2
    if args.recall_queries < 0:
        print("hf-cir demo: error: --recall-queries must be >= 0.", file=sys.stderr)
        return 2
    try:
        run_demo(
            output=args.output,
            checkpoints_dir=args.checkpoints,
            num_queries=args.num_queries,
            top_k=args.top_k,
            seed=args.seed,
            recall_queries=args.recall_queries,
            device=args.device,
        )
    except (FileNotFoundError, ValueError) as error:
        print(f"hf-cir demo: error: {error}", file=sys.stderr)
        return 2
    return 0
