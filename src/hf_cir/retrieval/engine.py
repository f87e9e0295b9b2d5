# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""The embedding engine: work cut into units, DataLoader workers, any number of processes, resumable outputs.

One unit runner ([`run_units`]) serves every embedding job of hf-cir: `hf-cir index` and [`GalleryIndex.build`]
(gallery shards, [`embed_source`]), `training/precompute_embeddings.py` (CompoDiff's parquet chunks) and the
benchmark evaluation (its gallery cache). A job is a [`UnitWork`]: units of rows, a picklable per-row `preparer`
(read, decode, preprocess), a per-batch `compute` and a per-unit `write`.

- Units are split over processes deterministically: process `r` of `n` runs units `r, r + n, r + 2n, ...`. Under
  `accelerate launch` (GPUs, machines, or `--multi_gpu` on a CPU) the processes are the launcher's; otherwise
  there is one. A stream (a `datasets.IterableDataset`) has no known number of units: every process reads it
  through, keeps its own units and passes over the others without decoding them.
- Rows are prepared in `num_workers` DataLoader workers, so the model, not the decoding, sets the pace; batches
  never cross a unit, so the results do not depend on the number of processes or workers.
- Each finished unit is written atomically and committed (a marker, or the output file itself); a rerun after a
  kill (of any process) skips the committed units.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..utils import atomic_file
from .sources import GalleryEntry, GallerySource
from .storage import INDEX_VERSION, STORAGE_DTYPES, embeddings_shard_path, metadata_shard_path, write_shard

__all__ = ["BUILD_NAME", "EmbeddingRun", "ProcessGroup", "UnitRun", "UnitWork", "embed_source", "run_units"]

logger = logging.getLogger(__name__)

BUILD_NAME = "build.json"
UNITS_DIR = "units"


class ProcessGroup:
    """This process's rank among the processes embedding together (Accelerate's when launched by it).

    Args:
        cpu: Force the CPU (gloo) backend even when accelerators are present (`--device cpu`). An `Accelerator`
            created earlier in the process is shared (its state is Accelerate's one `PartialState`).
    """

    def __init__(self, cpu: bool = False):
        self._state = None
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            from accelerate import PartialState

            self._state = PartialState(cpu=cpu)

    @classmethod
    def single(cls) -> ProcessGroup:
        """This process alone, even under `accelerate launch` (for work every process does in full)."""
        group = cls.__new__(cls)
        group._state = None
        return group

    @property
    def rank(self) -> int:
        return self._state.process_index if self._state is not None else 0

    @property
    def world_size(self) -> int:
        return self._state.num_processes if self._state is not None else 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def owns(self, unit: int) -> bool:
        """Whether `unit` is this process's (`unit mod world_size == rank`)."""
        return unit % self.world_size == self.rank

    def barrier(self) -> None:
        if self._state is not None:
            self._state.wait_for_everyone()

    def gather(self, value: Any) -> list[Any]:
        """`value` of every process, in rank order."""
        if self._state is None:
            return [value]
        from accelerate.utils import gather_object

        return gather_object([value])

    def broadcast(self, value: Any) -> Any:
        """The main process's `value`, on every process."""
        if self._state is None:
            return value
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([value])[0]


class UnitWork(ABC):
    """A resumable job of [`run_units`]: units of rows, each prepared, computed in batches and written as one piece.

    What `preparer` returns runs in DataLoader workers (it is copied there, so it holds what reading and
    preprocessing need and never the model); everything else runs in the calling process.
    """

    def num_units(self) -> int | None:
        """How many units there are, or `None` when only reading the input through finds out (a stream)."""
        return None

    @abstractmethod
    def iter_units(self, wanted: Callable[[int], bool]) -> Iterator[tuple[int, list | None]]:
        """Every unit in order as `(unit, rows)`; `rows` is `None` for a unit that is not `wanted` (not read)."""

    @abstractmethod
    def committed(self, unit: int) -> dict | None:
        """The commit record of a finished unit, or `None` when it must be (re)computed."""

    @abstractmethod
    def preparer(self) -> Callable[[Any], Any]:
        """A picklable `row -> prepared value` that reads, decodes and preprocesses one row in a worker (an exception
        it raises is handed to `compute` for that row). Workers may be started by spawn or forkserver (macOS,
        Windows, Python 3.14 on Linux), which pickles it: keep models and accelerator state out of it."""

    @abstractmethod
    def compute(self, unit: int, rows: list, batch: list[tuple[int, Any, BaseException | None]]) -> Any:
        """The result of one batch: `(position in the unit, prepared value or None, exception or None)` items."""

    @abstractmethod
    def write(self, unit: int, rows: list, results: list) -> dict:
        """Write and commit `unit` atomically from its batches' results; return its commit record."""


@dataclass
class UnitRun:
    """What [`run_units`] did on this process: the units it wrote now, those committed earlier, and the unit count."""

    written: dict[int, dict] = field(default_factory=dict)
    reused: dict[int, dict] = field(default_factory=dict)
    num_units: int = 0
    rows: int = 0


class _PreparedRows(torch.utils.data.Dataset):
    """`(unit, position, row) -> (unit, position, prepared value or None, exception or None)`; runs in workers."""

    def __init__(self, prepare: Callable[[Any], Any]):
        self.prepare = prepare

    def __getitem__(self, index: tuple[int, int, Any]):
        unit, position, row = index
        if position < 0:  # an empty unit: nothing to prepare
            return unit, position, None, None
        try:
            return unit, position, self.prepare(row), None
        except Exception as error:  # handed to `compute`, per row
            return unit, position, None, error

    def __len__(self) -> int:  # pragma: no cover - only the batch sampler indexes it
        raise TypeError("indexed by (unit, position, row)")


def _collate(samples):
    return samples


class _UnitBatches(torch.utils.data.Sampler):
    """Batches of `(unit, position, row)` that never cross a unit; each unit's rows are kept for the caller."""

    def __init__(self, work: UnitWork, wanted: Callable[[int], bool], batch_size: int, rows: dict[int, list]):
        self.work, self.wanted, self.batch_size, self.rows = work, wanted, batch_size, rows
        self.num_units = 0

    def __iter__(self) -> Iterator[list[tuple[int, int, Any]]]:
        for unit, rows in self.work.iter_units(self.wanted):
            self.num_units = unit + 1
            if rows is None:
                continue
            self.rows[unit] = rows
            if not rows:
                yield [(unit, -1, None)]
            for start in range(0, len(rows), self.batch_size):
                yield [(unit, p, rows[p]) for p in range(start, min(start + self.batch_size, len(rows)))]

    def __len__(self) -> int:  # pragma: no cover
        raise TypeError("unknown length")


def check_positive_integers(**values: tuple[Any, int]) -> None:
    """`name=(value, lowest allowed)`: each value an integer (not a bool) no lower than its bound."""
    for name, (value, low) in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"`{name}` must be an integer >= {low}, got {value!r}.")


