"""Reading benchmark annotation files: every key that is read is checked, and an error names the file, the entry
and the key (`cap.rc2.val.json entry 17: missing 'members' in 'img_set'`).

Annotation files come from outside hf-cir, so nothing in them is trusted: types are checked (a string where a list
of captions is expected is an error, not two one-letter captions), empty values are refused where a value is
needed, and file names taken from them must stay inside the benchmark's folder.
"""

from __future__ import annotations

import math
from pathlib import Path, PurePosixPath
from typing import Any

__all__ = ["AnnotationEntry", "expect_list", "expect_mapping", "relative_file_name"]


def _describe(value: Any) -> str:
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    kind = kinds.get(type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)
    text = repr(value)
    return f"{kind} ({text[:40]}{'...' if len(text) > 40 else ''})" if kind not in ("an object", "a list") else kind


def expect_list(data: Any, path: Path) -> list:
    """The parsed file `data` if it is a list of entries."""
    if not isinstance(data, list):
        raise ValueError(f"{path.name}: expected a JSON list of entries, got {_describe(data)}.")
    return data


def expect_mapping(data: Any, path: Path) -> dict:
    """The parsed file `data` if it is an object."""
    if not isinstance(data, dict):
        raise ValueError(f"{path.name}: expected a JSON object, got {_describe(data)}.")
    return data


def relative_file_name(value: Any, where: str) -> str:
    """A file name read from an annotation: a non-empty relative path that does not leave its folder."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: expected a file name, got {_describe(value)}.")
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts or "\\" in value or "\x00" in value:
        raise ValueError(f"{where}: {value!r} leaves the benchmark's folder; expected a relative file name.")
    return value


class AnnotationEntry:
    """One entry of an annotation file, read key by key with its type checked.

    Example:

    ```python
    >>> from pathlib import Path
    >>> from hf_cir.evaluation.annotations import AnnotationEntry
    >>> entry = AnnotationEntry({"img_set": {"id": 3}}, Path("cap.rc2.val.json"), 17)
    >>> entry.mapping("img_set").strings("members")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: cap.rc2.val.json entry 17: missing 'members' in 'img_set'.
    ```
    """

    def __init__(self, data: Any, path: Path, index: int | str, parent: str | None = None):
        self.where = f"{path.name} entry {index}"
        self.path, self.index, self.parent = path, index, parent
        if not isinstance(data, dict):
            raise ValueError(f"{self.where}{self._in()}: expected an object, got {_describe(data)}.")
        self.data = data

    def _in(self) -> str:
        return f" in {self.parent!r}" if self.parent else ""

    def _key(self, key: str) -> str:
        return f"'{self.parent}.{key}'" if self.parent else repr(key)

    def has(self, key: str) -> bool:
        return key in self.data

    def get(self, key: str) -> Any:
        if key not in self.data:
            raise ValueError(f"{self.where}: missing {key!r}{self._in()}.")
        return self.data[key]

    def _wrong(self, key: str, expected: str, value: Any) -> ValueError:
        return ValueError(f"{self.where}: {self._key(key)} must be {expected}, got {_describe(value)}.")

    def string(self, key: str) -> str:
        """A non-empty string."""
        value = self.get(key)
        if not isinstance(value, str) or not value.strip():
            raise self._wrong(key, "a non-empty string", value)
        return value

    def identifier(self, key: str) -> str:
        """An id (a non-empty string or an integer), as a string."""
        value = self.get(key)
        if isinstance(value, bool) or not isinstance(value, (str, int)) or (isinstance(value, str) and not value):
            raise self._wrong(key, "an id (a string or an integer)", value)
        return str(value)

    def identifiers(self, key: str, allow_empty: bool = False) -> list[str]:
        """A list of ids, as strings."""
        value = self.get(key)
        if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, (str, int)) for v in value):
            raise self._wrong(key, "a list of ids", value)
        if not value and not allow_empty:
            raise ValueError(f"{self.where}: {self._key(key)} is empty.")
        return [str(v) for v in value]

    def strings(self, key: str, length: int | None = None) -> list[str]:
        """A list of non-empty strings (of exactly `length` items when given)."""
        value = self.get(key)
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise self._wrong(key, "a list of non-empty strings", value)
        if length is not None and len(value) != length:
            raise ValueError(f"{self.where}: {self._key(key)} has {len(value)} items, expected {length}.")
        if not value:
            raise ValueError(f"{self.where}: {self._key(key)} is empty.")
        return list(value)

    def numbers(self, key: str, length: int) -> list[float]:
        """A list of `length` finite numbers."""
        value = self.get(key)
        if (
            not isinstance(value, list)
            or len(value) != length
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
        ):
            raise self._wrong(key, f"a list of {length} finite numbers", value)
        return [float(v) for v in value]

    def mapping(self, key: str) -> AnnotationEntry:
        """A nested object, read the same way."""
        value = self.get(key)
        if not isinstance(value, dict):
            raise self._wrong(key, "an object", value)
        return AnnotationEntry(value, self.path, self.index, parent=key if not self.parent else f"{self.parent}.{key}")

    def entries(self, key: str) -> list[AnnotationEntry]:
        """A list of nested objects."""
        value = self.get(key)
        if not isinstance(value, list):
            raise self._wrong(key, "a list of objects", value)
        return [
            AnnotationEntry(item, self.path, f"{self.index}", parent=f"{self._key(key).strip(chr(39))}[{number}]")
            for number, item in enumerate(value)
        ]
