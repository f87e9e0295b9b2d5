"""The `hf-cir` command. Each subcommand lives in its own module of `hf_cir.commands`."""

from __future__ import annotations

import argparse
import importlib
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    return run_command(args.command, args.func, args)


if __name__ == "__main__":
    sys.exit(main())