def run_units(
    work: UnitWork,
    group: ProcessGroup,
    batch_size: int = 32,
    num_workers: int = 0,
    show_progress: bool = False,
    description: str = "Embedding",
    progress_unit: str = "row",
) -> UnitRun:
    """Run this process's uncommitted units of `work` (see the module docstring); every process calls it.

    Args:
        work: The job.
        group: The processes running it together.
        batch_size: Rows per `compute` call (batches never cross a unit).
        num_workers: DataLoader workers running `work.preparer()` (0: in this process).
        show_progress: Show a progress bar (main process).
    """
    from tqdm.auto import tqdm

    check_positive_integers(batch_size=(batch_size, 1), num_workers=(num_workers, 0))
    run = UnitRun()

    def uncommitted(unit: int) -> bool:
        if not group.owns(unit):
            return False
        record = work.committed(unit)
        if record is not None:
            run.reused[unit] = record
            return False
        return True

    wanted = uncommitted
    total = work.num_units()
    if total is not None:  # committed units are looked up once, and nothing starts when all are done
        todo = {unit for unit in range(total) if uncommitted(unit)}
        run.num_units = total
        if not todo:
            return run
        wanted = todo.__contains__
    rows: dict[int, list] = {}
    sampler = _UnitBatches(work, wanted, batch_size, rows)
    loader = torch.utils.data.DataLoader(
        _PreparedRows(work.preparer()), batch_sampler=sampler, num_workers=num_workers, collate_fn=_collate
    )
    progress = tqdm(desc=description, unit=progress_unit, disable=not (show_progress and group.is_main))
    current: int | None = None
    results: list = []
    try:
        for batch in loader:
            unit = batch[0][0]
            if current is not None and unit != current:
                run.written[current] = work.write(current, rows.pop(current), results)
                results = []
            current = unit
            items = [(position, value, error) for _, position, value, error in batch if position >= 0]
            if items:
                results.append(work.compute(unit, rows[unit], items))
                run.rows += len(items)
            progress.update(len(items))
        if current is not None:
            run.written[current] = work.write(current, rows.pop(current), results)
    finally:
        progress.close()
    run.num_units = max(run.num_units, sampler.num_units)
    return run


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


def read_unit_marker(work_dir: Path, unit: int) -> dict | None:
    """The commit record of a finished unit, or None when the unit must be (re)computed."""
    path = unit_marker_path(work_dir, unit)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not all(p.is_file() for p in (embeddings_shard_path(work_dir, unit), metadata_shard_path(work_dir, unit))):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("count"), int) else None


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
        return read_unit_marker(self.work_dir, unit)

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


