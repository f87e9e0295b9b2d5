"""The `--help` examples: every one parses as written, and those under a heading that says "runs as written" run as
written on the shipped toy models (`toy:lincir`, `toy:compodiff`, `toy:images`)."""

import argparse
import shlex

import pytest

from hf_cir.cli import build_parser
from hf_cir.toy.names import TOY_NAMES, TOY_PREFIX, resolve_toy_name


def _subparsers(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                yield sub
                yield from _subparsers(sub)


def help_examples() -> list[tuple[str, list[str], bool]]:
    """`(subcommand, argv, runs as written)` of every `hf-cir ...` line of every epilog (continuations joined)."""
    examples = []
    for parser in _subparsers(build_parser()):
        runnable, lines = False, (parser.epilog or "").splitlines()
        index = 0
        while index < len(lines):
            line = lines[index]
            if line and not line.startswith(" "):  # a heading
                runnable = "runs as written" in line
            command = line.strip()
            while command.endswith("\\") and index + 1 < len(lines):
                index += 1
                command = command[:-1] + " " + lines[index].strip()
            if command.startswith("hf-cir "):
                examples.append((parser.prog, shlex.split(command, comments=True)[1:], runnable))
            index += 1
    return examples


EXAMPLES = help_examples()


def test_there_are_runnable_examples():
    runnable = {prog for prog, _, runs in EXAMPLES if runs}
    assert {"hf-cir index", "hf-cir search", "hf-cir export"} <= runnable, runnable


@pytest.mark.parametrize("prog, argv, runs", EXAMPLES, ids=[" ".join(argv)[:80] for _, argv, _ in EXAMPLES])
def test_every_example_parses_and_names_only_known_toy_names(prog, argv, runs):
    args = build_parser().parse_args(argv)  # no unknown flag, no missing argument, valid choices
    assert callable(getattr(args, "func", None)), argv
    for word in argv:
        if word.startswith(TOY_PREFIX):
            assert word[len(TOY_PREFIX) :].partition("/")[0] in TOY_NAMES, word
            if not word.startswith(f"{TOY_PREFIX}images"):
                resolve_toy_name(word)  # a shipped checkpoint folder
    if runs:
        assert any(word.startswith(TOY_PREFIX) for word in argv) or "--index" in argv, argv


def test_unknown_toy_name_is_one_clear_error():
    with pytest.raises(ValueError, match="Unknown toy name 'toy:lincr'; expected one of: toy:lincir"):
        resolve_toy_name("toy:lincr")
    with pytest.raises(ValueError, match="names a folder"):
        resolve_toy_name("toy:lincir/config.json")


@pytest.mark.slow
def test_runnable_examples_run_as_written(tmp_path, monkeypatch):
    """Minutes of compute (the toy gallery is rendered and indexed twice): `pytest -m slow`."""
    from hf_cir.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for prog, argv, runs in EXAMPLES:
        if runs:
            assert main(argv + ["--no-progress"] if "--no-progress" in _options(prog) else argv) == 0, argv


def _options(prog: str) -> set[str]:
    parser = next(p for p in _subparsers(build_parser()) if p.prog == prog)
    return {option for action in parser._actions for option in action.option_strings}
