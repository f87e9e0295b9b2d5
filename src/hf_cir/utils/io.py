"""Writing files and folders so that an interrupted write never leaves a half-written result behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_directory", "atomic_file"]


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
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        _apply_default_permissions(tmp_name, is_dir=False)
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
        _fsync_directory(target.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success it is renamed to `path`.

    A reader never sees a partly written folder at `path`: either the old one (or none) or the new one.
    With `overwrite=True` an existing folder is replaced; otherwise an existing `path` is an error.
    """
    target = Path(path)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists.")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        _apply_default_permissions(tmp, is_dir=True)
        yield tmp
        if target.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            os.replace(target, trash / target.name)
            os.replace(tmp, target)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, target)
        _fsync_directory(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
