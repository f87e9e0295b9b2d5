"""`hf-cir evaluate`: benchmark numbers (CIRR, CIRCO, FashionIQ, GeneCIS, toy) with one command."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._common import USER_ERRORS, add_model_arguments, load_model_from_args, report_error, sampling_from_args

EXAMPLE = """example:
  hf-cir evaluate --benchmark toy  # every method on the shipped toy checkpoints, two seeds
  hf-cir evaluate --model path/to/lincir-model --benchmark cirr --data-dir data/CIRR --split val
  hf-cir evaluate --model path/to/lincir-model --benchmark cirr --data-dir data/CIRR --split test  # server files
  hf-cir evaluate --model path/to/compodiff --benchmark circo --data-dir data/CIRCO \\
      --method compodiff image text sum --update-model-card

Data layouts (official ones):
  cirr       DIR/cirr/captions/cap.rc2.{val,test1}.json, DIR/cirr/image_splits/split.rc2.{split}.json, DIR/dev, DIR/test1
  circo      DIR/annotations/{val,test}.json, DIR/COCO2017_unlabeled/{annotations,unlabeled2017}
  fashioniq  DIR/captions/cap.{dress,shirt,toptee}.val.json, DIR/image_splits/split.{category}.val.json, DIR/images
  genecis    DIR/genecis/{focus,change}_{attribute,object}.json, DIR/val2017 (COCO), DIR/VG_100K_all (Visual Genome)
  toy        no data directory: the procedural toy world