def _build_faiss(work_dir: Path, group: ProcessGroup, kind: str, num_units: int, memory_budget, faiss_kwargs, seed=0):
    """Build the optional faiss index of a finished build; compressed kinds are filled by every process."""
    from .storage import ShardedEmbeddings

    table = ShardedEmbeddings.open(work_dir, num_units)
    count = len(table)
    if kind == "auto":
        kind = "ivf-pq" if count > AUTO_EXACT_LIMIT else None
    if kind is None:
        return None
    if kind != "ivf-pq":  # flat / ivf / hnsw: built in RAM by the main process
        if group.is_main:
            from .search import FaissIndex

            FaissIndex(table.to_tensor(), kind=kind, **(faiss_kwargs or {})).save(work_dir / "faiss.index")
        return {"kind": kind, "file": "faiss.index"}
    import faiss

    from .compressed import (
        CompressedIndex,
        add_rows,
        merge_compressed_parts,
        plan_compressed_index,
        train_compressed_index,
    )

    plan = plan_compressed_index(count, table.dim, memory_budget, **(faiss_kwargs or {}))
    trained = work_dir / "faiss.trained.index"
    if group.is_main:
        rng = np.random.default_rng(seed)
        sample = np.sort(rng.choice(count, min(plan.train_size, count), replace=False))
        faiss.write_index(train_compressed_index(table.rows(sample).numpy(), plan, seed), str(trained))
    group.barrier()
    part = faiss.read_index(str(trained))
    mine = [u for u in range(num_units) if u % group.world_size == group.rank]
    add_rows(part, ((int(table.offsets[u]), table.shards[u]) for u in mine))
    faiss.write_index(part, str(work_dir / f"faiss.part-{group.rank:05d}.index"))
    group.barrier()
    if group.is_main:
        parts = [work_dir / f"faiss.part-{rank:05d}.index" for rank in range(group.world_size)]
        CompressedIndex(merge_compressed_parts(parts), plan.to_dict(), use_gpu=False).save(work_dir / "faiss.index")
        for path in [trained, *parts]:
            path.unlink()
    return {"kind": kind, "file": "faiss.index", "factory": plan.factory}


AUTO_EXACT_LIMIT = 100_000


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
) -> tuple[int, dict[str, str]]:
    """Embed `source` on every process of this run into the index folder `output` (format v2).

    Every process calls this with the same arguments. Work happens in `output.partial/` (resumable: see
    [`embed_source`]); the main process then writes the skipped list, the optional faiss index (compressed kinds
    are filled by every process and merged) and the manifest, and renames the folder to `output`. The caller checks
    beforehand that `output` may be replaced.

    Returns:
        `(images embedded by this run on all processes, {id: reason} of the skipped inputs)`.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .storage import SKIPPED_NAME, write_manifest

    output = Path(output)
    work_dir = output.with_name(output.name + ".partial")
    group = ProcessGroup(cpu=getattr(model, "device", torch.device("cpu")).type == "cpu")
    identity = build_identity(model, source, unit_size, dtype)
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
    records = [read_unit_marker(work_dir, unit) for unit in range(num_units)]
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
    faiss_info = _build_faiss(work_dir, group, faiss, num_units, memory_budget, faiss_kwargs) if faiss else None
    if group.is_main:
        with atomic_file(work_dir / SKIPPED_NAME, "wb") as handle:
            pq.write_table(pa.table({"id": list(skipped), "reason": list(skipped.values())}), handle)
        root = source.root
        manifest = {
            "format": "hf-cir-index",
            "version": INDEX_VERSION,
            "model": model.name_or_path,
            "model_type": model.model_type,
            "embedding_dim": model.embedding_dim,
            "fingerprint": identity["fingerprint"],
            "dtype": dtype,
            "count": count,
            "num_shards": num_units,
            "root": str(root) if root is not None else None,
            "source": source.describe(),
            "faiss": faiss_info,
        }
        write_manifest(work_dir, manifest)
        for leftover in list(work_dir.glob(".*.tmp")) + list(work_dir.glob("*/.*.tmp")):
            leftover.unlink()  # temporary files of a killed run (ours)
        # Moved with its build records, then tidied: a kill in between leaves a complete index (whose extra
        # `units/` and `build.json` nothing reads), never a finished build folder that a rerun would refuse.
        _move_into_place(work_dir, output)
        shutil.rmtree(output / UNITS_DIR, ignore_errors=True)
        (output / BUILD_NAME).unlink(missing_ok=True)
    group.barrier()
    return computed, skipped
