"""The checks at the boundary that every reader of gallery data shares: ids, stored paths, embedding matrices.

An index is a file people share and a gallery source is data someone else made, so nothing read from them is
trusted: every gallery id passes [`check_gallery_id`] (a string without control characters, no absolute name, no
`..`), every stored image path must be relative and normalised, every file opened through one must resolve inside
its image root ([`resolve_inside`]), and an embedding matrix must have the promised shape, a floating dtype and finite
values. Each error names the file and the entry.

The index format itself (its manifest, the shards and their checks against it) has its home in
`hf_cir.retrieval.storage`; [`check_index_metadata`] here reads the `index.json` of format 1.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import torch

__all__ = [
    "check_embedding_matrix",
    "check_gallery_id",
    "check_index_metadata",
    "check_relative_path",
    "check_stored_paths",
    "resolve_inside",
]


def check_relative_path(value: Any, where: str) -> str:
    """Return `value` if it is a normalised relative POSIX path (`a/b.png`), else raise a `ValueError` naming `where`.

    Example:

    ```python
    >>> from hf_cir.retrieval.validation import check_relative_path
    >>> check_relative_path("beach/red.png", "entry 0")
    'beach/red.png'
    >>> check_relative_path("../secret.png", "index.json entry 3 of 'paths'")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: index.json entry 3 of 'paths': '../secret.png' leaves the image root...
    ```
    """
    if not isinstance(value, str):
        raise ValueError(f"{where}: expected a relative path (a string), got {type(value).__name__} {value!r}.")
    if not value or "\x00" in value:
        raise ValueError(f"{where}: expected a relative path, got {value!r}.")
    if PurePosixPath(value).is_absolute() or PureWindowsPath(value).anchor:
        raise ValueError(f"{where}: {value!r} is an absolute path; an index stores paths relative to its image root.")
    parts = value.split("/")
    if ".." in parts:
        raise ValueError(f"{where}: {value!r} leaves the image root; stored paths must stay inside it.")
    if any(part in ("", ".") for part in parts) or "\\" in value:
        raise ValueError(f"{where}: {value!r} is not a normalised relative path (expected e.g. 'folder/image.png').")
    return value


def check_gallery_id(value: Any, where: str) -> str:
    """Return `value` if it can be a gallery image's id, else raise a `ValueError` naming `where`.

    Ids are data, never addresses: every gallery source (folder, dataset, webdataset tar, stream) passes its ids
    through this one check. An id is a non-empty string without control characters, not an absolute name and
    without a `..` component (a client may show it, and it must never name a file outside the gallery).

    Example:

    ```python
    >>> from hf_cir.retrieval.validation import check_gallery_id
    >>> check_gallery_id("beach/00017", "00000.tar member beach/00017.jpg")
    'beach/00017'
    >>> check_gallery_id("../../etc/hostname", "00000.tar member ../../etc/hostname.png")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: 00000.tar member ../../etc/hostname.png: the id '../../etc/hostname' has a '..' component...
    ```
    """
    if not isinstance(value, str):
        raise ValueError(f"{where}: an id must be a string, got {type(value).__name__} {value!r}.")
    if not value.strip():
        raise ValueError(f"{where}: the id is empty.")
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise ValueError(f"{where}: the id {value!r} holds control characters.")
    if PurePosixPath(value).is_absolute() or PureWindowsPath(value).anchor:
        raise ValueError(f"{where}: the id {value!r} is an absolute name; ids are relative names.")
    if ".." in value.replace("\\", "/").split("/"):
        raise ValueError(f"{where}: the id {value!r} has a '..' component; ids must not climb out of the gallery.")
    return value


def check_stored_paths(paths: Any, source: str, key: str = "paths") -> list[str]:
    """Check every entry of `paths` with [`check_relative_path`] (and that none repeats); return them as a list."""
    if not isinstance(paths, list):
        raise ValueError(f"{source}: '{key}' must be a list of relative paths, got {type(paths).__name__}.")
    seen: dict[str, int] = {}
    for number, path in enumerate(paths):
        check_relative_path(path, f"{source} entry {number} of '{key}'")
        if path in seen:
            raise ValueError(f"{source} entry {number} of '{key}': {path!r} repeats entry {seen[path]}.")
        seen[path] = number
    return list(paths)


def resolve_inside(root: str | os.PathLike, relative: str, where: str) -> Path:
    """The real path of `root / relative`, or a `ValueError` if it resolves outside `root` (through a link).

    Example:

    ```python
    >>> import tempfile, pathlib
    >>> from hf_cir.retrieval.validation import resolve_inside
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> resolve_inside(root, "a.png", "entry 0") == root.resolve() / "a.png"
    True
    ```
    """
    check_relative_path(relative, where)
    base = Path(root).resolve()
    resolved = (base / relative).resolve()
    if resolved != base and base not in resolved.parents:
        raise ValueError(f"{where}: {relative!r} resolves to {resolved}, outside the image root {base}.")
    return resolved


def check_embedding_matrix(
    embeddings: Any, source: str, rows: int | None = None, dim: int | None = None
) -> torch.Tensor:
    """A `[rows, dim]` floating-point tensor of finite values, or a `ValueError` naming `source`."""
    if not isinstance(embeddings, torch.Tensor):
        raise ValueError(f"{source}: expected a tensor of embeddings, got {type(embeddings).__name__}.")
    if embeddings.ndim != 2:
        raise ValueError(f"{source}: expected embeddings of shape [N, D], got shape {tuple(embeddings.shape)}.")
    if not embeddings.is_floating_point():
        raise ValueError(f"{source}: expected floating-point embeddings, got {embeddings.dtype}.")
    if rows is not None and embeddings.shape[0] != rows:
        raise ValueError(f"{source}: {embeddings.shape[0]} embeddings for {rows} paths.")
    if dim is not None and embeddings.shape[1] != dim:
        raise ValueError(f"{source}: embeddings of size {embeddings.shape[1]}, the index says {dim}.")
    finite = torch.isfinite(embeddings).all(dim=-1)
    if not bool(finite.all()):
        row = int((~finite).nonzero()[0, 0])
        raise ValueError(f"{source}: row {row} holds non-finite values (NaN or infinity); the file is corrupt.")
    return embeddings


_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "format": (str,),
    "version": (int,),
    "model": (str,),
    "model_type": (str,),
    "embedding_dim": (int,),
    "fingerprint": (str,),
    "root": (str,),
    "count": (int,),
}


def check_index_metadata(
    info: Any, source: str, format_name: str, versions: Iterable[int], required: Iterable[str] = ()
) -> dict[str, Any]:
    """Check an `index.json`'s format, version and field types; return it as a dict.

    Args:
        info: The parsed JSON.
        source: The file, for messages.
        format_name: The expected `"format"` value.
        versions: The format versions this hf-cir reads.
        required: Fields that must be present (besides `format` and `version`).
    """
    if not isinstance(info, Mapping):
        raise ValueError(f"{source}: expected a JSON object, got {type(info).__name__}.")
    if info.get("format") != format_name:
        raise ValueError(f'{source} is not an hf-cir index file (expected "format": {format_name!r}).')
    versions = sorted(versions)
    version = info.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ValueError(f'{source}: "version" must be an integer, got {version!r}.')
    if version not in versions:
        newer = " (written by a newer hf-cir: upgrade hf-cir to read it)" if version > versions[-1] else ""
        raise ValueError(
            f"{source} has format version {version}; this hf-cir reads version(s) "
            f"{', '.join(map(str, versions))}{newer}."
        )
    for key in required:
        if key not in info:
            raise ValueError(f"{source}: missing {key!r}.")
    for key, types in _FIELD_TYPES.items():
        value = info.get(key)
        if value is not None and (not isinstance(value, types) or isinstance(value, bool)):
            expected = " or ".join(t.__name__ for t in types)
            raise ValueError(f"{source}: {key!r} must be {expected}, got {type(value).__name__} {value!r}.")
    if isinstance(info.get("embedding_dim"), int) and info["embedding_dim"] < 1:
        raise ValueError(f"{source}: 'embedding_dim' must be positive, got {info['embedding_dim']}.")
    skipped = info.get("skipped", {})
    if not isinstance(skipped, Mapping) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in skipped.items()
    ):
        raise ValueError(f"{source}: 'skipped' must map paths to reasons (strings).")
    return dict(info)
