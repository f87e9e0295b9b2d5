# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""The embedding engine: any gallery source, DataLoader workers, any number of processes, resumable shards.

`hf-cir index`, [`GalleryIndex.build`] and `training/precompute_embeddings.py` embed images through this module.

- The source's units (see `hf_cir.retrieval.sources`) are split over processes deterministically: process `r` of
  `n` embeds units `r, r + n, r + 2n, ...`. Under `accelerate launch` (GPUs, machines, or `--multi_gpu` on a CPU)
  the processes are the launcher's; otherwise there is one.
- Images are opened and preprocessed (the model's own image processor) in `num_workers` DataLoader workers, so the
  model, not the decoding, sets the pace; batches never cross a unit, so the embeddings do not depend on the number
  of processes or workers.
- Each finished unit is written atomically as one shard of the index format v2 (`hf_cir.retrieval.storage`) and
  committed by a small marker file; a rerun after a kill (of any process) skips the committed units.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..utils import atomic_file
from .sources import GalleryEntry, GallerySource
from .storage import INDEX_VERSION, STORAGE_DTYPES, embeddings_shard_path, metadata_shard_path, write_shard

__all__ = ["BUILD_NAME", "EmbeddingRun", "ProcessGroup", "embed_source"]

logger = logging.getLogger(__name__)

BUILD_NAME = "build.json"
UNITS_DIR = "units"


class ProcessGroup:
    """This process's rank among the processes embedding together (Accelerate's when launched by it).

    Args:
        cpu: Force the CPU (gloo) backend even when accelerators are present (`--device cpu`).
    """

    def __init__(self, cpu: bool = False):
        self._state = None
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            from accelerate import PartialState

            self._state = PartialState(cpu=cpu)

    @property
    def rank(self) -> int:
        return self._state.process_index if self._state is not None else 0

    @property
    def world_size(self) -> int:
        return self._state.num_processes if self._state is not None else 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

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


@dataclass
class EmbeddingRun:
    """What one process did: images embedded now, units done now or earlier, and unreadable images."""

    computed: int = 0
    units_written: list[int] = field(default_factory=list)
    units_reused: list[int] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


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


class _UnitImages(torch.utils.data.Dataset):
    """`(unit, position) -> (unit, position, pixel values or image or None, error or None)`; runs in workers."""

    def __init__(self, source: GallerySource, unit_size: int, preprocess: Callable | None):
        self.source, self.unit_size, self.preprocess = source, unit_size, preprocess
        self._unit, self._entries = None, []

    def entries(self, unit: int) -> list[GalleryEntry]:
        if unit != self._unit:
            self._unit, self._entries = unit, self.source.entries(unit, self.unit_size)
        return self._entries

    def __getitem__(self, index: tuple[int, int]):
        unit, position = index
        if position < 0:  # an empty unit: nothing to open
            return unit, position, None, None
        try:
            image = self.source.open(self.entries(unit)[position].payload)
            value = self.preprocess([image])[0] if self.preprocess is not None else image
            return unit, position, value, None
        except Exception as error:  # reported per image
            return unit, position, None, f"{type(error).__name__}: {error}"

    def __len__(self) -> int:  # pragma: no cover - only the batch sampler indexes it
        raise TypeError("indexed by (unit, position)")


def _collate(samples):
    return samples


class _UnitBatches(torch.utils.data.Sampler):
    """Batches of `(unit, position)` that never cross a unit; the entries of each unit are kept for the caller."""

    def __init__(self, images: _UnitImages, units: list[int], batch_size: int, entries: dict[int, list]):
        self.images, self.units, self.batch_size, self.entries = images, units, batch_size, entries

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for unit in self.units:
            entries = self.images.source.entries(unit, self.images.unit_size)
            self.entries[unit] = entries
            if not entries:
                yield [(unit, -1)]
            for start in range(0, len(entries), self.batch_size):
                yield [(unit, p) for p in range(start, min(start + self.batch_size, len(entries)))]

    def __len__(self) -> int:  # pragma: no cover
        raise TypeError("unknown length")


def _metadata_table(source: GallerySource, entries: list[GalleryEntry], kept: list[int], norms: np.ndarray):
    import pyarrow as pa

    schema = pa.schema([("id", pa.string()), ("norm", pa.float32()), *source.metadata_schema()])
    columns = {name: [entries[i].metadata.get(name) for i in kept] for name in schema.names[2:]}
    return pa.table({"id": [entries[i].id for i in kept], "norm": norms.astype(np.float32), **columns}, schema=schema)


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
    from tqdm.auto import tqdm

    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"`dtype` must be one of {', '.join(STORAGE_DTYPES)}, got {dtype!r}.")
    for name, value, low in (
        ("batch_size", batch_size, 1),
        ("unit_size", unit_size, 1),
        ("num_workers", num_workers, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"`{name}` must be an integer >= {low}, got {value!r}.")
    work_dir = Path(work_dir)
    run = EmbeddingRun()
    mine = [u for u in range(source.num_units(unit_size)) if u % group.world_size == group.rank]
    todo = []
    for unit in mine:
        record = read_unit_marker(work_dir, unit)
        if record is None:
            todo.append(unit)
        else:
            run.units_reused.append(unit)
            run.skipped.update(record.get("skipped", {}))
    if not todo:
        return run

    preprocess = model.image_preprocessor()
    images = _UnitImages(source, unit_size, preprocess)
    entries: dict[int, list[GalleryEntry]] = {}
    loader = torch.utils.data.DataLoader(
        images,
        batch_sampler=_UnitBatches(images, todo, batch_size, entries),
        num_workers=num_workers,
        collate_fn=_collate,
    )
    progress = tqdm(desc=description, unit="img", disable=not (show_progress and group.is_main))
    current: int | None = None
    kept: list[int] = []
    chunks: list[torch.Tensor] = []
    skipped: dict[str, str] = {}

    def flush(unit: int) -> None:
        unit_entries = entries.pop(unit)
        table = torch.cat(chunks) if chunks else torch.empty(0, model.embedding_dim)
        norms = table.norm(dim=-1, keepdim=True)
        normalised = (table / norms.clamp_min(1e-12)).numpy()
        write_shard(
            work_dir, unit, normalised, _metadata_table(source, unit_entries, kept, norms[:, 0].numpy()), dtype
        )
        with atomic_file(unit_marker_path(work_dir, unit), "w") as handle:
            json.dump({"count": len(kept), "skipped": skipped}, handle)
        run.units_written.append(unit)
        run.skipped.update(skipped)

    try:
        for batch in loader:
            unit = batch[0][0]
            if current is not None and unit != current:
                flush(current)
                kept, chunks, skipped = [], [], {}
            current = unit
            good = [(position, value) for _, position, value, error in batch if position >= 0 and error is None]
            for _, position, _, error in batch:
                if error is not None:
                    skipped[entries[unit][position].id] = error
            if good:
                values = [value for _, value in good]
                if preprocess is not None:
                    embeddings = model.encode_pixel_values(torch.stack(values))
                else:
                    embeddings = model.encode_images(values)
                embeddings = embeddings.detach().float().cpu()
                if embeddings.shape != (len(values), model.embedding_dim):
                    raise ValueError(
                        f"The encoder returned embeddings of shape {tuple(embeddings.shape)} for {len(values)} images."
                    )
                kept.extend(position for position, _ in good)
                chunks.append(embeddings)
                run.computed += len(values)
            progress.update(sum(1 for _, position, _, _ in batch if position >= 0))
        if current is not None:
            flush(current)
    finally:
        progress.close()
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
    group.barrier()
    num_units = source.num_units(unit_size)
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
        shutil.rmtree(work_dir / UNITS_DIR)
        (work_dir / BUILD_NAME).unlink()
        for leftover in list(work_dir.glob(".*.tmp")) + list(work_dir.glob("*/.*.tmp")):
            leftover.unlink()  # temporary files of a killed run (ours)
        _move_into_place(work_dir, output)
    group.barrier()
    return computed, skipped
