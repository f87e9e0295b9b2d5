"""The `hf-cir` command. Each subcommand lives in its own module of `hf_cir.commands`."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from hf_cir.commands._common import CommandLineParser, run_command

# Module names under `hf_cir.commands`; each defines `register(subparsers)` that adds one subcommand
# whose parser has `func` set to a callable taking the parsed arguments and returning an exit code.
COMMAND_MODULES: list[str] = ["convert", "export", "index", "search", "evaluate", "demo", "app"]


def build_parser() -> argparse.ArgumentParser:
    parser = CommandLineParser(
        prog="hf-cir",
        description="Zero-shot composed image retrieval with LinCIR and CompoDiff.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"hf_cir.commands.{name}").register(subparsers)
    return parser


# Exit status when the reader of our output went away (128 + SIGPIPE), as a Unix tool killed by SIGPIPE reports it.
CLOSED_PIPE_EXIT_STATUS = 141


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            parser = build_parser()
            args = parser.parse_args(argv)
            if getattr(args, "func", None) is None:
                parser.print_help()
                status = 2
            else:
                status = run_command(args.command, args.func, args)
        finally:  # also after --help's SystemExit
            sys.stdout.flush()  # a closed pipe shows here, in the handler below, not in Python's flush at exit
        return status
    except BrokenPipeError:
        # `hf-cir search --json | head -1`: the reader has what it wanted. Stop quietly; standard output goes to
        # /dev/null so that Python's final flush of the unwritten rest cannot complain either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return CLOSED_PIPE_EXIT_STATUS


if __name__ == "__main__":
    sys.exit(main())
