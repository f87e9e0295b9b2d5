# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""Where gallery images come from: an image folder, any `datasets` source with an image column, webdataset tars.

Every source lists its images in one deterministic order and splits them into *units*: contiguous runs of
`unit_size` images (folders, datasets, streams) or one tar file each (webdataset). A unit is the piece of work a process
embeds and the shard it writes, so any number of processes on any number of machines split the same units the same
way, and a rerun skips finished units. Images are opened by [`GallerySource.open`], which runs in DataLoader
workers.

- [`ImageFolderSource`]: every image file under a folder (recursively, sorted); id = the path relative to it.
- [`DatasetSource`]: a `datasets.Dataset` (or anything [`load_image_dataset`] loads: an image folder with
  `metadata.jsonl`, Parquet / Arrow files, a `save_to_disk` folder, a Hub id); id = the row number, or a column;
  metadata = the row number, the image's path, and the scalar columns (caption, url, ...).
- [`WebDatasetSource`]: tar shards as img2dataset writes them (`{key}.jpg`, `{key}.txt`, `{key}.json`), given as a
  brace pattern such as `"shards/{00000..00099}.tar"`; id = the sample key; metadata = key, shard, caption, url.
  Tars are read with `tarfile`, not `datasets.load_dataset("webdataset", ...)`: that builder refuses a shard whose
  samples differ in their members (`ValueError: ... don't share the same prefix or the same types`, e.g. a `.png`
  next to a `.jpg`; checked with datasets 5.2) and decodes images in the reading process, where reading members by
  offset keeps one unit per tar and lets DataLoader workers decode any sample.
- A streaming `datasets.IterableDataset` (`DatasetSource(..., streaming=True)`): units of `unit_size` consecutive
  rows, cut as the stream is read; the ids and metadata are those of the same dataset loaded whole.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tarfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from PIL import Image

from ..utils import IMAGE_EXTENSIONS, load_image
from .validation import check_gallery_id, resolve_inside

__all__ = [
    "DatasetSource",
    "GalleryEntry",
    "GallerySource",
    "ImageFolderSource",
    "WebDatasetSource",
    "as_gallery_source",
    "expand_shard_pattern",
    "load_image_dataset",
]

_DATA_FILE_BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".csv": "csv", ".json": "json", ".jsonl": "json"}


@dataclass
class GalleryEntry:
    """One image of a unit: its id, what [`GallerySource.open`] needs to read it, and its metadata row."""

    id: str
    payload: Any
    metadata: dict[str, Any] = field(default_factory=dict)


class GallerySource(ABC):
    """Base class of gallery sources (see the module docstring)."""

    kind: ClassVar[str] = ""

    @property
    def root(self) -> Path | None:
        """The folder the `path` metadata is relative to (None when entries have no paths)."""
        return None

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """A small JSON description (stored in the manifest; identifies the source when a build resumes)."""

    @abstractmethod
    def num_units(self, unit_size: int) -> int | None:
        """How many units the source has (`None` for a stream: reading it through finds out)."""

    @abstractmethod
    def entries(self, unit: int, unit_size: int) -> list[GalleryEntry]:
        """The images of `unit`, in order; every id has passed [`check_gallery_id`]."""

    def unit_name(self, unit: int) -> str:
        """How messages name `unit` (a webdataset unit is its tar file)."""
        return f"unit {unit}"

    def iter_units(self, unit_size: int, wanted) -> Iterator[tuple[int, list[GalleryEntry] | None]]:
        """Every unit in order as `(unit, entries)`, with `entries=None` where `wanted(unit)` is false."""
        for unit in range(self.num_units(unit_size)):
            yield unit, (self.entries(unit, unit_size) if wanted(unit) else None)

    @abstractmethod
    def open(self, payload: Any) -> Image.Image:
        """Read one image as RGB (raises on an unreadable one)."""

    def metadata_schema(self):
        """The `pyarrow.Schema` of the metadata columns (besides `id` and `norm`)."""
        import pyarrow as pa

        return pa.schema([])

    def skipped(self) -> dict[str, str]:
        """Inputs known to be unusable before anything is opened (`{id: reason}`)."""
        return {}


