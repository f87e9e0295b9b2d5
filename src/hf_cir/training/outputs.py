# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""What a training run may replace in its `--output_dir`: only what hf-cir wrote there.

`training_run.json` records the run that owns the folder (its identity) and, under `"written"`, every top-level entry
hf-cir created in it: checkpoints, the model files, the card, the training log. An entry is replaced or deleted only
when it is listed there; anything else a run would write over (a `README.md` of the user's, a `checkpoint-1/` folder
that holds their files) stops the run before it starts, with one line naming the file.

A `training_run.json` written before the record existed (no `"written"` key) was written by hf-cir: its folder's
entries named like a run's outputs are taken as that run's.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from ..utils import atomic_file
from ..utils.io import ArtefactKind, _is_temporary_name, remove_stale_temporaries

__all__ = [
    "RUN_FILE_NAME",
    "TRAINING_ENTRIES",
    "check_foreign_entries",
    "claim_outputs",
    "output_entry_matcher",
    "owned_outputs",
    "publish_outputs",
    "read_run_record",
    "record_run",
    "release_outputs",
]

RUN_FILE_NAME = "training_run.json"
WRITTEN_KEY = "written"
# The entries every training run may write at the top of its output folder (the model's own come from its kind).
TRAINING_ENTRIES = (
    RUN_FILE_NAME,
    "training_log.json",
    "checkpoint-*",
    ".checkpoint-*.tmp",
    "best",
    ".validation_cache",
    "logs",
)
_PUBLISH_TARGET = "output"  # the name the temporaries of `publish_outputs` carry (`.output.{pid}.{random}.tmp`)


def output_entry_matcher(kind: ArtefactKind | None = None, entries: Iterable[str] = ()) -> Callable[[str], bool]:
    """A predicate telling whether a top-level entry name is one that a run writing a folder of `kind` may write:
    the training entries, `kind`'s metadata file and entry patterns, and `entries` (e.g. a pipeline's component
    folders, a custom `--logging_dir`).

    Example:

    ```python
    >>> from hf_cir.hub.saving import LINCIR_FOLDER
    >>> from hf_cir.training.outputs import output_entry_matcher
    >>> may_write = output_entry_matcher(LINCIR_FOLDER)
    >>> may_write("README.md"), may_write("checkpoint-3"), may_write("notes.txt")
    (True, True, False)
    ```
    """
    patterns = [*TRAINING_ENTRIES, *entries]
    if kind is not None:
        patterns += [*kind.entries, *([kind.metadata_file] if kind.metadata_file else [])]
    return lambda name: any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def read_run_record(root: str | os.PathLike) -> dict | None:
    """The parsed `training_run.json` of `root`, `None` when there is none.

    Raises a `FileExistsError` when a file of that name is not one hf-cir wrote (not a JSON object naming a script).
    """
    path = Path(root) / RUN_FILE_NAME
    if not path.exists() and not path.is_symlink():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8")) if path.is_file() and not path.is_symlink() else None
    except (OSError, ValueError):
        record = None
    if not isinstance(record, dict) or not isinstance(record.get("script"), str):
        raise FileExistsError(
            f"--output_dir: {path} was not written by an hf-cir training run; refusing to replace it. Move it away "
            "or choose another --output_dir."
        )
    return record


def owned_outputs(root: str | os.PathLike, may_write: Callable[[str], bool] | None = None) -> set[str]:
    """The top-level entries of `root` that hf-cir wrote (its `training_run.json` record). For a record from before
    the `"written"` list, the existing entries `may_write` accepts (by default the training entries)."""
    root = Path(root)
    may_write = may_write or output_entry_matcher()
    record = read_run_record(root)
    if record is None:
        return set()
    written = record.get(WRITTEN_KEY)
    if isinstance(written, list):
        return {name for name in written if isinstance(name, str)} | {RUN_FILE_NAME}
    existing = [entry.name for entry in root.iterdir()] if root.is_dir() else []
    return {name for name in existing if may_write(name)} | {RUN_FILE_NAME}


