# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""The gallery shard builder of `hf-cir index`: a gallery source embedded into an index folder (format v2), unit
by unit, resumable, on any number of processes (the generic runner is `hf_cir.utils.units`).

- Each unit is a shard: embedded through [`run_units`] and committed with a marker in `INDEX.partial/units/`; a
  rerun after a kill (of any process) skips the committed units whose files are intact, and recomputes a damaged
  one (its headers do not match its record).
- One build at a time owns an output: [`OutputLock`] (an exclusive `flock` on `.OUTPUT.lock` beside it, released
  when the process ends however it ends) refuses a second build into the same output with one clear error.
- Before the finished folder is published it is checked as a reader will check it (unique ids, every shard against
  the manifest), so an index that cannot be loaded is never published; a published index found damaged is repaired
  by the same command (its intact shards are kept).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..utils import atomic_file
from ..utils.units import ProcessGroup, UnitWork, check_positive_integers, run_units
from .kinds import resolve_index_kind
from .sources import GalleryEntry, GallerySource
from .storage import (
    INDEX_VERSION,
    MANIFEST_NAME,
    STORAGE_DTYPES,
    ShardedEmbeddings,
    check_index_parts,
    embeddings_shard_path,
    index_damage,
    make_manifest,
    metadata_shard_path,
    read_npy_header,
    read_skipped_by_unit,
    validate_manifest,
    write_manifest,
    write_shard,
    write_skipped,
)

__all__ = ["BUILD_NAME", "EmbeddingRun", "OutputLock", "build_index_folder", "embed_source"]

logger = logging.getLogger(__name__)

BUILD_NAME = "build.json"
UNITS_DIR = "units"
LOCK_SUFFIX = ".lock"


@dataclass
class EmbeddingRun:
    """What one process did: images embedded now, units done now or earlier, unreadable images, and the unit count."""

    computed: int = 0
    units_written: list[int] = field(default_factory=list)
    units_reused: list[int] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    num_units: int = 0


def unit_marker_path(work_dir: Path, unit: int) -> Path:
    return work_dir / UNITS_DIR / f"{unit:06d}.json"


def read_unit_marker(work_dir: Path, unit: int, dtype: str | None = None, dim: int | None = None) -> dict | None:
    """The commit record of a finished unit, or None when the unit must be (re)computed: no record, or files that
    do not match it (a truncated, replaced or missing shard: its headers are read, and checked against the record,
    `dtype` and `dim`)."""
    path = unit_marker_path(work_dir, unit)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("count"), int):
        return None
    damage = _unit_damage(work_dir, unit, record["count"], dtype, dim)
    if damage is not None:
        logger.warning(f"{work_dir}: committed unit {unit} is damaged ({damage}); computing it again.")
        return None
    return record


