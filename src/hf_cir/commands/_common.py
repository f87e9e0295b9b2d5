"""Helpers shared by the `hf-cir` subcommands: the one error boundary, model options and model loading.

Every failure caused by the user's input or environment (a bad argument, a missing, unreadable or malformed file, a
refused pickle, a full disk) ends a command with one line on stderr, `hf-cir <command>: error: <what is wrong>`, and
exit status 2. `--debug` (or `HF_CIR_DEBUG=1`) shows the traceback instead. Anything else is a bug in hf-cir and
keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
from collections.abc import Callable

__all__ = [
    "DEBUG_ENVIRONMENT_VARIABLE",
    "USER_ERRORS",
    "CommandLineParser",
    "add_model_arguments",
    "add_progress_argument",
    "disable_progress_bars",
    "is_user_error",
    "load_model_from_args",
    "report_error",
    "run_command",
    "sampling_from_args",
]

DEBUG_ENVIRONMENT_VARIABLE = "HF_CIR_DEBUG"

# Errors that are the user's input or environment, printed as one line instead of a traceback. The Python API raises
# ValueError / FileNotFoundError naming the argument; OSError covers unreadable files, permissions and full disks.
# TypeError, KeyError, AttributeError, ... from inside hf-cir are bugs: they keep their traceback.
USER_ERRORS = (ValueError, OSError, EOFError, pickle.UnpicklingError)

# Third-party errors that are about the input, checked by name so that --help imports none of these libraries.
_THIRD_PARTY_USER_ERRORS = (
    ("PIL", "DecompressionBombError"),
    ("safetensors", "SafetensorError"),
)


def is_user_error(error: BaseException) -> bool:
    """Whether `error` is about the user's input or environment (one line) rather than a bug (a traceback)."""
    if isinstance(error, ImportError):  # a missing optional dependency, not a broken hf-cir module
        return not str(getattr(error, "name", None) or "").startswith("hf_cir")
    if isinstance(error, USER_ERRORS):
        return True
    # Compared by (top-level package, class name) along the error's MRO: nothing is imported to decide.
    names = {(cls.__module__.partition(".")[0], cls.__qualname__) for cls in type(error).__mro__}
    return any(name in names for name in _THIRD_PARTY_USER_ERRORS)


def _one_line(error: BaseException) -> str:
    message = error.args[0] if isinstance(error, KeyError) and error.args else error
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    return "; ".join(lines) or type(error).__name__


def report_error(command: str, error: BaseException) -> int:
    """Print `hf-cir <command>: error: <error>` as one line on stderr and return the exit status 2."""
    print(f"hf-cir {command}: error: {_one_line(error)}", file=sys.stderr)
    return 2


def _debugging(args: argparse.Namespace | None) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get(DEBUG_ENVIRONMENT_VARIABLE, "") not in ("", "0")


def disable_progress_bars() -> None:
    """Silence the progress bars of the libraries hf-cir drives (model loading, downloads); hf-cir's own bars follow
    each command's `--no-progress` through `show_progress`."""
    import importlib

    for module_name, function_name in (
        ("transformers.utils.logging", "disable_progress_bar"),
        ("diffusers.utils.logging", "disable_progress_bar"),
        ("huggingface_hub.utils", "disable_progress_bars"),
        ("datasets.utils.logging", "disable_progress_bar"),
    ):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        getattr(module, function_name)()


def run_command(command: str, func: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    """Run a subcommand inside the error boundary (see the module docstring); return its exit status."""
    try:
        if getattr(args, "no_progress", False):
            disable_progress_bars()
        return int(func(args) or 0)
    except KeyboardInterrupt:
        if _debugging(args):
            raise
        print(f"hf-cir {command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if _debugging(args) or not is_user_error(error):
            raise
        return report_error(command, error)


class CommandLineParser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` whose usage errors are one line, `hf-cir <command>: error: ...`, exit status 2.

    Every parser of the command line (subcommands are created with the same class) takes `--debug`.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help=f"show the full traceback of an error (or set {DEBUG_ENVIRONMENT_VARIABLE}=1)",
        )

    def error(self, message: str):
        words = self.prog.split()
        prog = " ".join(words[:2])  # "hf-cir convert lincir" reports as "hf-cir convert"
        self.exit(2, f"{prog}: error: {message} (see `{self.prog} --help`)\n")


def add_progress_argument(parser: argparse.ArgumentParser) -> None:
    """`--no-progress`: no progress bars, neither hf-cir's nor those of transformers, diffusers and the Hub."""
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars (also silences transformers', diffusers' and the Hub's loading bars)",
    )


def add_model_arguments(parser: argparse.ArgumentParser, required: bool = True, multiple: bool = False) -> None:
    """Options shared by index, search, evaluate and app to load a model (`multiple`: `--model A B ...`)."""
    parser.add_argument(
        "--model",
        required=required,
        default=None,
        nargs="+" if multiple else None,
        action="extend" if multiple else "store",
        help="a LinCIR model or CompoDiff pipeline: local folder or Hub id (the kind is read from its files)"
        + ("; several: --model A B or --model A --model B" if multiple else ""),
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
    compodiff.add_argument(
        "--preset",
        default=None,
        help="a named speed setting, e.g. interactive (stochastic DPM-Solver++, 6 steps, 2 samples, int8 text "
        "encoder and prior on a CPU, a 64-text encoding cache); the other options override it",
    )
    compodiff.add_argument(
        "--scheduler",
        default=None,
        help="sampler class: CompoDiffScheduler (the reference's), DDIMScheduler, DPMSolverMultistepScheduler, "
        "DPMSolverSinglestepScheduler, UniPCMultistepScheduler or DEISMultistepScheduler",
    )
    compodiff.add_argument(
        "--precision",
        default=None,
        choices=["float32", "float16", "bfloat16", "int8"],
        help="precision of the text encoder and the prior only (int8: dynamic quantisation, CPU); --dtype sets all "
        "weights",
    )


def sampling_from_args(args: argparse.Namespace) -> dict:
    """The CompoDiff sampling options given on the command line (by keyword of `load_retrieval_model`)."""
    return {
        key: getattr(args, key, None)
        for key in (
            "num_inference_steps",
            "guidance_scale",
            "image_guidance_scale",
            "num_samples_per_prompt",
            "seed",
            "preset",
            "scheduler",
            "precision",
        )
        if getattr(args, key, None) is not None
    }


def load_model_from_args(args: argparse.Namespace, name_or_path: str | None = None):
    import torch

    from hf_cir.retrieval import load_retrieval_model

    sampling = sampling_from_args(args)
    return load_retrieval_model(
        name_or_path or args.model, device=args.device, dtype=getattr(torch, args.dtype), **sampling
    )