class ImageFolderSource(GallerySource):
    """Every image file under `root`, recursively, in sorted path order."""

    kind = "images"

    def __init__(self, root: str | os.PathLike, exclude: tuple[Path, ...] = ()):

        self._root = Path(root)
        self.paths, self._others = list_image_files(self._root, exclude=exclude)

    @property
    def root(self) -> Path:
        return self._root.resolve()

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "root": str(self.root), "count": len(self.paths)}

    def num_units(self, unit_size: int) -> int:
        return -(-len(self.paths) // unit_size)

    def entries(self, unit: int, unit_size: int) -> list[GalleryEntry]:
        chosen = self.paths[unit * unit_size : (unit + 1) * unit_size]
        return [GalleryEntry(path, path, {"path": path}) for path in chosen]

    def open(self, payload: str) -> Image.Image:
        return load_image(self._root / payload, name=payload)

    def metadata_schema(self):
        import pyarrow as pa

        return pa.schema([("path", pa.string())])

    def skipped(self) -> dict[str, str]:
        return dict(self._others)


def load_image_dataset(source: Any, split: str = "train", cache_dir: str | None = None, streaming: bool = False):
    """A `datasets` dataset from a dataset object, a folder, data files or a Hub id, through `datasets` itself.

    - a `Dataset` or `IterableDataset` is used as is; a `DatasetDict` (or `IterableDatasetDict`) gives its `split`;
    - a `save_to_disk` folder goes through `datasets.load_from_disk`;
    - any other folder through `datasets.load_dataset(folder)` (an image folder with `metadata.jsonl` or
      `metadata.csv`, Parquet / Arrow / CSV / JSON files: `datasets` recognises the layout);
    - a file or a list of files through the builder of their extension (`.parquet`, `.arrow`, `.csv`, `.json`);
    - anything else is a Hub dataset id.

    With `streaming=True` a loaded source is an `IterableDataset` (`load_dataset(..., streaming=True)`; a saved
    dataset through `to_iterable_dataset`).

    Example:

    ```python
    >>> import datasets
    >>> from hf_cir.retrieval.sources import load_image_dataset
    >>> load_image_dataset(datasets.Dataset.from_dict({"caption": ["a", "b"]})).num_rows
    2

    ```
    """
    import datasets

    if isinstance(source, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        if split not in source:
            raise ValueError(f"`dataset` has no split {split!r}; it has {list(source)}.")
        return source[split]
    if isinstance(source, (datasets.Dataset, datasets.IterableDataset)):
        return source
    files = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    paths = [Path(f) for f in files]
    options = {"split": split, "cache_dir": cache_dir, "streaming": streaming}
    name = ", ".join(map(str, files))
    if len(paths) == 1 and paths[0].is_dir():
        path = paths[0]
        if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
            with reading_dataset(name):
                loaded = load_image_dataset(datasets.load_from_disk(str(path)), split)
            return loaded.to_iterable_dataset() if streaming else loaded
        with reading_dataset(name):
            return datasets.load_dataset(str(path), **options)
    if all(p.is_file() for p in paths):
        builders = {_DATA_FILE_BUILDERS.get(p.suffix.lower()) for p in paths}
        if None in builders or len(builders) != 1:
            raise ValueError(
                f"`dataset`: files must all be one of {sorted(_DATA_FILE_BUILDERS)} (one kind); got {[str(p) for p in paths]}."
            )
        _check_data_files_have_rows(paths)
        with reading_dataset(name):
            return datasets.load_dataset(builders.pop(), data_files={split: [str(p) for p in paths]}, **options)
    missing = [str(p) for p in paths if not p.exists()]
    if len(files) == 1 and not str(files[0]).startswith((".", "/", "~")) and str(files[0]).count("/") <= 1:
        with reading_dataset(name):
            return datasets.load_dataset(str(files[0]), **options)
    raise FileNotFoundError(f"`dataset`: no such file or folder: {', '.join(missing)}.")


def _check_data_files_have_rows(paths: list[Path]) -> None:
    """An empty data file (0 bytes, or a Parquet file of 0 rows) is refused before `datasets` sees it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    empty = []
    for path in paths:
        if path.stat().st_size == 0:
            empty.append(path)
        elif path.suffix.lower() == ".parquet":
            try:
                rows = pq.ParquetFile(path).metadata.num_rows
            except (OSError, pa.ArrowException) as error:
                raise ValueError(f"`dataset`: {path} is not a readable Parquet file ({error}).") from error
            if rows == 0:
                empty.append(path)
    if len(empty) == len(paths):
        raise ValueError(f"`dataset`: {', '.join(map(str, empty))} has no rows.")


@contextlib.contextmanager
def reading_dataset(name: str) -> Iterator[None]:
    """Turn what `datasets` / pyarrow raise on unreadable or empty data into one `ValueError` naming `name`."""
    import datasets
    import pyarrow as pa

    try:
        yield
    except (ValueError, StopIteration, pa.ArrowException, datasets.exceptions.DatasetGenerationError) as error:
        if isinstance(error, ValueError) and str(error).startswith("`"):
            raise  # already one of ours, naming the argument
        cause = error.__cause__ or error.__context__ or error
        text = str(error) if str(error) else type(error).__name__
        if "corresponds to no data" in text or isinstance(error, StopIteration) or "BatchSize must be" in str(cause):
            raise ValueError(f"`dataset`: {name} has no rows.") from error
        detail = f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}".rstrip(": ")
        raise ValueError(f"`dataset`: {name} could not be read as a dataset ({detail}).") from error


class DatasetSource(GallerySource):
    """The rows of a `datasets.Dataset` with an image column (an `Image` feature, or paths / `{"bytes", "path"}`).

    A stream (a `datasets.IterableDataset`, or `streaming=True`) is cut into units of `unit_size` consecutive rows
    as it is read; its number of units is known once it has been read through (see `hf_cir.utils.units`).

    Args:
        dataset: A dataset, or anything [`load_image_dataset`] loads.
        image_column: The image column; by default the first `Image` column, else a column named `image`.
        id_column: A column of unique ids; by default the row number is the id.
        metadata_columns: Columns copied into the index metadata; by default every scalar column (strings,
            numbers, booleans) other than the image.
        image_root: Folder that relative image paths of a string column start from (default: the dataset folder).
        split: The split of a `DatasetDict` or of a folder / Hub dataset.
        streaming: Read a folder, files or a Hub dataset as a stream (`load_dataset(..., streaming=True)`).
    """

    kind = "dataset"

    def __init__(
        self,
        dataset: Any,
        image_column: str | None = None,
        id_column: str | None = None,
        metadata_columns: list[str] | None = None,
        image_root: str | os.PathLike | None = None,
        split: str = "train",
        cache_dir: str | None = None,
        streaming: bool = False,
    ):
        import datasets

        self.origin = (
            str(Path(dataset).resolve())
            if isinstance(dataset, (str, os.PathLike)) and Path(dataset).exists()
            else (dataset if isinstance(dataset, str) else None)
        )
        self._local_files = _local_file_stats(dataset)
        loaded = load_image_dataset(dataset, split=split, cache_dir=cache_dir, streaming=streaming)
        self.streaming = isinstance(loaded, datasets.IterableDataset)
        if self.streaming and loaded.features is None:  # e.g. JSON lines: the first rows tell
            with reading_dataset(self.origin or "the stream"):
                loaded = loaded._resolve_features()
        if not self.streaming and loaded.num_rows == 0:
            raise ValueError(f"`dataset`: {self.origin or 'the dataset'} has no rows.")
        features = loaded.features
        if image_column is None:
            image_column = next((n for n, f in features.items() if isinstance(f, datasets.Image)), None)
            image_column = image_column or ("image" if "image" in features else None)
        if image_column is None or image_column not in features:
            raise ValueError(
                f"`image_column`: the dataset has no image column {image_column!r}; its columns are "
                f"{list(features)} (pass the one that holds the images)."
            )
        for name, column in (("id_column", id_column), *(("metadata_columns", c) for c in metadata_columns or [])):
            if column is not None and column not in features:
                raise ValueError(f"`{name}`: the dataset has no column {column!r}; its columns are {list(features)}.")
        if isinstance(features[image_column], datasets.Image):
            loaded = loaded.cast_column(image_column, datasets.Image(decode=False))
        elif not isinstance(features[image_column], datasets.Value) or features[image_column].dtype != "string":
            raise ValueError(
                f"`image_column`: column {image_column!r} holds {features[image_column]}, not images or image paths."
            )
        if metadata_columns is None:
            metadata_columns = [
                name
                for name, feature in features.items()
                if name != image_column and isinstance(feature, datasets.Value) and feature.dtype != "binary"
            ]
        self.dataset = loaded
        self.image_column = image_column
        self.id_column = id_column
        self.metadata_columns = [c for c in metadata_columns if c not in ("id", "norm", "row", "path")]
        self._root = Path(image_root).resolve() if image_root is not None else _data_folder(dataset)
        if self.streaming:
            with reading_dataset(self.origin or "the stream"):
                self._first_row = self._first_row_digest()
        else:
            self._first_row = None
            if id_column is not None:
                self._check_unique_ids()

    def _check_unique_ids(self) -> None:
        """Every id of a dataset (not a stream) is checked before anything is embedded."""
        seen: dict[str, int] = {}
        for row, value in enumerate(self.dataset.select_columns([self.id_column])[self.id_column]):
            identifier = self._identifier(row, value)
            if identifier in seen:
                raise ValueError(
                    f"`id_column`: {self.id_column!r} repeats the id {identifier!r} (rows {seen[identifier]} and "
                    f"{row}); ids must be unique."
                )
            seen[identifier] = row

    def _identifier(self, row: int, value: Any) -> str:
        if self.id_column is None:
            return str(row)
        where = f"`dataset` row {row}, column {self.id_column!r}"
        if value is None or isinstance(value, (bytes, dict, list)):
            raise ValueError(f"{where}: an id must be a string or a number, got {value!r}.")
        return check_gallery_id(str(value), where)

    def _first_row_digest(self) -> str:
        """A digest of the stream's first image (part of a stream's identity, since a stream has no fingerprint:
        with its local files' sizes and modification times, and its features, it tells whether committed units of
        an interrupted build still hold the rows the stream gives now; a Hub stream has only these and its name)."""
        import hashlib

        first = next(iter(self.dataset.select_columns([self.image_column]).take(1)), None)
        if first is None:
            raise ValueError(f"`dataset`: {self.origin or 'the stream'} has no rows.")
        image = first[self.image_column]
        data = image.get("bytes") or image.get("path") if isinstance(image, dict) else image
        return hashlib.sha256(data if isinstance(data, bytes) else str(data).encode()).hexdigest()[:16]

    @property
    def root(self) -> Path | None:
        return self._root

    def describe(self) -> dict[str, Any]:
        if self.streaming:
            return {
                "kind": self.kind,
                "dataset": self.origin,
                "streaming": True,
                "features": self.dataset.features.to_dict(),
                "first_image": self._first_row,
                "local_files": self._local_files,
                "image_column": self.image_column,
                "id_column": self.id_column,
            }
        fingerprint = getattr(self.dataset, "_fingerprint", None)
        return {
            "kind": self.kind,
            "dataset": self.origin,
            "fingerprint": fingerprint,
            "image_column": self.image_column,
            "id_column": self.id_column,
            "count": self.dataset.num_rows,
        }

    def num_units(self, unit_size: int) -> int | None:
        return None if self.streaming else -(-self.dataset.num_rows // unit_size)

    def _relative(self, path: str | None) -> str | None:
        if not path:
            return None
        if self._root is None:
            return None if os.path.isabs(path) else path
        candidate = Path(path) if os.path.isabs(path) else self._root / path
        try:
            return candidate.resolve().relative_to(self._root).as_posix()
        except ValueError:  # outside the root: not stored as a path
            return None

    def _columns(self) -> list[str]:
        return list(
            dict.fromkeys([self.image_column, *([self.id_column] if self.id_column else []), *self.metadata_columns])
        )

    def _entry(self, row: int, values: dict[str, Any], payload: Any) -> GalleryEntry:
        image = values[self.image_column]
        path = image.get("path") if isinstance(image, dict) else image
        metadata = {"row": row, "path": self._relative(path)}
        metadata.update({c: values[c] for c in self.metadata_columns})
        identifier = self._identifier(row, values[self.id_column] if self.id_column else None)
        return GalleryEntry(identifier, payload, metadata)

    def entries(self, unit: int, unit_size: int) -> list[GalleryEntry]:
        if self.streaming:
            raise TypeError("a stream's units are read in order: use `iter_units`")
        start = unit * unit_size
        stop = min(start + unit_size, self.dataset.num_rows)
        rows = self.dataset.select_columns(self._columns())[start:stop]
        return [
            self._entry(start + offset, {c: values[offset] for c, values in rows.items()}, start + offset)
            for offset in range(stop - start)
        ]

    def iter_units(self, unit_size: int, wanted) -> Iterator[tuple[int, list[GalleryEntry] | None]]:
        if not self.streaming:
            yield from super().iter_units(unit_size, wanted)
            return
        unit, entries, keep, count = 0, [], False, 0
        for row, values in enumerate(self.dataset.select_columns(self._columns())):
            if count == 0:
                keep = wanted(unit)
            if keep:  # the image travels with the entry (a stream has no random access); others are passed over
                entries.append(self._entry(row, values, (row, values[self.image_column])))
            count += 1
            if count == unit_size:
                yield unit, (entries if keep else None)
                unit, entries, count = unit + 1, [], 0
        if count:
            yield unit, (entries if keep else None)

    def open(self, payload: int | tuple[int, Any]) -> Image.Image:
        row, value = payload if isinstance(payload, tuple) else (payload, self.dataset[payload][self.image_column])
        name = f"row {row}"
        if isinstance(value, dict):
            if value.get("bytes"):
                return load_image(_decode_bytes(value["bytes"], name), name=name)
            value = value.get("path")
        if not isinstance(value, str):
            raise ValueError(f"{name}: no image (got {type(value).__name__}).")
        if not os.path.isabs(value):
            if self._root is None:
                raise ValueError(f"{name}: the relative image path {value!r} has no folder to start from.")
            # A relative path starts from the data's own folder and must stay inside it.
            value = str(resolve_inside(self._root, Path(value).as_posix(), name))
        return load_image(value, name=name)

    def metadata_schema(self):
        import datasets
        import pyarrow as pa

        own = datasets.Features({c: self.dataset.features[c] for c in self.metadata_columns}).arrow_schema
        return pa.schema([("row", pa.int64()), ("path", pa.string()), *own])


def _data_folder(dataset: Any) -> Path | None:
    """The folder that relative image paths of a local dataset start from: the folder itself, or the folder of its
    data files (their common folder when there are several), never the current directory."""
    paths = [dataset] if isinstance(dataset, (str, os.PathLike)) else dataset if isinstance(dataset, list) else None
    if not paths or not all(isinstance(path, (str, os.PathLike)) and Path(path).exists() for path in paths):
        return None
    folders = [Path(path).resolve() if Path(path).is_dir() else Path(path).resolve().parent for path in paths]
    return Path(os.path.commonpath([str(folder) for folder in folders]))


def _local_file_stats(dataset: Any) -> list[list] | None:
    """`[path, size, mtime_ns]` of each local file or folder named by `dataset` (a path or a list of paths; a folder
    by its own entry, whose time changes when files are added or removed there), or `None` for anything else."""
    paths = [dataset] if isinstance(dataset, (str, os.PathLike)) else dataset if isinstance(dataset, list) else None
    if not paths or not all(isinstance(path, (str, os.PathLike)) and Path(path).exists() for path in paths):
        return None
    stats = []
    for path in paths:
        info = Path(path).stat()
        stats.append([str(Path(path).resolve()), info.st_size if Path(path).is_file() else None, info.st_mtime_ns])
    return stats


def _decode_bytes(data: bytes, name: str) -> Image.Image:
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            return opened.copy()
    except (OSError, ValueError) as error:
        raise ValueError(f"{name} is not a readable image ({error}).") from error


def expand_shard_pattern(pattern: str | os.PathLike | list) -> list[Path]:
    """The tar files of a brace pattern (`"shards/{00000..00009}.tar"`), a glob, or a list of paths, in order."""
    if isinstance(pattern, (list, tuple)):
        names = [str(p) for p in pattern]
    elif "{" in str(pattern):
        try:
            from braceexpand import braceexpand
        except ImportError as error:
            raise ImportError(
                "`--webdataset` brace patterns need braceexpand: `pip install hf-cir[scale]`."
            ) from error
        names = list(braceexpand(str(pattern)))
    elif any(c in str(pattern) for c in "*?["):
        import glob

        names = sorted(glob.glob(str(pattern)))
    else:
        names = [str(pattern)]
    paths = [Path(name) for name in names]
    missing = [str(p) for p in paths if not p.is_file()]
    if not paths or missing:
        raise FileNotFoundError(
            f"`webdataset`: {pattern} matches no tar file"
            if not paths
            else f"`webdataset`: no such tar file: {missing[0]}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    return paths


def _sample_key(member_name: str) -> tuple[str, str]:
    """webdataset's convention: the key is the path up to the first dot of the file name; the rest is the field."""
    directory, _, name = member_name.rpartition("/")
    stem, _, extension = name.partition(".")
    return (f"{directory}/{stem}" if directory else stem), extension.lower()


class WebDatasetSource(GallerySource):
    """Samples of webdataset tar shards (one unit per tar), e.g. img2dataset's output.

    A sample is the group of consecutive members with the same key; its image is the member whose extension is an
    image extension (`jpg`, `png`, `webp`, ...), its caption the `txt` member, its URL the `url` of the `json`
    member. Members are read by their offset in the tar, so any worker can open any sample.
    """

    kind = "webdataset"

    def __init__(self, pattern: str | os.PathLike | list):
        self.pattern = [str(p) for p in pattern] if isinstance(pattern, (list, tuple)) else str(pattern)
        self.shards = expand_shard_pattern(pattern)
        self._root = Path(os.path.commonpath([str(p.resolve().parent) for p in self.shards]))
        self._unreadable: dict[str, str] = {}

    @property
    def root(self) -> Path:
        return self._root

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "pattern": self.pattern, "root": str(self._root), "shards": len(self.shards)}

    def num_units(self, unit_size: int) -> int:
        return len(self.shards)

    def unit_name(self, unit: int) -> str:
        return self.shards[unit].resolve().relative_to(self._root).as_posix()

    def entries(self, unit: int, unit_size: int) -> list[GalleryEntry]:
        shard = self.shards[unit]
        relative = self.unit_name(unit)
        samples: dict[str, dict[str, tarfile.TarInfo]] = {}
        try:
            with tarfile.open(shard, "r:*") as archive:
                previous = None
                for member in archive:
                    if not member.isfile():
                        continue
                    key, extension = _sample_key(member.name)
                    check_gallery_id(key, f"`webdataset`: {shard} member {member.name!r}")
                    # A sample is a run of consecutive members with one key: the same key again later (or the same
                    # member twice) would silently replace a sample, so it is refused.
                    if key in samples and (key != previous or extension in samples[key]):
                        raise ValueError(
                            f"`webdataset`: {shard} repeats the sample key {key!r} (member {member.name!r}); keys "
                            "must be unique within and across shards."
                        )
                    samples.setdefault(key, {})[extension] = member
                    previous = key
                texts = {
                    key: {ext: archive.extractfile(members[ext]).read() for ext in ("txt", "json") if ext in members}
                    for key, members in samples.items()
                }
        except (tarfile.TarError, OSError) as error:
            raise ValueError(f"`webdataset`: {shard} is not a readable tar file ({error}).") from error
        entries = []
        for key, members in samples.items():
            image = next((m for ext, m in members.items() if f".{ext.rsplit('.', 1)[-1]}" in IMAGE_EXTENSIONS), None)
            caption = texts[key]["txt"].decode("utf-8", "replace") if "txt" in texts[key] else None
            url = None
            if "json" in texts[key]:
                try:
                    url = json.loads(texts[key]["json"]).get("url")
                except (ValueError, AttributeError):
                    url = None
            metadata = {
                "key": key,
                "shard": relative,
                "caption": caption,
                "url": url if isinstance(url, str) else None,
            }
            payload = (str(shard), image.offset_data, image.size) if image is not None else (str(shard), -1, 0)
            entries.append(GalleryEntry(key, payload, metadata))
        return entries

    def open(self, payload: tuple[str, int, int]) -> Image.Image:
        path, offset, size = payload
        if offset < 0:
            raise ValueError("the sample has no image member")
        with open(path, "rb") as handle:
            handle.seek(offset)
            data = handle.read(size)
        return load_image(_decode_bytes(data, f"{path}@{offset}"))

    def metadata_schema(self):
        import pyarrow as pa

        return pa.schema(
            [("key", pa.string()), ("shard", pa.string()), ("caption", pa.string()), ("url", pa.string())]
        )