def _write_record(root: Path, record: dict) -> None:
    with atomic_file(root / RUN_FILE_NAME, "w") as handle:
        json.dump(record, handle, indent=2, sort_keys=True)


def _foreign_message(path: Path) -> str:
    return (
        f"--output_dir: {path} was not written by an hf-cir training run; refusing to replace it. Move it away or "
        "choose another --output_dir."
    )


def check_foreign_entries(root: str | os.PathLike, may_write: Callable[[str], bool]) -> set[str]:
    """Before a run starts: raise a `FileExistsError` naming the first entry of `root` that the run may write
    (`may_write`) but hf-cir did not (not in the record). Temporaries of hf-cir's atomic writes are never in the way.
    Returns the entries hf-cir wrote."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"--output_dir {root} is a file, not a folder. Choose another --output_dir.")
    root.mkdir(parents=True, exist_ok=True)
    owned = owned_outputs(root, may_write)
    for entry in sorted(root.iterdir()):
        if entry.name not in owned and may_write(entry.name) and not _is_temporary_name(entry.name):
            raise FileExistsError(_foreign_message(entry))
    return owned


def record_run(root: str | os.PathLike, run_identity: dict, may_write: Callable[[str], bool] | None = None) -> None:
    """Write `training_run.json`: the run's identity and the entries hf-cir wrote (call it on the main process)."""
    root = Path(root)
    _write_record(root, {**run_identity, WRITTEN_KEY: sorted(owned_outputs(root, may_write))})


def claim_outputs(root: str | os.PathLike, names: Iterable[str]) -> None:
    """Record `names` (top-level entries of `root`) as hf-cir's before writing them. Raises a `FileExistsError` naming
    the first one that exists and was not written by hf-cir (call it on the main process)."""
    root = Path(root)
    record = read_run_record(root) or {"script": "unknown"}
    owned = owned_outputs(root)
    names = list(names)
    for name in names:
        path = root / name
        if name not in owned and (path.exists() or path.is_symlink()):
            raise FileExistsError(_foreign_message(path))
    if not set(names) <= owned:
        _write_record(root, {**record, WRITTEN_KEY: sorted(owned | set(names))})


def release_outputs(root: str | os.PathLike, names: Iterable[str]) -> None:
    """Forget `names` after hf-cir deleted them (call it on the main process)."""
    root = Path(root)
    record = read_run_record(root)
    if record is None:
        return
    owned = owned_outputs(root)
    if owned & set(names):
        _write_record(root, {**record, WRITTEN_KEY: sorted(owned - set(names))})


def publish_outputs(root: str | os.PathLike, write: Callable[[Path], None]) -> list[str]:
    """Write a run's final outputs with `write(folder)` into a temporary folder inside `root`, then move each entry
    into `root`: an entry of the same name is replaced only when hf-cir wrote it (nothing is moved otherwise: the
    `FileExistsError` names the entry and where the outputs were left). Returns the published names.

    A model's `save_pretrained` never sees `root`, so it cannot delete or overwrite anything there.
    """
    root = Path(root)
    remove_stale_temporaries(root / _PUBLISH_TARGET)
    staging = Path(tempfile.mkdtemp(prefix=f".{_PUBLISH_TARGET}.{os.getpid()}.", suffix=".tmp", dir=root))
    try:
        write(staging)
        names = sorted(entry.name for entry in staging.iterdir())
        owned = owned_outputs(root)
        for name in names:
            if name not in owned and ((root / name).exists() or (root / name).is_symlink()):
                kept = root / f"unpublished-{os.getpid()}"
                os.replace(staging, kept)
                raise FileExistsError(f"{_foreign_message(root / name)} The trained outputs were left in {kept}.")
        claim_outputs(root, names)
        for name in names:
            target = root / name
            if target.is_dir() and not target.is_symlink():
                trash = Path(tempfile.mkdtemp(prefix=f".{_PUBLISH_TARGET}.{os.getpid()}.", suffix=".old", dir=root))
                os.replace(target, trash / name)
                os.replace(staging / name, target)
                shutil.rmtree(trash, ignore_errors=True)
            else:
                os.replace(staging / name, target)
        return names
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(staging)
