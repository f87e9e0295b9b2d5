"""A newcomer's frictions with the command line: a mistyped flag names the flag meant and the subcommand's --help, and
a closed pipe (`hf-cir search --json | head -1`) ends quietly."""

import os
import subprocess
import sys

import pytest

from .conftest import assert_error_line, run_cli


@pytest.mark.parametrize(
    "argv, command, fragments",
    [
        (
            ["search", "--index", "x.index", "--imgae", "q.png"],
            "search",
            ["--image for --imgae", "hf-cir search --help"],
        ),
        (["search", "--idnex", "x.index"], "search", ["--index for --idnex", "required: --index"]),
        (["index", "--modle", "m", "--images", "p", "--output", "o"], "index", ["--model for --modle"]),
        (["search", "--index", "x", "--top-kk=3"], "search", ["--top-k for --top-kk"]),
        (
            ["convert", "lincir", "--phi-chekpoint", "a.pt", "--clip", "c", "--output-dir", "o"],
            "convert",
            ["--phi-checkpoint for --phi-chekpoint", "hf-cir convert lincir --help"],
        ),
    ],
)
def test_mistyped_flag_suggests_the_right_one(capfd, argv, command, fragments):
    code, out, err = run_cli(capfd, *argv)
    line = assert_error_line(code, err, command, "did you mean", *fragments)
    assert out == "", line


def test_unknown_flag_without_a_close_match_still_points_at_help(capfd):
    code, _, err = run_cli(capfd, "search", "--index", "x", "--zzzzzz")
    line = assert_error_line(code, err, "search", "unrecognized arguments: --zzzzzz", "hf-cir search --help")
    assert "did you mean" not in line


def test_closed_pipe_ends_quietly(workspace):
    """The reader of `hf-cir search --json` goes away before the answer is written: no traceback, no error line."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # like `| head -1` that has already exited
    try:
        result = subprocess.run(
            [sys.executable, "-m", "hf_cir", "search", "--index", workspace / "photos.index",
             "--image", workspace / "photos" / "red.png", "--text", "make it blue", "--json", "--no-progress"],
            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=300,
            env=dict(os.environ, OMP_NUM_THREADS="1"),
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert result.returncode in (0, 141), result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "error" not in result.stderr.lower(), result.stderr[-2000:]
    assert "Broken pipe" not in result.stderr and "Exception ignored" not in result.stderr, result.stderr[-2000:]
