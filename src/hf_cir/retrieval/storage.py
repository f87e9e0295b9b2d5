# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""Index format v2: embedding shards, Parquet metadata and a small manifest, opened lazily and memory-mapped.

An index folder (format v2)::

    INDEX/
        manifest.json              # format, version, model, embedding size, dtype, count, number of shards, source
        embeddings/000000.npy      # [n_0, D] float16 or float32, L2-normalised rows (the search space)
        embeddings/000001.npy      # ...one file per shard, in order; row i of the index is a row of one shard
        metadata/000000.parquet    # one row per embedding: id, norm (the embedding's L2 norm), path / row / key,
        metadata/000001.parquet    #   caption, url, ... as the source has them
        skipped.parquet            # id, reason: inputs that could not be read
        faiss.index, faiss.json    # optional approximate index (plain `faiss.read_index` opens it) and its settings

Nothing that grows with the number of images is JSON: the manifest holds sizes and settings only, shard files are
named by their number, and the number of rows of each shard is read from its `.npy` header. Embeddings are opened
with `numpy.load(mmap_mode=...)` so an index larger than RAM is read block by block; the metadata of a shard is
read when one of its rows is asked for. `datasets.load_dataset("parquet", data_files="INDEX/metadata/*.parquet")`
opens the metadata as a dataset.

