"""Overwrite only what is ours, leave nothing behind: `check_replaceable`, `atomic_directory`, stale temporaries."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from hf_cir.utils.io import ArtefactKind, atomic_directory, check_replaceable, remove_stale_temporaries

NOTES = ArtefactKind("notes folder", "notes.json", lambda meta: meta.get("kind") == "notes", entries=("*.txt",))


def _notes_folder(path, *extra):
    path.mkdir()
    (path / "notes.json").write_text(json.dumps({"kind": "notes"}))
    (path / "a.txt").write_text("a")
    for name in extra:
        (path / name).write_text("foreign")
    return path


def test_only_a_folder_of_the_kind_with_nothing_else_is_replaceable(tmp_path):
    check_replaceable(tmp_path / "missing", NOTES)  # nothing to lose
    (tmp_path / "empty").mkdir()
    check_replaceable(tmp_path / "empty", NOTES)
    check_replaceable(_notes_folder(tmp_path / "ours"), NOTES)
    with pytest.raises(FileExistsError, match=r"thesis\.docx"):
        check_replaceable(_notes_folder(tmp_path / "mixed", "thesis.docx"), NOTES)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "a.txt").write_text("no metadata: not ours")
    with pytest.raises(FileExistsError, match="is not a notes folder"):
        check_replaceable(tmp_path / "foreign", NOTES)
    (tmp_path / "wrong").mkdir()
    (tmp_path / "wrong" / "notes.json").write_text('["a list"]')
    with pytest.raises(FileExistsError, match="is not a notes folder"):
        check_replaceable(tmp_path / "wrong", NOTES)
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        check_replaceable(tmp_path / "file.txt", NOTES)
    (tmp_path / "link").symlink_to(tmp_path / "ours")
    with pytest.raises(FileExistsError, match="symbolic link"):
        check_replaceable(tmp_path / "link", NOTES)


def test_inputs_and_their_parents_are_never_replaceable(tmp_path):
    images = _notes_folder(tmp_path / "images")  # even when it looks like ours
    with pytest.raises(ValueError, match="is the --images folder"):
        check_replaceable(images, NOTES, {"--images": images}, argument="--output")
    with pytest.raises(ValueError, match="contains the --images folder"):
        check_replaceable(tmp_path, NOTES, {"--images": images}, argument="--output")


def test_atomic_directory_refuses_without_deleting(tmp_path):
    mixed = _notes_folder(tmp_path / "mixed", "thesis.docx")
    with pytest.raises(FileExistsError):
        with atomic_directory(mixed, overwrite=True, kind=NOTES) as tmp:
            (tmp / "b.txt").write_text("new")
    assert sorted(p.name for p in mixed.iterdir()) == ["a.txt", "notes.json", "thesis.docx"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mixed"]
    with pytest.raises(FileExistsError):  # no kind: an existing folder is never replaced
        with atomic_directory(_notes_folder(tmp_path / "ours"), overwrite=True):
            pass
    with atomic_directory(tmp_path / "ours", overwrite=True, kind=NOTES) as tmp:
        (tmp / "notes.json").write_text(json.dumps({"kind": "notes"}))
    assert sorted(p.name for p in (tmp_path / "ours").iterdir()) == ["notes.json"]
    (tmp_path / "empty").mkdir()
    with atomic_directory(tmp_path / "empty") as tmp:  # an empty folder holds nothing to lose
        (tmp / "x.txt").write_text("x")
    assert (tmp_path / "empty" / "x.txt").is_file()


def test_a_killed_write_leaves_a_temporary_that_the_next_write_removes(tmp_path):
    target = tmp_path / "out"
    script = textwrap.dedent(
        f"""
        import os, signal
        from hf_cir.utils.io import atomic_directory
        with atomic_directory({str(target)!r}) as tmp:
            (tmp / "half.bin").write_bytes(b"half")
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    killed = subprocess.run([sys.executable, "-c", script], timeout=120)
    assert killed.returncode == -signal.SIGKILL
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert len(leftovers) == 1 and leftovers[0].startswith(".out.") and leftovers[0].endswith(".tmp")
    with atomic_directory(target) as tmp:
        (tmp / "whole.bin").write_bytes(b"whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_write_in_progress_elsewhere_is_left_alone(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        alive = tmp_path / f".out.{sleeper.pid}.abc123.tmp"
        alive.mkdir()
        dead = tmp_path / ".out.999999999.abc123.tmp"
        dead.mkdir()
        other = tmp_path / ".other.999999999.abc123.tmp"  # another target's
        other.mkdir()
        assert remove_stale_temporaries(tmp_path / "out") == [dead]
        assert alive.is_dir() and other.is_dir() and not dead.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert os.path.isdir(alive)
