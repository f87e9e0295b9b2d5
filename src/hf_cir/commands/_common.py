"""Helpers shared by the `hf-cir` subcommands: model options, model loading and the one-line error report."""

from __future__ import annotations

import argparse
import sys

__all__ = ["USER_ERRORS", "add_model_arguments", "load_model_from_args", "report_error"]

# Errors that are the user's input, printed as one line instead of a traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, ImportError, OSError, KeyError)


def add_model_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """Options shared by index, search and evaluate to load a model."""
    parser.add_argument(
        "--model",
        required=required,
        default=None,
        help="a LinCIR model or CompoDiff pipeline: local folder or Hub id (the kind is read from its files)",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps, ... (default: accelerate's choice)")
    parser.add_argument(
        "--dtype", default="float32", choices=["float32", "float16", "bfloat16"], help="weights' dtype"
    )
    compodiff = parser.add_argument_group("CompoDiff sampling (CompoDiff models only)")
    compodiff.add_argument("--num-inference-steps", type=int, default=None)
    compodiff.add_argument("--guidance-scale", type=float, default=None)
    compodiff.add_argument("--image-guidance-scale", type=float, default=None)
    compodiff.add_argument("--num-samples-per-prompt", type=int, default=None)
    compodiff.add_argument("--seed", type=int, default=None, help="seed of the sampling noise (default 0)")


def load_model_from_args(args: argparse.Namespace, name_or_path: str | None = None):
    import torch

    from hf_cir.retrieval import load_retrieval_model

    sampling = {
        key: getattr(args, key, None)
        for key in ("num_inference_steps", "guidance_scale", "image_guidance_scale", "num_samples_per_prompt", "seed")
        if getattr(args, key, None) is not None
    }
    return load_retrieval_model(
        name_or_path or args.model, device=args.device, dtype=getattr(torch, args.dtype), **sampling
    )


def report_error(command: str, error: BaseException) -> int:
    message = error.args[0] if isinstance(error, KeyError) and error.args else error
    print(f"hf-cir {command}: error: {message}", file=sys.stderr)
    return 2
