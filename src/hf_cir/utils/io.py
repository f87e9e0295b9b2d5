"""Writing files and folders safely: never half-written, never replacing what hf-cir did not write.

- [`atomic_file`] / [`atomic_directory`] write to a temporary entry beside the target and rename it into place, so
  a reader sees the old result or the new one, never a part of one. Temporaries carry the writer's process id; the
  next write to the same target removes those whose process is gone (a run killed mid-write leaves no litter).
- [`check_replaceable`] is the one rule for replacing an existing folder (`--overwrite`, `overwrite=True`): only a
  folder that is an hf-cir artefact of the expected [`ArtefactKind`], identified by its own metadata file, holding
  only entries of that kind, and not an input of the run (an images folder, or a folder that contains one).
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ArtefactKind", "atomic_directory", "atomic_file", "check_replaceable", "remove_stale_temporaries"]


@dataclass(frozen=True)
class ArtefactKind:
    """How hf-cir recognises a folder it wrote, so that it only ever replaces its own folders.

    Args:
        name (`str`): What it is called in messages, e.g. `"hf-cir index"`.
        metadata_file (`str` or `None`): The JSON file that identifies it, e.g. `"index.json"`; `None` for a folder
            identified by its entries alone (a build's work folder of `shard-*.safetensors`).
        identify (`Callable[[Any], bool]`): Whether the parsed metadata file is one of this kind.
        entries (`tuple[str, ...]`): Shell patterns of the top-level entries such a folder may hold.
        named_entries (`Callable[[Any], Iterable[str]]`, *optional*): More entries named by the metadata itself
            (a pipeline's component folders in `model_index.json`).

    Example:

    ```python
    >>> from hf_cir.utils.io import ArtefactKind
    >>> kind = ArtefactKind("notes folder", "notes.json", lambda meta: meta.get("kind") == "notes", ("*.txt",))
    >>> kind.allows("a.txt", {}), kind.allows("thesis.docx", {})
    (True, False)
    ```
    """

    name: str
    metadata_file: str | None
    identify: Callable[[Any], bool]
    entries: tuple[str, ...] = ()
    named_entries: Callable[[Any], Iterable[str]] | None = None

    def allows(self, entry: str, metadata: Any) -> bool:
        """Whether a top-level entry called `entry` belongs in a folder of this kind with this metadata."""
        if entry == self.metadata_file or _is_temporary_name(entry):
            return True
        named = set(self.named_entries(metadata)) if self.named_entries is not None else set()
        return entry in named or any(fnmatch.fnmatchcase(entry, pattern) for pattern in self.entries)

    def read_metadata(self, folder: Path) -> Any | None:
        """The folder's parsed metadata file if it identifies this kind, else `None` (`{}` without a metadata file)."""
        if self.metadata_file is None:
            return {}
        try:
            metadata = json.loads((folder / self.metadata_file).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        try:
            return metadata if self.identify(metadata) else None
        except (AttributeError, TypeError, KeyError):
            return None


# -- temporaries -----------------------------------------------------------------------------------------------------

_TEMPORARY = re.compile(r"^\.(?P<target>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.(?:tmp|old)$")


def _is_temporary_name(name: str) -> bool:
    return _TEMPORARY.match(name) is not None


def _process_exists(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists but belongs to someone else
        return True
    return True


def remove_stale_temporaries(target: str | os.PathLike) -> list[Path]:
    """Remove the temporaries that interrupted writes of `target` left beside it; return what was removed.

    Only entries named like [`atomic_file`] / [`atomic_directory`] name theirs (`.{name}.{pid}.{random}.tmp` or
    `.old`) whose writing process no longer exists are removed, so a write in progress elsewhere is left alone.

    Example:

    ```python
    >>> import tempfile, pathlib
    >>> from hf_cir.utils.io import remove_stale_temporaries
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> (folder / ".out.999999999.abc123.tmp").mkdir()  # left by a killed process
    >>> [path.name for path in remove_stale_temporaries(folder / "out")]
    ['.out.999999999.abc123.tmp']
    ```
    """
    target = Path(target)
    removed: list[Path] = []
    try:
        siblings = list(os.scandir(target.parent))
    except OSError:
        return removed
    for entry in siblings:
        match = _TEMPORARY.match(entry.name)
        if match is None or match["target"] != target.name or _process_exists(int(match["pid"])):
            continue
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
        removed.append(path)
    return removed


def _temporary_prefix(target: Path) -> str:
    return f".{target.name}.{os.getpid()}."


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _apply_default_permissions(path: str | os.PathLike, is_dir: bool) -> None:
    # mkstemp/mkdtemp create private (0600/0700) entries; the result should get what an ordinary open/mkdir gives.
    os.chmod(path, (0o777 if is_dir else 0o666) & ~_current_umask())


def _fsync_directory(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# -- replacing -------------------------------------------------------------------------------------------------------


def check_replaceable(
    path: str | os.PathLike,
    kind: ArtefactKind | None,
    protected: Mapping[str, str | os.PathLike] | None = None,
    argument: str = "output",
) -> None:
    """Raise unless replacing `path` can lose nothing but an earlier result of the same kind.

    A missing `path` or an empty folder is always replaceable. Otherwise `path` must be a real folder (not a file or
    a link) whose metadata file identifies it as `kind` and whose every top-level entry belongs to that kind; and it
    must neither be nor contain any `protected` path (the run's inputs: `{"--images": images_folder}`).

    Raises:
        ValueError: `path` is or contains a protected path.
        FileExistsError: `path` is something else than a folder of `kind`.

    Example:

    ```python
    >>> import tempfile, pathlib
    >>> from hf_cir.utils.io import ArtefactKind, check_replaceable
    >>> kind = ArtefactKind("notes folder", "notes.json", lambda meta: meta.get("kind") == "notes", ("*.txt",))
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "thesis.docx").write_text("four years of work")
    >>> check_replaceable(folder, kind)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileExistsError: `output`: ... is not a notes folder (no notes.json of one); refusing to replace it...
    ```
    """
    path = Path(path)
    where = f"{_quoted(argument)}: {path}"
    if path.is_symlink():
        raise FileExistsError(f"{where} is a symbolic link; refusing to replace it. Choose another folder.")
    if not path.exists():
        return
    resolved = path.resolve()
    for name, value in (protected or {}).items():
        guarded = Path(value).resolve()
        if guarded == resolved:
            raise ValueError(f"{where} is the {name} folder; refusing to replace it. Choose another folder.")
        if resolved in guarded.parents:
            raise ValueError(
                f"{where} contains the {name} folder {value}; refusing to replace it. Choose another folder."
            )
    if not path.is_dir():
        raise FileExistsError(f"{where} is a file, not a folder; refusing to replace it. Choose another folder.")
    entries = sorted(entry.name for entry in path.iterdir())
    if not entries:
        return
    what = kind.name if kind is not None else "folder hf-cir wrote"
    metadata = kind.read_metadata(path) if kind is not None else None
    if metadata is None:
        evidence = f" (no {kind.metadata_file} of one)" if kind is not None and kind.metadata_file else ""
        raise FileExistsError(
            f"{where} is not {_article(what)} {what}{evidence}; refusing to replace it. Choose another folder, or "
            "remove it yourself."
        )
    foreign = [entry for entry in entries if not kind.allows(entry, metadata)]
    if foreign:
        listing = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise FileExistsError(
            f"{where} is {_article(what)} {what} but also holds files hf-cir did not write ({listing}); refusing to "
            "replace it. Move them away first, or choose another folder."
        )


def _quoted(argument: str) -> str:
    return argument if argument.startswith("-") else f"`{argument}`"


def _is_empty_folder(path: Path) -> bool:
    return path.is_dir() and next(path.iterdir(), None) is None


def _article(noun: str) -> str:
    return "an" if noun[:1].lower() in "aeiou" or noun.startswith("hf-") else "a"


# -- writing ---------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb") -> Iterator:
    """Open a temporary file beside `path`; on success it replaces `path` in one rename.

    Example:

    ```python
    >>> import tempfile, pathlib
    >>> from hf_cir.utils import atomic_file
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "ids.txt"
    >>> with atomic_file(target, "w") as handle:
    ...     _ = handle.write("a\\n")
    >>> target.read_text()
    'a\\n'
    ```
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=_temporary_prefix(target), suffix=".tmp", dir=target.parent)
    try:
        _apply_default_permissions(tmp_name, is_dir=False)
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
        _fsync_directory(target.parent)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        if _is_disk_full(error):
            raise _disk_full(target) from error
        raise


def _is_disk_full(error: BaseException) -> bool:
    """Whether `error` is a full disk or quota: ENOSPC / EDQUOT, also when a library wrapped it in its own text."""
    if not isinstance(error, OSError):
        return False
    text = str(error)
    return error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)) or any(
        marker in text for marker in ("No space left on device", "Disk quota exceeded")
    )


def _disk_full(target: Path) -> OSError:
    """One error that says the disk is full, naming the file and the space left (nothing half-written is kept)."""
    try:
        free = f"; {shutil.disk_usage(target.parent).free:,} bytes free there"
    except OSError:
        free = ""
    error = OSError(f"the disk is full: no space left to write {target}{free}. Free some space and run it again.")
    error.errno = errno.ENOSPC
    return error


@contextlib.contextmanager
def atomic_directory(
    path: str | os.PathLike,
    overwrite: bool = False,
    kind: ArtefactKind | None = None,
    protected: Mapping[str, str | os.PathLike] | None = None,
    argument: str = "output",
) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success it is renamed to `path`.

    A reader never sees a partly written folder at `path`: either the old one (or none) or the new one. Temporaries
    that an interrupted earlier write of `path` left behind are removed first.

    Args:
        path: The folder to write.
        overwrite: Replace an existing `path`. It is replaced only if [`check_replaceable`] allows it (a folder of
            `kind` holding nothing else); otherwise an existing `path` is an error (an empty folder is always
            replaced: it holds nothing to lose).
        kind: What `path` is, when it already exists and `overwrite=True`.
        protected: Inputs of the run that must never be replaced (`{"--images": folder}`).
        argument: How `path` is called in error messages.
    """
    target = Path(path)
    remove_stale_temporaries(target)
    if target.is_symlink() or (target.exists() and not _is_empty_folder(target)):
        if not overwrite:
            raise FileExistsError(f"{_quoted(argument)}: {target} already exists; pass overwrite=True to replace it.")
        check_replaceable(target, kind, protected, argument)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_temporary_prefix(target), suffix=".tmp", dir=target.parent))
    try:
        _apply_default_permissions(tmp, is_dir=True)
        yield tmp
        if target.exists():
            trash = Path(tempfile.mkdtemp(prefix=_temporary_prefix(target), suffix=".old", dir=target.parent))
            os.replace(target, trash / target.name)
            os.replace(tmp, target)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, target)
        _fsync_directory(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
