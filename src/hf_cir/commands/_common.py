"""Helpers shared by the `hf-cir` subcommands: the one error boundary, model options and model loading.

Every failure caused by the user's input or environment (a bad argument, a missing, unreadable or malformed file, a
refused pickle, a full disk) ends a command with one line on stderr, `hf-cir <command>: error: <what is wrong>`, and
exit status 2. `--debug` (or `HF_CIR_DEBUG=1`) shows the traceback instead. Anything else is a bug in hf-cir and
keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from ..utils.errors import USER_ERRORS, is_user_error
from ..utils.errors import one_line as _one_line
from ..utils.progress import disable_progress_bars

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
    "resolve_toy_names",
    "run_command",
    "sampling_from_args",
]

DEBUG_ENVIRONMENT_VARIABLE = "HF_CIR_DEBUG"


def report_error(command: str, error: BaseException) -> int:
    """Print `hf-cir <command>: error: <error>` as one line on stderr and return the exit status 2."""
    print(f"hf-cir {command}: error: {_one_line(error)}", file=sys.stderr)
    return 2


def _debugging(args: argparse.Namespace | None) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get(DEBUG_ENVIRONMENT_VARIABLE, "") not in ("", "0")


def run_command(command: str, func: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    """Run a subcommand inside the error boundary (see the module docstring); return its exit status."""
    try:
        if getattr(args, "no_progress", False):
            disable_progress_bars()
        resolve_toy_names(args)
        return int(func(args) or 0)
    except KeyboardInterrupt:
        if _debugging(args):
            raise
        print(f"hf-cir {command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        raise  # the reader of the output went away: `hf_cir.cli.main` ends quietly
    except Exception as error:
        if _debugging(args) or not is_user_error(error):
            raise
        return report_error(command, error)


# Arguments that hold the user's words, never a path: a `toy:` there is text.
_TEXT_ARGUMENTS = frozenset({"text", "negative_text"})


def resolve_toy_names(args: argparse.Namespace) -> None:
    """Replace every `toy:NAME` value of the parsed arguments (`toy:lincir`, `toy:images/...`) by the path it stands
    for ([`hf_cir.toy.names.resolve_toy_name`]): the one place where the command line resolves them."""

    def is_toy(value) -> bool:
        return isinstance(value, str) and value.startswith("toy:") and " " not in value

    for key, value in vars(args).items():
        if key in _TEXT_ARGUMENTS or not (is_toy(value) or (isinstance(value, list) and any(map(is_toy, value)))):
            continue
        from hf_cir.toy.names import resolve_toy_name

        setattr(
            args, key, [resolve_toy_name(v) for v in value] if isinstance(value, list) else resolve_toy_name(value)
        )


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
        self.exit(2, f"{prog}: error: {message}{self._suggestion()} (see `{self.prog} --help`)\n")

    def parse_known_args(self, args=None, namespace=None):
        self._words = [str(word) for word in (sys.argv[1:] if args is None else args)]
        parsed, extras = super().parse_known_args(args, namespace)
        if extras and self._subparsers is not None:
            # argparse reports a subcommand's unknown flags from the top parser: report them from the subcommand
            # that was given them, with its own options to suggest and its own --help.
            parser = self._selected_subcommand(self._words)
            if parser is not self:
                parser.error(f"unrecognized arguments: {' '.join(map(str, extras))}")
        return parsed, extras

    def _selected_subcommand(self, words: list[str]) -> argparse.ArgumentParser:
        """The deepest subcommand parser named in `words` (`hf-cir convert lincir ...` -> the `lincir` parser)."""
        parser = self
        for word in words:
            subcommands = next(
                (action for action in parser._actions if isinstance(action, argparse._SubParsersAction)), None
            )
            if subcommands is not None and word in subcommands.choices:
                parser = subcommands.choices[word]
        return parser

    def _suggestion(self) -> str:
        """`" (did you mean --top-k for --top-kk?)"` for the long flags given to this parser that it does not have
        (difflib's closest of its options), or `""`. Also shown with "the following arguments are required": a
        mistyped required flag is reported as missing first."""
        import difflib

        options = [option for action in self._actions for option in action.option_strings if option.startswith("--")]
        guesses = []
        for word in getattr(self, "_words", []):
            flag = word.split("=", 1)[0]
            if not flag.startswith("--") or flag == "--" or any(option.startswith(flag) for option in options):
                continue  # a value, or one of our options (argparse accepts unambiguous prefixes)
            close = difflib.get_close_matches(flag, options, n=1, cutoff=0.6)
            guesses += [f"{close[0]} for {flag}"] if close else []
        return f" (did you mean {', '.join(guesses)}?)" if guesses else ""


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
        help="a model folder or Hub id of any family hf-cir runs (the family is read from its files); toy:lincir and "
        "toy:compodiff name the shipped toy models"
        + ("; several: --model A B or --model A --model B" if multiple else ""),
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps, ... (default: accelerate's choice)")
    parser.add_argument(
        "--dtype", default="float32", choices=["float32", "float16", "bfloat16"], help="weights' dtype"
    )
    from hf_cir.families import model_families

    # The settings of the families that sample (their `sampling_options`), named from the registry.
    samplers = [family.title for family in model_families().values() if family.sampling_options]
    sampling = parser.add_argument_group(f"{' / '.join(samplers)} sampling ({' and '.join(samplers)} models only)")
    sampling.add_argument("--num-inference-steps", type=int, default=None)
    sampling.add_argument("--guidance-scale", type=float, default=None)
    sampling.add_argument("--image-guidance-scale", type=float, default=None)
    sampling.add_argument("--num-samples-per-prompt", type=int, default=None)
    sampling.add_argument("--seed", type=int, default=None, help="seed of the sampling noise (default 0)")
    sampling.add_argument(
        "--preset",
        default=None,
        help="a named speed setting, e.g. interactive (stochastic DPM-Solver++, 6 steps, 2 samples, int8 text "
        "encoder and prior on a CPU, a 64-text encoding cache); the other options override it",
    )
    sampling.add_argument(
        "--scheduler",
        default=None,
        help="sampler class: CompoDiffScheduler (the reference's), DDIMScheduler, DPMSolverMultistepScheduler, "
        "DPMSolverSinglestepScheduler, UniPCMultistepScheduler or DEISMultistepScheduler",
    )
    sampling.add_argument(
        "--precision",
        default=None,
        choices=["float32", "float16", "bfloat16", "int8"],
        help="precision of the text encoder and the prior only (int8: dynamic quantisation, CPU); --dtype sets all "
        "weights",
    )


def sampling_from_args(args: argparse.Namespace) -> dict:
    """The sampling options given on the command line (by keyword of `load_retrieval_model`): the families'
    `sampling_options` (`hf_cir.families`) that this command has an option for."""
    from hf_cir.families import model_families

    keys = dict.fromkeys(key for family in model_families().values() for key in family.sampling_options)
    return {key: getattr(args, key) for key in keys if getattr(args, key, None) is not None}


def load_model_from_args(args: argparse.Namespace, name_or_path: str | None = None):
    import torch

    from hf_cir.retrieval import load_retrieval_model

    sampling = sampling_from_args(args)
    return load_retrieval_model(
        name_or_path or args.model, device=args.device, dtype=getattr(torch, args.dtype), **sampling
    )