def _unit_damage(work_dir: Path, unit: int, count: int, dtype: str | None, dim: int | None) -> str | None:
    """Why the files of a committed unit do not hold `count` rows of `dim` `dtype` values (`None`: they do)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        stored, shape, _ = read_npy_header(embeddings_shard_path(work_dir, unit), work_dir)
        rows = pq.ParquetFile(metadata_shard_path(work_dir, unit)).metadata.num_rows
    except (OSError, ValueError, pa.ArrowException) as error:
        return str(error)
    if len(shape) != 2 or shape[0] != count or rows != count:
        return f"{shape} embeddings and {rows} metadata rows for {count} images"
    if (dtype is not None and stored != np.dtype(dtype)) or (dim is not None and shape[1] != dim):
        return f"{stored} embeddings of shape {shape}, expected {dtype} of width {dim}"
    return None


def lock_path(output: str | os.PathLike) -> Path:
    """The lock file of the build of `output`: `.NAME.lock` beside it."""
    output = Path(output)
    return output.with_name(f".{output.name}{LOCK_SUFFIX}")


class OutputLock:
    """An exclusive lock on building `output`: one build at a time writes `output.partial/` and renames it.

    It is an `fcntl.flock` on `.NAME.lock` beside `output`: the kernel releases it when the holder ends, however it
    ends, so a lock file left by a killed build is taken over (never a stale lock). The file holds the holder's
    process id, for the message a second build gets.
    """

    def __init__(self, output: str | os.PathLike):
        self.output = Path(output)
        self.path = lock_path(output)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise `FileExistsError` naming the build that holds it."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not on POSIX: builds are not serialised
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode("ascii", "replace").strip()
                os.close(fd)
                process = f" (process {holder})" if holder.isdigit() else ""
                raise FileExistsError(
                    f"`output`: another hf-cir index build{process} is writing {self.output}; wait for it to "
                    "finish, or stop it and run this command again."
                ) from None
            try:
                current = os.stat(self.path).st_ino
            except FileNotFoundError:
                current = None
            if current == os.fstat(fd).st_ino:
                break
            os.close(fd)  # the holder removed the file between our open and our lock: take the new one
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def probe(self) -> None:
        """Raise the `FileExistsError` of [`acquire`] if another build holds the lock; else return, holding nothing."""
        if self.path.exists():
            self.acquire()
            self.release()

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)  # still locked: a build waiting on this file sees it gone and opens a new one
        os.close(self._fd)
        self._fd = None


def describe_error(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _metadata_table(source: GallerySource, entries: list[GalleryEntry], kept: list[int], norms: np.ndarray):
    import pyarrow as pa

    schema = pa.schema([("id", pa.string()), ("norm", pa.float32()), *source.metadata_schema()])
    columns = {name: [entries[i].metadata.get(name) for i in kept] for name in schema.names[2:]}
    return pa.table({"id": [entries[i].id for i in kept], "norm": norms.astype(np.float32), **columns}, schema=schema)


def _open_gallery_image(source: GallerySource, preprocess: Callable | None, row: GalleryEntry):
    image = source.open(row.payload)
    return preprocess([image])[0] if preprocess is not None else image


class _GalleryShards(UnitWork):
    """Gallery images -> index shards (format v2) with a commit marker per unit; unreadable images are listed."""

    def __init__(self, model, source: GallerySource, work_dir: Path, unit_size: int, dtype: str):
        self.model, self.source, self.work_dir, self.unit_size, self.dtype = model, source, work_dir, unit_size, dtype
        self.preprocess = model.image_preprocessor()

    def num_units(self) -> int | None:
        return self.source.num_units(self.unit_size)

    def iter_units(self, wanted):
        return self.source.iter_units(self.unit_size, wanted)

    def committed(self, unit: int) -> dict | None:
        return read_unit_marker(self.work_dir, unit, self.dtype, self.model.embedding_dim)

    def preparer(self):
        return functools.partial(_open_gallery_image, self.source, self.preprocess)

    def compute(self, unit, rows, batch):
        good = [(position, value) for position, value, error in batch if error is None]
        skipped = {rows[position].id: describe_error(error) for position, _, error in batch if error is not None}
        if not good:
            return [], None, skipped
        values = [value for _, value in good]
        if self.preprocess is not None:
            embeddings = self.model.encode_pixel_values(torch.stack(values))
        else:
            embeddings = self.model.encode_images(values)
        embeddings = embeddings.detach().float().cpu()
        if embeddings.shape != (len(values), self.model.embedding_dim):
            raise ValueError(
                f"The encoder returned embeddings of shape {tuple(embeddings.shape)} for {len(values)} images."
            )
        return [position for position, _ in good], embeddings, skipped

    def write(self, unit, rows, results) -> dict:
        kept = [position for positions, _, _ in results for position in positions]
        chunks = [embeddings for _, embeddings, _ in results if embeddings is not None]
        skipped = {key: reason for _, _, part in results for key, reason in part.items()}
        table = torch.cat(chunks) if chunks else torch.empty(0, self.model.embedding_dim)
        norms = table.norm(dim=-1, keepdim=True)
        normalised = (table / norms.clamp_min(1e-12)).numpy()
        metadata = _metadata_table(self.source, rows, kept, norms[:, 0].numpy())
        write_shard(self.work_dir, unit, normalised, metadata, self.dtype)
        record = {"count": len(kept), "skipped": skipped}
        with atomic_file(unit_marker_path(self.work_dir, unit), "w") as handle:
            json.dump(record, handle)
        return record


def prepare_work_dir(work_dir: Path, identity: dict[str, Any]) -> None:
    """Create (or check) the build folder: it must be ours, and a build of another run is restarted."""
    marker = work_dir / BUILD_NAME
    if work_dir.exists():
        if not marker.is_file():
            legacy = [p for p in work_dir.iterdir() if not p.name.startswith("shard-")]
            if legacy:
                raise FileExistsError(
                    f"{work_dir} exists and is not an unfinished hf-cir build (no {BUILD_NAME}); move it away."
                )
            shutil.rmtree(work_dir)  # an unfinished build of index format 1: its shards are not reusable
        else:
            try:
                previous = json.loads(marker.read_text())
            except ValueError:
                previous = None
            if previous != json.loads(json.dumps(identity)):
                logger.warning(
                    f"{work_dir} holds an unfinished build with other settings or another model; starting over."
                )
                shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    for name in ("embeddings", "metadata", UNITS_DIR):
        (work_dir / name).mkdir(exist_ok=True)
    if not marker.is_file():
        with atomic_file(marker, "w") as handle:
            json.dump(identity, handle, indent=1)


def embed_source(
    model,
    source: GallerySource,
    work_dir: str | os.PathLike,
    group: ProcessGroup,
    unit_size: int = 4096,
    batch_size: int = 32,
    num_workers: int = 0,
    dtype: str = "float32",
    show_progress: bool = True,
    description: str = "Embedding images",
) -> EmbeddingRun:
    """Embed this process's units of `source` into shards under `work_dir` (which `prepare_work_dir` created).

    Args:
        model: A `RetrievalModel`.
        source: The gallery source.
        work_dir: The build folder.
        group: The processes embedding together.
        unit_size: Images per unit (folders and datasets; a webdataset unit is one tar).
        batch_size: Images per encoder call.
        num_workers: DataLoader workers that open and preprocess images (0: in this process).
        dtype: Storage dtype of the shards, `"float32"` or `"float16"`.
        show_progress: Show a progress bar (main process).
    """
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"`dtype` must be one of {', '.join(STORAGE_DTYPES)}, got {dtype!r}.")
    check_positive_integers(batch_size=(batch_size, 1), unit_size=(unit_size, 1), num_workers=(num_workers, 0))
    work = _GalleryShards(model, source, Path(work_dir), unit_size, dtype)
    done = run_units(work, group, batch_size, num_workers, show_progress, description, progress_unit="img")
    run = EmbeddingRun(units_written=sorted(done.written), units_reused=sorted(done.reused), num_units=done.num_units)
    for unit in sorted({**done.reused, **done.written}):
        record = done.written.get(unit, done.reused.get(unit))
        run.skipped.update(record.get("skipped", {}))
    run.computed = sum(record["count"] for record in done.written.values())
    return run


def build_identity(model, source: GallerySource, unit_size: int, dtype: str) -> dict[str, Any]:
    """What a resumed build must share with the unfinished one to reuse its shards."""
    return {
        "version": INDEX_VERSION,
        "fingerprint": model.gallery_fingerprint(),
        "embedding_dim": model.embedding_dim,
        "source": source.describe(),
        "unit_size": unit_size,
        "dtype": dtype,
    }


def _move_into_place(work_dir: Path, output: Path) -> None:
    """Rename the finished build folder to `output` (an existing index there was checked to be ours)."""
    import tempfile

    if output.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".old", dir=output.parent))
        os.replace(output, trash / output.name)
        os.replace(work_dir, output)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(work_dir, output)


def _check_unique_ids(work_dir: Path, num_units: int, source: GallerySource) -> None:
    """Ids must be unique across the whole gallery (every source's ids were checked one by one as they were read)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    columns = [pq.read_table(metadata_shard_path(work_dir, u), columns=["id"]).column("id") for u in range(num_units)]
    ids = pa.chunked_array([chunk for column in columns for chunk in column.chunks], type=pa.string())
    if len(pc.unique(ids)) == len(ids):
        return
    counts = pc.value_counts(ids)
    repeated = counts.filter(pc.greater(counts.field("counts"), 1))[0]["values"].as_py()
    units = [source.unit_name(u) for u, column in enumerate(columns) if repeated in column.to_pylist()]
    where = f"in {' and '.join(units)}" if len(units) > 1 else f"twice in {units[0]}"
    raise ValueError(
        f"`{source.kind}`: the id {repeated!r} appears {where}; ids must be unique (rename or drop the repeated "
        "samples, or pass another id column)."
    )


def build_index_folder(
    model,
    source: GallerySource,
    output: str | os.PathLike,
    unit_size: int = 4096,
    batch_size: int = 32,
    num_workers: int = 0,
    dtype: str = "float32",
    faiss: str | None = None,
    memory_budget: int | str | None = None,
    faiss_kwargs: dict[str, Any] | None = None,
    show_progress: bool = True,
    description: str = "Indexing",
    overwrite: bool = False,
) -> tuple[int, dict[str, str]]:
    """Embed `source` on every process of this run into the index folder `output` (format v2).

    Every process calls this with the same arguments. The main process first takes the output's [`OutputLock`]
    (a second build into the same output is refused, and so is an `output` that appeared meanwhile unless
    `overwrite`). Work happens in `output.partial/` (resumable: see [`embed_source`]); the main process then checks
    that ids are unique, writes the skipped list, the optional faiss index (compressed kinds are filled by every
    process and merged), checks the finished folder as a reader will, writes the manifest and renames the folder to
    `output`. The caller checks beforehand that `output` may be replaced.

    Returns:
        `(images embedded by this run on all processes, {id: reason} of the skipped inputs)`.
    """
    output = Path(output)
    work_dir = output.with_name(output.name + ".partial")
    group = ProcessGroup(cpu=getattr(model, "device", torch.device("cpu")).type == "cpu")
    lock = OutputLock(output)
    identity = build_identity(model, source, unit_size, dtype)
    refusal = None
    if group.is_main:
        try:
            lock.acquire()
            if output.exists() and not overwrite:
                _reuse_intact_units(output, work_dir, identity)
        except OSError as error:
            lock.release()
            refusal = error
    messages = group.gather(str(refusal) if refusal is not None else None)
    if refusal is not None:
        raise refusal
    if messages[0] is not None:
        raise FileExistsError(messages[0])
    try:
        return _build_locked(
            model, source, output, work_dir, group, identity, unit_size, batch_size, num_workers, dtype, faiss,
            memory_budget, faiss_kwargs, show_progress, description,
        )  # fmt: skip
    finally:
        lock.release()


def _reuse_intact_units(output: Path, work_dir: Path, identity: dict[str, Any]) -> None:
    """`output` exists and no overwrite was asked for: go on only to repair a damaged index of this same build (its
    intact shards become committed units of `work_dir`, the damaged ones are computed again); else refuse."""
    damage = index_damage(output)
    if damage is None:
        raise FileExistsError(f"`output`: {output} already exists; pass overwrite=True (--overwrite) to replace it.")
    manifest = json.loads((output / MANIFEST_NAME).read_text())
    settings = {key: manifest.get(key) for key in ("fingerprint", "embedding_dim", "dtype", "unit_size")}
    wanted = {key: identity[key] for key in settings}
    rows = manifest.get("shard_rows")
    if settings != wanted or json.loads(json.dumps(manifest.get("source"))) != json.loads(
        json.dumps(identity["source"])
    ) or not isinstance(rows, list):  # fmt: skip
        raise FileExistsError(
            f"`output`: {output} is damaged ({damage}) and was not built by this same command (another model, "
            "source or settings); pass overwrite=True (--overwrite) to rebuild it."
        )
    logger.warning(f"{output} is damaged ({damage}); recomputing its damaged shards.")
    prepare_work_dir(work_dir, identity)
    skipped = read_skipped_by_unit(output)
    for unit, count in enumerate(rows):
        if read_unit_marker(work_dir, unit, identity["dtype"], identity["embedding_dim"]) is not None:
            continue
        if _unit_damage(output, unit, count, identity["dtype"], identity["embedding_dim"]) is not None:
            continue
        for path in (embeddings_shard_path, metadata_shard_path):
            target = path(work_dir, unit)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.repair.tmp")
            shutil.copyfile(path(output, unit), tmp)
            os.replace(tmp, target)
        with atomic_file(unit_marker_path(work_dir, unit), "w") as handle:
            json.dump({"count": count, "skipped": skipped.get(unit, {})}, handle)


def _build_locked(
    model, source, output, work_dir, group, identity, unit_size, batch_size, num_workers, dtype, faiss,
    memory_budget, faiss_kwargs, show_progress, description,
) -> tuple[int, dict[str, str]]:  # fmt: skip
    if group.is_main:
        prepare_work_dir(work_dir, identity)
    group.barrier()
    run = embed_source(
        model, source, work_dir, group, unit_size, batch_size, num_workers, dtype, show_progress, description
    )
    computed = sum(group.gather(run.computed))
    counts = set(group.gather(run.num_units))  # a stream's count is known once every process has read it through
    if len(counts) != 1:
        raise RuntimeError(f"The processes found different numbers of units in the source: {sorted(counts)}.")
    num_units = counts.pop()
    records = [read_unit_marker(work_dir, unit, dtype, model.embedding_dim) for unit in range(num_units)]
    missing = [unit for unit, record in enumerate(records) if record is None]
    if missing:
        raise RuntimeError(f"Units {missing[:10]} of {work_dir} were not written; run the same command again.")
    count = sum(record["count"] for record in records)
    skipped = dict(source.skipped())
    for record in records:
        skipped.update(record.get("skipped", {}))
    skipped = {key: skipped[key] for key in sorted(skipped)}
    if count == 0:
        raise ValueError(f"`{source.kind}`: no readable image in {source.describe().get('root') or 'the source'}.")
    _on_main(group, _check_unique_ids, work_dir, num_units, source)
    kind = resolve_index_kind(faiss, count)
    faiss_info = None
    if kind is not None:
        table = ShardedEmbeddings.open(work_dir, num_units)
        faiss_info = kind.build(table, work_dir, group, memory_budget, faiss_kwargs)

    def publish() -> None:
        found_in = {key: unit for unit, record in enumerate(records) for key in record.get("skipped", {})}
        write_skipped(work_dir, skipped, found_in)
        root = source.root
        manifest = make_manifest(
            model=model.name_or_path,
            model_type=model.model_type,
            embedding_dim=model.embedding_dim,
            fingerprint=identity["fingerprint"],
            dtype=dtype,
            count=count,
            num_shards=num_units,
            shard_rows=[record["count"] for record in records],
            unit_size=unit_size,
            root=str(root) if root is not None else None,
            source=source.describe(),
            faiss=faiss_info,
        )
        # What a reader will check, checked before anything is published: never an index that cannot be loaded.
        validate_manifest(manifest, work_dir)
        check_index_parts(work_dir, manifest)
        write_manifest(work_dir, manifest)
        for leftover in list(work_dir.glob(".*.tmp")) + list(work_dir.glob("*/.*.tmp")):
            leftover.unlink()  # temporary files of a killed run (ours)
        # Moved with its build records, then tidied: a kill in between leaves a complete index (whose extra
        # `units/` and `build.json` nothing reads), never a finished build folder that a rerun would refuse.
        _move_into_place(work_dir, output)
        shutil.rmtree(output / UNITS_DIR, ignore_errors=True)
        (output / BUILD_NAME).unlink(missing_ok=True)

    _on_main(group, publish)
    return computed, skipped


def _on_main(group: ProcessGroup, function: Callable, *args) -> None:
    """Run `function` on the main process only; an error it raises is raised on every process (none waits for a
    main process that has stopped)."""
    error = None
    if group.is_main:
        try:
            function(*args)
        except (OSError, ValueError) as raised:
            error = raised
    messages = group.gather(None if error is None else (type(error).__name__, str(error)))
    if error is not None:
        raise error
    if messages[0] is not None:
        name, message = messages[0]
        raise (ValueError if name == "ValueError" else OSError)(message)  # the main process's error, here too