def as_gallery_source(source: Any, **kwargs) -> GallerySource:
    """A [`GallerySource`] for `source`: a source itself, a `datasets.Dataset`, or an image folder path.

    Keyword arguments go to [`DatasetSource`] (for a dataset) or [`ImageFolderSource`] (`exclude`).
    """
    if isinstance(source, GallerySource):
        return source
    try:
        import datasets

        if isinstance(
            source, (datasets.Dataset, datasets.DatasetDict, datasets.IterableDataset, datasets.IterableDatasetDict)
        ):
            kwargs.pop("exclude", None)
            return DatasetSource(source, **kwargs)
    except ImportError:  # pragma: no cover - datasets is a core dependency
        pass
    return ImageFolderSource(source, exclude=kwargs.get("exclude", ()))


def list_image_files(root: str | os.PathLike, exclude: tuple[Path, ...] = ()) -> tuple[list[str], dict[str, str]]:
    """All files under `root` (recursively, sorted): image candidates, and `{path: reason}` of files that are not.

    Files whose extension is not an image extension are reported as non-images; 0-byte files as empty. Whether an
    image file can really be decoded is found out when it is embedded.

    Example:

    ```python
    >>> from hf_cir.retrieval import list_image_files
    >>> images, others = list_image_files("photos/")  # doctest: +SKIP
    ```
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"`images`: {root} is not a folder.")
    excluded = {path.resolve() for path in exclude}
    excluded_names = {path.name for path in excluded}
    real_root = root.resolve()
    candidates: list[str] = []
    others: dict[str, str] = {}

    def unreadable_folder(error: OSError) -> None:
        folder = Path(error.filename) if error.filename else root
        others[folder.relative_to(root).as_posix() + "/"] = f"unreadable folder ({error.strerror or error})"

    for directory, subdirectories, files in os.walk(root, onerror=unreadable_folder):
        directory_path = Path(directory)
        kept = []
        for name in sorted(subdirectories):
            path = directory_path / name
            if path.is_symlink():
                others[path.relative_to(root).as_posix() + "/"] = "symbolic link to a folder (not followed)"
            elif path.resolve() not in excluded:
                kept.append(name)
        subdirectories[:] = kept
        for name in sorted(files):
            path = directory_path / name
            if name in excluded_names and path.resolve() in excluded:
                continue  # e.g. the lock file of an index built into this folder
            relative = path.relative_to(root).as_posix()
            reason = _unusable_file_reason(path, real_root)
            if reason is None:
                try:
                    check_gallery_id(relative, "file")
                except ValueError as error:  # e.g. a name with a newline: listed, never an id
                    reason = f"its name cannot be an id ({str(error).partition(': ')[2]})"
            if reason is None:
                candidates.append(relative)
            else:
                others[relative] = reason
    return sorted(candidates), {path: others[path] for path in sorted(others)}


def _unusable_file_reason(path: Path, real_root: Path) -> str | None:
    """Why the file at `path` cannot be an image of the folder `real_root`, or `None` when it may be one."""
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        return "not an image file (unknown extension)"
    if path.is_symlink():
        try:
            target = path.resolve(strict=True)
        except FileNotFoundError:
            return "broken symbolic link"
        except (OSError, RuntimeError):  # a loop of links
            return "symbolic link loop"
        if real_root not in target.parents:
            return "symbolic link to a file outside the image folder"
    try:
        status = path.stat()
    except OSError as error:
        return f"unreadable ({error.strerror or error})"
    if not path.is_file():
        return "not a regular file"
    if status.st_size == 0:
        return "empty file (0 bytes)"
    if not os.access(path, os.R_OK):
        return "unreadable (permission denied)"
    return None
