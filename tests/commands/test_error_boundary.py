"""The one error boundary: --debug and HF_CIR_DEBUG show the traceback, hf-cir's own bugs keep theirs, the real
entry point prints one line, the environment's failures (a full disk) are one line too; --no-progress silences
every bar; unknown words of the toy tokenizer run with a warning."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from .conftest import assert_error_line, run_cli


def test_debug_flag_and_environment_variable_show_the_traceback(capfd, tmp_path, monkeypatch):
    argv = ["search", "--index", tmp_path / "nope.index", "--text", "make it blue"]
    code, _, err = run_cli(capfd, *argv)
    assert_error_line(code, err, "search", "nope.index")
    with pytest.raises(FileNotFoundError, match="nope.index"):
        run_cli(capfd, *argv, "--debug")
    monkeypatch.setenv("HF_CIR_DEBUG", "1")
    with pytest.raises(FileNotFoundError, match="nope.index"):
        run_cli(capfd, *argv)


def test_an_internal_bug_keeps_its_traceback(capfd, tmp_path, monkeypatch):
    from hf_cir.retrieval import GalleryIndex

    def broken(path):
        raise TypeError("an hf-cir bug")  # not the user's input: must not become a tidy one-liner

    monkeypatch.setattr(GalleryIndex, "load", broken)
    with pytest.raises(TypeError, match="an hf-cir bug"):
        run_cli(capfd, "search", "--index", tmp_path, "--text", "make it blue")


def test_a_full_disk_is_one_line(capfd, workspace, monkeypatch):
    import hf_cir.retrieval.grid as grid

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(workspace / "grid.png"))

    monkeypatch.setattr(grid, "atomic_file", full)
    code, _, err = run_cli(
        capfd, "search", "--index", workspace / "photos.index", "--image", workspace / "photos" / "red.png",
        "--text", "make it blue", "--save-grid", workspace / "grid.png", "--no-progress",
    )  # fmt: skip
    assert_error_line(code, err, "search", "No space left on device", "grid.png")


def _hf_cir(*argv, env=None):
    return subprocess.run(
        [sys.executable, "-m", "hf_cir", *map(str, argv)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def test_the_real_entry_point(tmp_path):
    result = _hf_cir("search", "--index", tmp_path / "nope.index", "--text", "make it blue")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("hf-cir search: error: ") and "nope.index" in result.stderr
    debug = _hf_cir("search", "--index", tmp_path / "nope.index", "--text", "x", env={"HF_CIR_DEBUG": "1"})
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "FileNotFoundError" in debug.stderr


def test_no_progress_silences_every_bar(capfd, workspace, toy_lincir):
    argv = ["index", "--model", toy_lincir, "--images", workspace / "photos", "--output"]
    code, _, err = run_cli(capfd, *argv, workspace / "a.index")
    assert code == 0 and "Indexing" in err and "\r" in err  # without the flag there are progress bars
    code, _, err = run_cli(capfd, *argv, workspace / "b.index", "--no-progress")
    assert code == 0 and err == ""
    code, _, err = run_cli(
        capfd, "search", "--index", workspace / "b.index", "--image", workspace / "photos" / "red.png", "--text",
        "make it blue", "--no-progress",
    )  # fmt: skip
    assert code == 0 and err == ""


def test_unknown_words_run_with_a_warning_naming_them(capfd, workspace):
    code, out, err = run_cli(
        capfd, "search", "--index", workspace / "photos.index", "--image", workspace / "photos" / "red.png",
        "--text", "make it teal zorb", "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    assert "'teal', 'zorb'" in err and "unknown token" in err
    assert len(out.strip().splitlines()) == 1 + 3 + 1  # header, three results, the left-out query note