Gallery embeddings are cached (--cache-dir), so other methods on the same images embed nothing again.
"""


# Texts a model with an expensive text side keeps encoded during an evaluation (about 0.4 MB each for a bigG-sized
# text encoder).
EVALUATION_TEXT_CACHE_SIZE = 256

# The benchmarks hf-cir ships, named in `--help` without importing them (a test checks the list is complete).
BENCHMARK_NAMES = ("cirr", "circo", "fashioniq", "genecis", "toy")


def register(subparsers: argparse._SubParsersAction) -> None:
    from hf_cir.families import all_methods

    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate a model on a composed image retrieval benchmark",
        description=(
            "Compute a benchmark's metrics for a model and method(s): prints a table, writes a results JSON (and the "
            "test-server submission files on a test split), and optionally the model card's model-index."
        ),
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_arguments(parser, required=False)
    parser.add_argument(
        "--benchmark", required=True, help=f"which benchmark: {', '.join(BENCHMARK_NAMES)} (or any registered one)"
    )
    parser.add_argument("--data-dir", default=None, help="the benchmark's folder, in its official layout")
    parser.add_argument(
        "--benchmark-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a benchmark setting, repeatable: e.g. categories=dress,shirt (fashioniq), tasks=change_object, "
        "coco_dir=..., vg_dir=... (genecis), num_queries=100 (toy); comma-separated values become lists",
    )
    parser.add_argument("--split", default="val", help="val or test (the toy benchmark: val or train); default: val")
    parser.add_argument(
        "--method",
        nargs="+",
        default=None,
        choices=list(all_methods()),
        help="one or more methods (default: the model's own)",
    )
    parser.add_argument("--output-dir", default="eval_results", help="where results and submissions go")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--num-workers",
        type=int,
        default=0,
        help="DataLoader workers that open and decode the benchmark's gallery images (default 0: this process)",
    )
    parser.add_argument(
        "--cache-dir", default=None, help="gallery embedding cache (default: $HF_HOME/hf_cir/embeddings)"
    )
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--update-model-card",
        action="store_true",
        help="write the results into the model folder's README.md: the model's own method into its model-index, "
        "baselines (image, text, sum) into a table labelled as baselines",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.set_defaults(func=run)


def parse_benchmark_options(options: list[str]) -> dict:
    """`["tasks=a,b", "num_queries=5"]` -> `{"tasks": ["a", "b"], "num_queries": 5}`."""
    parsed = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"--benchmark-option {option!r}: expected KEY=VALUE.")
        if "," in value:
            parsed[key] = [item for item in value.split(",") if item]
        elif value.lstrip("-").isdigit():
            parsed[key] = int(value)
        else:
            parsed[key] = value
    return parsed


def run(args: argparse.Namespace) -> int:
    import hf_cir.toy  # noqa: F401  (registers the toy benchmark)
    from hf_cir.evaluation import evaluate, get_benchmark, get_benchmark_class, update_model_card

    try:
        benchmark_class = get_benchmark_class(args.benchmark)
        if args.num_workers < 0:
            raise ValueError(f"--num-workers must be 0 or more, got {args.num_workers}.")
    except ValueError as error:
        return report_error("evaluate", error)
    if args.model is None:
        if not benchmark_class.ships_models:
            return report_error("evaluate", ValueError(f"--model is required for --benchmark {args.benchmark}."))
        return run_toy_table(args)
    try:
        if args.update_model_card and not Path(args.model).is_dir():
            raise ValueError(f"--update-model-card needs a local model folder; {args.model} is not one.")
        options = parse_benchmark_options(args.benchmark_option)
        benchmark = get_benchmark(args.benchmark, args.data_dir, split=args.split, **options)
        model = load_model_from_args(args)
        model.enable_text_cache(EVALUATION_TEXT_CACHE_SIZE)  # benchmarks repeat texts: encode each once
        methods = args.method or [model.default_method]
        for method in methods:
            model.check_method(method)
        results = [
            evaluate(
                model,
                benchmark,
                method=method,
                batch_size=args.batch_size,
                num_workers=args.num_workers,
                cache_dir=args.cache_dir,
                use_cache=not args.no_cache,
                show_progress=not args.no_progress,
                output_dir=args.output_dir,
            )
            for method in methods
        ]
        card = None
        if args.update_model_card:
            card = update_model_card(args.model, results, model_method=model.default_method)
    except TypeError as error:  # an option the benchmark does not take
        if "unexpected keyword" not in str(error):
            raise
        return report_error("evaluate", ValueError(f"--benchmark-option: {error}"))
    except USER_ERRORS as error:
        return report_error("evaluate", error)
    if args.json:
        output = {"results": [result.to_dict() for result in results]}
        if card is not None:
            output["model_card"] = str(card)
        print(json.dumps(output, indent=1))
    else:
        for result in results:
            print(result.table())
            for name, path in result.files.items():
                print(f"  wrote {name}: {path}")
        if card is not None:
            print(f"Updated the model card {card}")
    return 0


def run_toy_table(args: argparse.Namespace) -> int:
    """`hf-cir evaluate --benchmark toy` without `--model`: the README's table on the shipped toy checkpoints.

    The CompoDiff sampling options (`--preset`, `--scheduler`, `--num-inference-steps`, `--num-samples-per-prompt`,
    the guidance scales, `--seed`, `--precision`) and `--dtype` set the CompoDiff row; the other rows do not sample.
    """
    import torch

    from hf_cir.toy.benchmark import evaluate_toy_models, format_toy_table

    check_toy_table_options(args)
    try:
        options = parse_benchmark_options(args.benchmark_option)
        seeds = options.pop("seeds", [0, 1])
        seeds = tuple(int(seed) for seed in (seeds if isinstance(seeds, list) else [seeds]))
        unknown = sorted(set(options) - {"num_queries", "gallery_size"})
        if unknown:
            raise ValueError(
                f"--benchmark-option: unknown toy table option(s) {unknown}; use seeds, num_queries, gallery_size."
            )
        compodiff_options = sampling_from_args(args)
        if args.dtype != "float32":
            compodiff_options["dtype"] = getattr(torch, args.dtype)
        results = evaluate_toy_models(
            seeds=seeds, device=args.device or "cpu", compodiff_options=compodiff_options, **options
        )
    except USER_ERRORS as error:
        return report_error("evaluate", error)
    print(json.dumps(results, indent=1) if args.json else format_toy_table(results))
    return 0


# Options of `evaluate` that the toy table (no --model) does not use, with the value that means "not given".
_NOT_FOR_THE_TOY_TABLE = {
    "data_dir": None,
    "split": "val",
    "method": None,
    "output_dir": "eval_results",
    "cache_dir": None,
    "no_cache": False,
    "update_model_card": False,
    "batch_size": 32,
}


def check_toy_table_options(args: argparse.Namespace) -> None:
    """The toy table runs every toy model and method on rendered images and writes nothing: refuse the options it
    would otherwise ignore."""
    given = [name for name, unset in _NOT_FOR_THE_TOY_TABLE.items() if getattr(args, name, unset) != unset]
    if given:
        options = ", ".join("--" + name.replace("_", "-") for name in given)
        verb = "does" if len(given) == 1 else "do"
        raise ValueError(
            f"{options} {verb} not apply to the toy table (--benchmark toy without --model: every toy model and "
            "method, printed, nothing written); pass --model to evaluate one model."
        )