This module is the one home of the format: its constants, the manifest ([`make_manifest`], [`write_manifest`],
[`read_manifest`]), the skipped list, and the checks. [`read_manifest`] is the one place that checks a v2 folder
before it is used ([`validate_manifest`] for the manifest, [`check_index_parts`] for the files: every part a regular
file, never a link or a FIFO, opened only after `lstat`; every shard's dtype, shape and row count read from its
header and compared with the manifest; the metadata's column types); extend it rather than checking elsewhere.
"""

from __future__ import annotations

import json
import os
import stat
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..utils import atomic_file

__all__ = [
    "EMBEDDINGS_DIR",
    "INDEX_FORMAT",
    "INDEX_VERSION",
    "MANIFEST_NAME",
    "METADATA_DIR",
    "SKIPPED_NAME",
    "STORAGE_DTYPES",
    "ShardedEmbeddings",
    "ShardedMetadata",
    "check_index_parts",
    "embeddings_shard_path",
    "make_manifest",
    "metadata_shard_path",
    "read_manifest",
    "read_npy_header",
    "index_damage",
    "read_skipped",
    "read_skipped_by_unit",
    "validate_manifest",
    "write_manifest",
    "write_shard",
    "write_skipped",
]

INDEX_FORMAT = "hf-cir-index"
INDEX_VERSION = 2
MANIFEST_NAME = "manifest.json"
EMBEDDINGS_DIR = "embeddings"
METADATA_DIR = "metadata"
SKIPPED_NAME = "skipped.parquet"
STORAGE_DTYPES = ("float32", "float16")


def embeddings_shard_path(folder: str | os.PathLike, number: int) -> Path:
    return Path(folder) / EMBEDDINGS_DIR / f"{number:06d}.npy"


def metadata_shard_path(folder: str | os.PathLike, number: int) -> Path:
    return Path(folder) / METADATA_DIR / f"{number:06d}.parquet"


def write_shard(folder: str | os.PathLike, number: int, embeddings: np.ndarray, metadata, dtype: str) -> None:
    """Write shard `number`: the L2-normalised `embeddings` in `dtype` and its `metadata` table, each atomically.

    `metadata` is a `pyarrow.Table` with one row per embedding (its `norm` column holds the embeddings' norms).
    """
    import pyarrow.parquet as pq

    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"`dtype` must be one of {', '.join(STORAGE_DTYPES)}, got {dtype!r}.")
    if metadata.num_rows != len(embeddings):
        raise ValueError(f"{metadata.num_rows} metadata rows for {len(embeddings)} embeddings.")
    array = np.ascontiguousarray(embeddings, dtype=dtype)
    with atomic_file(embeddings_shard_path(folder, number), "wb") as handle:
        # Header, then the rows through the file object (numpy's own `tofile` reports a full disk as a bare
        # "N requested and M written"; a Python write raises ENOSPC, which `atomic_file` names).
        np.lib.format.write_array_header_1_0(handle, np.lib.format.header_data_from_array_1_0(array))
        handle.write(memoryview(array.reshape(-1)).cast("B"))
    with atomic_file(metadata_shard_path(folder, number), "wb") as handle:
        pq.write_table(metadata, handle)


def make_manifest(**fields: Any) -> dict[str, Any]:
    """A v2 manifest: `fields` (model, embedding_dim, dtype, count, num_shards, shard_rows, root, source, faiss,
    ...) under this format's name and version. The one place a manifest is composed."""
    manifest = {"format": INDEX_FORMAT, "version": INDEX_VERSION}
    manifest.update((key, value) for key, value in fields.items() if key not in ("format", "version"))
    return manifest


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a v2 index folder, checked with every part of the folder it names (see the module docstring);
    a missing, foreign, damaged or crafted file is a clear error naming it."""
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not os.path.lexists(path):
        raise FileNotFoundError(f"`index`: {folder} is not an hf-cir index (missing {MANIFEST_NAME}).")
    _check_regular_file(path, folder)
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"`index`: {path} is corrupt ({error}).") from error
    validate_manifest(manifest, folder)
    check_index_parts(folder, manifest)
    return manifest


def write_manifest(folder: str | os.PathLike, manifest: dict[str, Any]) -> None:
    """Write `manifest` (from [`make_manifest`]) into `folder`, atomically, after checking it."""
    validate_manifest(manifest, folder)
    with atomic_file(Path(folder) / MANIFEST_NAME, "w") as handle:
        json.dump(manifest, handle, indent=1)


def write_skipped(folder: str | os.PathLike, skipped: dict[str, str], units: dict[str, int] | None = None) -> None:
    """The inputs that could not be read, `{id: reason}`, as `SKIPPED_NAME` (atomically); `units` gives the shard
    each was found in (none for inputs the source refused before any shard), so a repair can reuse a shard whole."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = list(skipped)
    table = pa.table(
        {"id": ids, "reason": list(skipped.values()), "unit": [(units or {}).get(key) for key in ids]},
        schema=_skipped_schema(),
    )
    with atomic_file(Path(folder) / SKIPPED_NAME, "wb") as handle:
        pq.write_table(table, handle)


def read_skipped(folder: str | os.PathLike) -> dict[str, str]:
    """`{id: reason}` of an index folder's skipped list (empty when it has none)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(folder)
    path = folder / SKIPPED_NAME
    if not os.path.lexists(path):
        return {}
    _check_regular_file(path, folder)
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as error:
        raise ValueError(f"`index`: {path} is corrupt ({error}).") from error
    types = [str(table.schema.field(n).type) if n in table.column_names else None for n in ("id", "reason")]
    if not all(kind in (*_STRING_TYPES, "null") for kind in types):  # null: an empty list written by hf-cir 0.2
        raise ValueError(f"`index`: {path} is corrupt: expected string columns `id` and `reason`, got {table.schema}.")
    data = table.to_pydict()
    return dict(zip(data["id"], data["reason"]))


def read_skipped_by_unit(folder: str | os.PathLike) -> dict[int, dict[str, str]]:
    """`{shard: {id: reason}}` of the skipped inputs found in each shard (an unreadable list gives `{}`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        data = pq.read_table(Path(folder) / SKIPPED_NAME).to_pydict() if read_skipped(folder) else {}
    except (OSError, ValueError, pa.ArrowException):
        return {}
    by_unit: dict[int, dict[str, str]] = {}
    for key, reason, unit in zip(data.get("id", []), data.get("reason", []), data.get("unit", [])):
        if isinstance(unit, int):
            by_unit.setdefault(unit, {})[key] = reason
    return by_unit


def index_damage(folder: str | os.PathLike) -> str | None:
    """Why the v2 index at `folder` cannot be loaded although its manifest is sound (a damaged shard, say), or
    `None` when it loads, or is no v2 index at all (then it is not ours to repair)."""
    folder = Path(folder)
    try:
        _check_regular_file(folder / MANIFEST_NAME, folder)
        manifest = json.loads((folder / MANIFEST_NAME).read_text())
        validate_manifest(manifest, folder)
    except (OSError, ValueError):
        return None
    try:
        check_index_parts(folder, manifest)
    except (OSError, ValueError) as error:
        return str(error)
    return None


def _skipped_schema():
    import pyarrow as pa

    return pa.schema([("id", pa.string()), ("reason", pa.string()), ("unit", pa.int64())])


def _check_regular_file(path: Path, folder: Path) -> os.stat_result:
    """`lstat` of a part of an index: it must be a regular file (never a link, a FIFO or a device: nothing is opened
    before this says so)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"`index`: {folder} is incomplete: {_relative(path, folder)} is missing.") from None
    if stat.S_ISLNK(info.st_mode):
        raise ValueError(f"`index`: {path} is a symbolic link; the parts of an index must be files.")
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(
            f"`index`: {path} is not a regular file (a FIFO, a device or a folder); the parts of an index must be files."
        )
    return info


def _check_real_folder(path: Path, folder: Path) -> None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"`index`: {folder} is incomplete: {_relative(path, folder)}/ is missing.") from None
    if not stat.S_ISDIR(info.st_mode):
        raise ValueError(f"`index`: {path} must be a folder (not a link or a file).")


def _relative(path: Path, folder: Path) -> str:
    try:
        return path.relative_to(folder).as_posix()
    except ValueError:
        return str(path)


def read_npy_header(path: str | os.PathLike, folder: str | os.PathLike | None = None) -> tuple[np.dtype, tuple, int]:
    """`(dtype, shape, data offset)` of a `.npy` shard, from its header alone; the file must be a regular file whose
    size is exactly what the header promises (a truncated or padded shard is an error naming it)."""
    path = Path(path)
    folder = Path(folder) if folder is not None else path.parent
    info = _check_regular_file(path, folder)
    where = f"`index`: {path}"
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = reader(handle, max_header_size=10_000)
            offset = handle.tell()
    except (OSError, ValueError, SyntaxError) as error:
        raise ValueError(f"{where} is corrupt: not a .npy file ({error}).") from error
    if fortran or dtype.hasobject:
        raise ValueError(f"{where} is corrupt: expected a C-ordered numeric array, got {dtype}.")
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if info.st_size != expected:
        raise ValueError(
            f"{where} is damaged: {info.st_size} bytes where its header promises {expected} (truncated or padded)."
        )
    return dtype, tuple(shape), offset


def _relative_inside(value: Any, name: str, where: Path) -> None:
    """A path stored in an index must be relative and stay inside the index folder."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"`index`: {where} is corrupt: {name} must be a non-empty relative path, got {value!r}.")
    path = Path(value)
    if path.is_absolute() or ".." in path.parts:
        raise ValueError(f"`index`: {where} is corrupt: {name} {value!r} points outside the index folder.")


def validate_manifest(manifest: Any, folder: str | os.PathLike) -> None:
    """Check a v2 manifest before anything is read from its folder (its files: [`check_index_parts`]).

    Raises `ValueError` naming the folder and the entry: a foreign or newer format, missing or mistyped sizes,
    paths that leave the index folder, per-shard row counts that do not add up.
    """
    folder = Path(folder)
    where = folder / MANIFEST_NAME
    if not isinstance(manifest, dict) or manifest.get("format") != INDEX_FORMAT:
        raise ValueError(f"`index`: {where} is not an hf-cir index file (format {INDEX_FORMAT!r}).")
    version = manifest.get("version")
    if not isinstance(version, int) or version > INDEX_VERSION:
        raise ValueError(f"`index`: {folder} has format version {version!r}; this hf-cir reads up to {INDEX_VERSION}.")
    for key in ("embedding_dim", "count", "num_shards"):
        value = manifest.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < (1 if key == "embedding_dim" else 0):
            raise ValueError(f"`index`: {where} is corrupt: `{key}` must be a non-negative integer, got {value!r}.")
    if manifest.get("dtype") not in STORAGE_DTYPES:
        raise ValueError(f"`index`: {where} is corrupt: `dtype` must be one of {STORAGE_DTYPES}.")
    faiss_info = manifest.get("faiss")
    if faiss_info is not None:
        if not isinstance(faiss_info, dict):
            raise ValueError(f"`index`: {where} is corrupt: `faiss` must be an object or null.")
        _relative_inside(faiss_info.get("file"), "faiss.file", where)
        from .kinds import INDEX_KINDS

        if faiss_info.get("kind") not in INDEX_KINDS:
            raise ValueError(
                f"`index`: {where} is corrupt: `faiss.kind` must be one of {', '.join(INDEX_KINDS)}, got "
                f"{faiss_info.get('kind')!r}."
            )
    rows = manifest.get("shard_rows")
    if rows is not None and (
        not isinstance(rows, list)
        or len(rows) != manifest["num_shards"]
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in rows)
        or sum(rows) != manifest["count"]
    ):
        raise ValueError(
            f"`index`: {where} is corrupt: `shard_rows` must list {manifest['num_shards']} row counts adding up to "
            f"`count` ({manifest['count']})."
        )
    root = manifest.get("root")
    if root is not None and not isinstance(root, str):
        raise ValueError(f"`index`: {where} is corrupt: `root` must be a string or null, got {root!r}.")


_STRING_TYPES = ("string", "large_string")


def check_index_parts(folder: str | os.PathLike, manifest: dict[str, Any]) -> list[int]:
    """Check every file a (validated) manifest names against it, reading headers only; return each shard's rows.

    Every part must be a regular file (`lstat`: a link or FIFO is refused before it is opened); every embedding
    shard's dtype must be the manifest's, its shape `[rows, embedding_dim]` and its size what its header promises;
    every metadata shard must have as many rows (from its Parquet footer), a string `id` column, and a string (or
    null) `path`; the rows must add up to `count` (and equal `shard_rows` when the manifest has it).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(folder)
    for name in (EMBEDDINGS_DIR, METADATA_DIR):
        _check_real_folder(folder / name, folder)
    expected_rows = manifest.get("shard_rows")
    counts = []
    for number in range(manifest["num_shards"]):
        path = embeddings_shard_path(folder, number)
        dtype, shape, _ = read_npy_header(path, folder)
        where = f"`index`: {path}"
        if dtype != np.dtype(manifest["dtype"]):
            raise ValueError(f"{where} holds {dtype} embeddings; the manifest says {manifest['dtype']}.")
        if len(shape) != 2 or shape[1] != manifest["embedding_dim"]:
            raise ValueError(
                f"{where} has shape {list(shape)}; the manifest says [rows, {manifest['embedding_dim']}]."
            )
        if expected_rows is not None and shape[0] != expected_rows[number]:
            raise ValueError(f"{where} holds {shape[0]} rows; the manifest says {expected_rows[number]}.")
        meta_path = metadata_shard_path(folder, number)
        _check_regular_file(meta_path, folder)
        meta_where = f"`index`: {meta_path}"
        try:
            parquet = pq.ParquetFile(meta_path)
            schema, rows = parquet.schema_arrow, parquet.metadata.num_rows
        except (OSError, pa.ArrowException) as error:
            raise ValueError(f"{meta_where} is corrupt ({error}).") from error
        if rows != shape[0]:
            raise ValueError(f"{meta_where} has {rows} rows for {shape[0]} embeddings.")
        for column, required in (("id", True), ("path", False)):
            if column not in schema.names:
                if required:
                    raise ValueError(f"{meta_where} is corrupt: it has no `{column}` column.")
                continue
            kind = str(schema.field(column).type)
            if kind not in _STRING_TYPES and (required or kind != "null"):
                raise ValueError(f"{meta_where} is corrupt: column `{column}` holds {kind}, expected strings.")
        counts.append(shape[0])
    if sum(counts) != manifest["count"]:
        raise ValueError(
            f"`index`: {folder} is corrupt: its shards hold {sum(counts)} rows; the manifest says {manifest['count']}."
        )
    for name in (SKIPPED_NAME,):
        if os.path.lexists(folder / name):
            _check_regular_file(folder / name, folder)
    faiss_info = manifest.get("faiss")
    if faiss_info:
        faiss_path = folder / faiss_info["file"]
        _check_regular_file(faiss_path, folder)
        settings = faiss_path.with_suffix(".json")
        if os.path.lexists(settings):
            _check_regular_file(settings, folder)
    return counts


class ShardedEmbeddings:
    """The embeddings of a v2 index: memory-mapped shards seen as one `[N, D]` table.

    Rows are read on demand ([`rows`], [`blocks`]); nothing is loaded until asked for, so a table larger than RAM
    can be scanned block by block.

    Example:

    ```python
    >>> import tempfile, numpy as np, pyarrow as pa
    >>> from hf_cir.retrieval.storage import ShardedEmbeddings, write_shard
    >>> folder = tempfile.mkdtemp()
    >>> for number in range(2):
    ...     write_shard(folder, number, np.eye(3, 4), pa.table({"id": ["a", "b", "c"]}), "float16")
    >>> table = ShardedEmbeddings.open(folder, 2)
    >>> len(table), table.dim, table.rows([0, 4]).tolist()
    (6, 4, [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])

    ```
    """

    def __init__(self, shards: Sequence[np.ndarray]):
        self.shards = list(shards)
        dims = {shard.shape[1] for shard in self.shards if shard.ndim == 2}
        if len(dims) > 1 or any(shard.ndim != 2 for shard in self.shards):
            raise ValueError(f"Embedding shards of different shapes: {[s.shape for s in self.shards]}.")
        self.offsets = np.cumsum([0] + [len(shard) for shard in self.shards])
        self._dim = dims.pop() if dims else 0

    @classmethod
    def open(cls, folder: str | os.PathLike, num_shards: int) -> ShardedEmbeddings:
        shards = []
        for number in range(num_shards):
            path = embeddings_shard_path(folder, number)
            try:
                # Copy-on-write mapping: torch can view it without copying (it is never written).
                shards.append(np.load(path, mmap_mode="c", allow_pickle=False))
            except (OSError, ValueError) as error:
                raise ValueError(f"`index`: {path} is corrupt or missing ({error}).") from error
        return cls(shards)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def dtype(self) -> np.dtype:
        return self.shards[0].dtype if self.shards else np.dtype("float32")

    @property
    def nbytes(self) -> int:
        return sum(int(shard.nbytes) for shard in self.shards)

    def locate(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(shard number, row in shard) of global row `indices`."""
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"Row indices must be in [0, {len(self)}).")
        shard = np.searchsorted(self.offsets, indices, side="right") - 1
        return shard, indices - self.offsets[shard]

    def rows(self, indices: Sequence[int] | np.ndarray) -> torch.Tensor:
        """Rows `indices` as a float32 `[len(indices), D]` tensor."""
        indices = np.asarray(indices, dtype=np.int64)
        out = np.empty((indices.size, self.dim), dtype=np.float32)
        shard, local = self.locate(indices.reshape(-1))
        for number in np.unique(shard):
            chosen = shard == number
            out[chosen] = self.shards[number][local[chosen]]
        return torch.from_numpy(out.reshape(*indices.shape, self.dim))

    def blocks(self, rows_per_block: int) -> Iterator[tuple[int, np.ndarray]]:
        """`(first global row, [rows, D] array view)` blocks covering the table in order (no copy)."""
        for number, shard in enumerate(self.shards):
            for start in range(0, len(shard), rows_per_block):
                yield int(self.offsets[number]) + start, shard[start : start + rows_per_block]

    @torch.no_grad()
    def search(self, queries: torch.Tensor, k: int, block_rows: int = 131_072) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact top-`k` inner products of `queries` `[B, D]` with every row, scanning block by block.

        Only one block (`block_rows` rows, converted to float32) is in memory at a time, so a table larger than RAM
        is searched exactly (at the speed of reading it). Ties keep the lower row first, as `ExactIndex`.
        """
        from .search import top_k_lowest_index

        queries = torch.as_tensor(queries).float()
        queries = queries[None] if queries.ndim == 1 else queries
        k = min(k, len(self))
        # A few float16 queries: score in float16 (torch's half matrix-vector kernel reads the block as stored,
        # no conversion), keep a margin of candidates per block and re-score them in float32.
        native = self.dtype == np.float16 and len(queries) <= 4
        per_block = 2 * k + 16 if native else k
        operand = queries.half() if native else queries
        values, indices = [], []
        for start, block in self.blocks(block_rows):
            if not len(block):
                continue
            rows = torch.from_numpy(block)
            scores = (rows @ operand.T).T if native else queries @ rows.float().T
            top, positions = top_k_lowest_index(scores.float(), min(per_block, len(block)))
            if native:
                top = torch.bmm(rows[positions].float(), queries[:, :, None])[..., 0]
            values.append(top)
            indices.append(positions + start)
        return top_k_lowest_index(torch.cat(values, 1), k, torch.cat(indices, 1))

    def to_tensor(self, keep_dtype: bool = False) -> torch.Tensor:
        """The whole table as one tensor in RAM: float32, or the stored dtype with `keep_dtype=True`."""
        dtype = self.dtype if keep_dtype else np.float32
        if not self.shards:
            return torch.empty(0, self.dim)
        return torch.from_numpy(np.concatenate([np.asarray(s, dtype=dtype) for s in self.shards]))


class ShardedMetadata:
    """The metadata rows of a v2 index, read one Parquet shard at a time (a few recent shards stay cached)."""

    def __init__(self, folder: str | os.PathLike, embeddings: ShardedEmbeddings, cache_size: int = 8):
        self.folder = Path(folder)
        self.embeddings = embeddings
        self.cache_size = cache_size
        self._cache: OrderedDict[int, Any] = OrderedDict()

    def shard(self, number: int):
        """The `pyarrow.Table` of shard `number`."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if number in self._cache:
            self._cache.move_to_end(number)
            return self._cache[number]
        path = metadata_shard_path(self.folder, number)
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowException) as error:
            raise ValueError(f"`index`: {path} is corrupt or missing ({error}).") from error
        expected = len(self.embeddings.shards[number])
        if table.num_rows != expected or "id" not in table.column_names:
            raise ValueError(
                f"`index`: {path} is corrupt: {table.num_rows} rows (with columns {table.column_names}) for "
                f"{expected} embeddings; an `id` column is required."
            )
        self._cache[number] = table
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return table

    def rows(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """The metadata of global rows `indices`, as dicts, in order."""
        indices = np.asarray(list(indices), dtype=np.int64)
        shard, local = self.embeddings.locate(indices)
        out: list[dict[str, Any]] = [{} for _ in range(len(indices))]
        for number in np.unique(shard):
            positions = np.nonzero(shard == number)[0]
            taken = self.shard(int(number)).take(local[positions]).to_pylist()
            for position, row in zip(positions, taken):
                out[position] = row
        return out

    def column(self, name: str) -> list[Any]:
        """One column over every row (e.g. all ids); reads every shard."""
        values: list[Any] = []
        for number in range(len(self.embeddings.shards)):
            table = self.shard(number)
            values.extend(table.column(name).to_pylist() if name in table.column_names else [None] * table.num_rows)
        return values

    def column_names(self) -> list[str]:
        return self.shard(0).column_names if self.embeddings.shards else ["id"]
