# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""The command-line boundary of hf-cir's training scripts: a usage error, or a failure caused by the user's input or
environment (a captions file that is not text, a damaged checkpoint, an output folder holding someone else's files),
ends the script with one line, `<script>: error: <what is wrong>`, and exit status 2. `HF_CIR_DEBUG=1` shows the
traceback instead; a bug in hf-cir keeps its traceback."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from ..utils.errors import is_user_error, one_line

__all__ = ["TrainingArgumentParser", "run_training_script"]

DEBUG_ENVIRONMENT_VARIABLE = "HF_CIR_DEBUG"


class TrainingArgumentParser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` whose usage errors are one line, `<script>: error: <message> (see `<script>
    --help`)`, with exit status 2.

    Example:

    ```python
    >>> from hf_cir.training.cli import TrainingArgumentParser
    >>> parser = TrainingArgumentParser(prog="train_lincir.py")
    >>> _ = parser.add_argument("--steps", type=int)
    >>> parser.parse_args(["--steps", "many"])  # doctest: +SKIP
    train_lincir.py: error: argument --steps: invalid int value: 'many' (see `train_lincir.py --help`)
    ```
    """

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def run_training_script(
    main: Callable[[argparse.Namespace], int | None],
    parse_args: Callable[[Sequence[str] | None], argparse.Namespace],
    argv: Sequence[str] | None = None,
    prog: str | None = None,
) -> int:
    """Parse `argv` with `parse_args` and run `main` inside the boundary (see the module docstring); return the exit
    status. A script ends with `sys.exit(run_training_script(main, parse_args))`.

    Example:

    ```python
    >>> import argparse
    >>> from hf_cir.training.cli import run_training_script
    >>> def main(args):
    ...     raise FileNotFoundError(f"--train_file {args.file} does not exist.")
    >>> run_training_script(main, lambda argv: argparse.Namespace(file=argv[0]), ["captions.txt"], prog="train.py")
    2
    ```
    """
    prog = prog or os.path.basename(sys.argv[0])
    args = parse_args(argv)
    try:
        return int(main(args) or 0)
    except KeyboardInterrupt:
        if os.environ.get(DEBUG_ENVIRONMENT_VARIABLE, "") not in ("", "0"):
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if os.environ.get(DEBUG_ENVIRONMENT_VARIABLE, "") not in ("", "0") or not is_user_error(error):
            raise
        print(f"{prog}: error: {one_line(error)}", file=sys.stderr)
        return 2
