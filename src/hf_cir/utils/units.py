# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""The unit runner: resumable work cut into units, DataLoader workers, any number of processes.

One runner ([`run_units`]) serves every long embedding job of hf-cir: `hf-cir index` (gallery shards,
`hf_cir.retrieval.engine`), `training/precompute_embeddings.py` (CompoDiff's parquet chunks) and the benchmark
evaluation (its gallery cache). A job is a [`UnitWork`]: units of rows, a picklable per-row `preparer` (read,
decode, preprocess), a per-batch `compute` and a per-unit `write`.

- Units are split over processes deterministically: process `r` of `n` runs units `r, r + n, r + 2n, ...`. Under
  `accelerate launch` (GPUs, machines, or `--multi_gpu` on a CPU) the processes are the launcher's; otherwise
  there is one ([`ProcessGroup`]). A stream (a `datasets.IterableDataset`) has no known number of units: every
  process reads it through, keeps its own units and passes over the others without decoding them.
- Rows are prepared in `num_workers` DataLoader workers, so the model, not the decoding, sets the pace; batches
  never cross a unit, so the results do not depend on the number of processes or workers.
- Each finished unit is written atomically and committed by the job (a marker, or the output file itself); a rerun
  after a kill (of any process) skips the units the job reports as committed.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["ProcessGroup", "UnitRun", "UnitWork", "check_positive_integers", "run_units"]


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
