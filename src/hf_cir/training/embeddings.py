# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""CompoDiff's training data: precomputed CLIP embeddings (see training/README.md, "Data format for CompoDiff"), and
the deterministic multi-task batches of the paper's two training stages (Gu et al., CompoDiff, TMLR 2024, Sec. 4).

One row is one example. Columns (D = image embedding size, L x T = text length x text hidden size, S = mask side):

- `target_image_embeds` (D floats, required): the CLIP image embedding the prior must produce.
- `text_embeds` (L x T floats, required): the text encoder's last hidden state of the caption / modification text.
- `reference_image_embeds` (D floats or null): the image condition (triplets: the reference image; masked
  examples: the image with its masked region zeroed). Null for text-to-image rows.
- `mask` (S x S, 0/1, or null): 1 marks the masked region (masked examples only).
- `reverse_text_embeds` (L x T floats or null): for triplets, the modification from target back to reference; rows
  that have it may be swapped at random.
- `task` (`"t2i"`, `"triplet"` or `"masked"`, optional): inferred from the non-null columns when absent.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import pyarrow
import torch

from ..utils.errors import one_line
from .data import IndexStream, load_data_files, load_training_dataset

__all__ = [
    "EMBEDDINGS_INFO_NAME",
    "NULL_TEXT_EMBEDS_NAME",
    "TASKS",
    "CompoDiffBatchSampler",
    "TaskPool",
    "build_task_pools",
    "check_embedding_columns",
    "load_embedding_dataset",
]

EMBEDDINGS_INFO_NAME = "embeddings_info.json"
NULL_TEXT_EMBEDS_NAME = "null_text_embeds.safetensors"
EMBEDDINGS_DATA_DIR = "data"
TASKS = ("triplet", "t2i", "masked")
REQUIRED_COLUMNS = {
    "t2i": ("target_image_embeds", "text_embeds"),
    "triplet": ("target_image_embeds", "text_embeds", "reference_image_embeds"),
    "masked": ("target_image_embeds", "text_embeds", "reference_image_embeds", "mask"),
}


def load_embedding_dataset(name_or_path: str, split: str = "train", cache_dir: str | None = None):
    """Load an embedding dataset and its `embeddings_info.json` (`{}` when there is none).

    A folder written by `training/precompute_embeddings.py` holds `embeddings_info.json` and parquet chunks under
    `data/`; any other source goes through `load_training_dataset`.
    """
    path = Path(name_or_path)
    info = {}
    if path.is_dir() and (path / EMBEDDINGS_INFO_NAME).is_file():
        try:
            info = json.loads((path / EMBEDDINGS_INFO_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ValueError(f"--train_data {path / EMBEDDINGS_INFO_NAME} is damaged ({one_line(error)}).") from None
        if not isinstance(info, dict):
            raise ValueError(f"--train_data {path / EMBEDDINGS_INFO_NAME} is not a JSON object.")
        info["path"] = str(path)
        files = sorted(str(p) for p in (path / EMBEDDINGS_DATA_DIR).glob("*.parquet"))
        if not files:
            raise FileNotFoundError(
                f"--train_data {path} has {EMBEDDINGS_INFO_NAME} but no parquet chunks under {EMBEDDINGS_DATA_DIR}/."
            )
        dataset = load_data_files(files, split, cache_dir, argument="--train_data")
    else:
        dataset = load_training_dataset(name_or_path, split=split, cache_dir=cache_dir, argument="--train_data")
    return dataset, info


def _is_numeric_array(data_type) -> bool:
    """Whether an Arrow type is a (nested) list or tensor of numbers, as embeddings and masks are stored."""
    while True:
        if isinstance(data_type, pyarrow.ExtensionType):  # datasets' ArrayND
            data_type = data_type.storage_type
        elif pyarrow.types.is_list(data_type) or pyarrow.types.is_large_list(data_type):
            data_type = data_type.value_type
        elif pyarrow.types.is_fixed_size_list(data_type):
            data_type = data_type.value_type
        else:
            return pyarrow.types.is_floating(data_type) or pyarrow.types.is_integer(data_type)


def check_embedding_columns(dataset: datasets.Dataset, name: str) -> None:
    """Raise a `ValueError` naming the dataset and column when an embedding dataset has no rows or an embedding or
    mask column that does not hold arrays of numbers (e.g. text, or plain numbers)."""
    if len(dataset) == 0:
        raise ValueError(f"{name} has no rows.")
    schema = dataset.data.schema
    for column in ("target_image_embeds", "text_embeds", "reference_image_embeds", "mask", "reverse_text_embeds"):
        if column in schema.names and not _is_numeric_array(schema.field(column).type):
            raise ValueError(
                f"{name}: column {column!r} holds {schema.field(column).type}; expected arrays of numbers "
                "(the format training/precompute_embeddings.py writes)."
            )


def _row_tasks(dataset: datasets.Dataset) -> list[str]:
    if "task" in dataset.column_names:
        return list(dataset["task"])
    # Inferred from which conditions a row has; reading only the null pattern keeps this cheap.
    table = dataset.data
    has_reference = (
        table.column("reference_image_embeds").is_valid().to_pylist()
        if "reference_image_embeds" in dataset.column_names
        else [False] * len(dataset)
    )
    has_mask = (
        table.column("mask").is_valid().to_pylist() if "mask" in dataset.column_names else [False] * len(dataset)
    )
    if dataset._indices is not None:  # a selected/shuffled view
        order = dataset._indices.column("indices").to_pylist()
        has_reference, has_mask = [has_reference[i] for i in order], [has_mask[i] for i in order]
    return ["masked" if m else "triplet" if r else "t2i" for r, m in zip(has_reference, has_mask)]


@dataclass
class TaskPool:
    """The rows of one task in one dataset."""

    task: str
    dataset: datasets.Dataset
    indices: list[int]
    has_reverse: bool = False

    def rows(self, positions: list[int]) -> dict[str, np.ndarray | list]:
        return self.dataset[[self.indices[p] for p in positions]]


def build_task_pools(sources: list[datasets.Dataset], argument: str = "--train_data") -> dict[str, list[TaskPool]]:
    """Group the rows of every dataset by task and check that each task's rows have the columns it needs."""
    pools: dict[str, list[TaskPool]] = {task: [] for task in TASKS}
    for number, dataset in enumerate(sources):
        check_embedding_columns(dataset, f"{argument} #{number}")
        tasks = _row_tasks(dataset)
        unknown = sorted(set(tasks) - set(TASKS))
        if unknown:
            raise ValueError(f"{argument} #{number}: unknown task value(s) {unknown}; expected one of {list(TASKS)}.")
        for task in TASKS:
            indices = [i for i, t in enumerate(tasks) if t == task]
            if not indices:
                continue
            missing = [c for c in REQUIRED_COLUMNS[task] if c not in dataset.column_names]
            if missing:
                raise ValueError(
                    f"{argument} #{number} has {task!r} rows but no column(s) {missing}; its columns are "
                    f"{dataset.column_names}."
                )
            has_reverse = task == "triplet" and "reverse_text_embeds" in dataset.column_names
            pools[task].append(TaskPool(task, dataset.with_format("numpy"), indices, has_reverse))
    return pools


def _stack(values, dtype=torch.float32) -> torch.Tensor:
    if isinstance(values, np.ndarray) and values.dtype != object:
        return torch.from_numpy(np.ascontiguousarray(values)).to(dtype)
    return torch.stack(
        [torch.as_tensor(np.asarray(v.tolist() if hasattr(v, "tolist") else v), dtype=dtype) for v in values]
    )


@dataclass
class CompoDiffBatchSampler:
    """Deterministic multi-task batches for prior training, identical for any number of processes.

    Each optimizer step draws the whole global batch from a generator seeded by `(seed, step)`: the task of every
    slot (by `task_probabilities`), the triplet swaps, the classifier-free-guidance drops, the timesteps and the
    noise. Examples come from per-task (per-dataset) epoch permutations whose positions are part of the training
    state. Process `r` of `n` materialises slots `r * b : (r + 1) * b` only.

    Args:
        pools: `build_task_pools(...)`.
        task_probabilities: task -> probability (normalised; tasks without rows must have probability 0).
        embedding_dim, mask_size, num_train_timesteps: sizes of the prior.
        null_text_embeds (`torch.Tensor` `(L, T)`): the text condition of a dropped text (the encoded empty prompt,
            which is also what guidance uses at inference).
        seed, text_drop_probability, image_drop_probability, swap_probability: see training/README.md.
    """

    pools: dict[str, list[TaskPool]]
    task_probabilities: dict[str, float]
    embedding_dim: int
    mask_size: int
    num_train_timesteps: int
    null_text_embeds: torch.Tensor
    seed: int = 0
    text_drop_probability: float = 0.1
    image_drop_probability: float = 0.1
    swap_probability: float = 0.5
    positions: dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        total = sum(self.task_probabilities.values())
        if total <= 0:
            raise ValueError(f"The task mix {self.task_probabilities} has no positive probability.")
        self.tasks = [t for t in TASKS if self.task_probabilities.get(t, 0) > 0]
        for task in self.tasks:
            if not self.pools.get(task):
                raise ValueError(
                    f"The task mix gives {task!r} probability {self.task_probabilities[task]}, but the training data "
                    f"has no {task!r} rows (set its share to 0 or add such data)."
                )
        self.probabilities = torch.tensor(
            [self.task_probabilities[t] / total for t in self.tasks], dtype=torch.float64
        )
        sizes = {f"{task}/{n}": len(pool.indices) for task in self.tasks for n, pool in enumerate(self.pools[task])}
        self.streams = {
            key: IndexStream(size, seed=self.seed + 7919 * (i + 1), position=self.positions.get(key, 0))
            for i, (key, size) in enumerate(sorted(sizes.items()))
        }
        # Within a task, a dataset is chosen in proportion to its number of rows.
        self.pool_weights = {
            task: torch.tensor([len(p.indices) for p in self.pools[task]], dtype=torch.float64) for task in self.tasks
        }
        for name in ("text_drop_probability", "image_drop_probability", "swap_probability"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"`{name}` must be in [0, 1], got {value}.")

    def state(self) -> dict[str, int]:
        return {key: stream.position for key, stream in self.streams.items()}

    def batch(self, step: int, global_batch_size: int, rank: int, num_processes: int) -> dict[str, torch.Tensor]:
        """The batch of process `rank` for optimizer/micro step `step` (every process must call it for each step)."""
        if global_batch_size % num_processes:
            raise ValueError(f"The global batch {global_batch_size} is not divisible by {num_processes} processes.")
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        n = global_batch_size
        task_ids = torch.multinomial(self.probabilities, n, replacement=True, generator=generator)
        pool_choice = torch.rand(n, generator=generator, dtype=torch.float64)
        swap = torch.rand(n, generator=generator) < self.swap_probability
        drop_text = torch.rand(n, generator=generator) < self.text_drop_probability
        drop_image = torch.rand(n, generator=generator) < self.image_drop_probability
        timesteps = torch.randint(0, self.num_train_timesteps, (n,), generator=generator)
        noise = torch.randn(n, self.embedding_dim, generator=generator)

        # Every process advances every stream identically (slot order within a stream); only its own slots are read.
        numbers = torch.zeros(n, dtype=torch.long)
        for task_number, task in enumerate(self.tasks):
            chosen = task_ids == task_number
            cumulative = torch.cumsum(self.pool_weights[task], 0) / self.pool_weights[task].sum()
            numbers[chosen] = torch.searchsorted(cumulative, pool_choice[chosen], right=True).clamp(
                max=len(cumulative) - 1
            )
        positions = torch.empty(n, dtype=torch.long)
        for task_number, task in enumerate(self.tasks):
            for number in range(len(self.pools[task])):
                members = ((task_ids == task_number) & (numbers == number)).nonzero().flatten()
                if len(members):
                    positions[members] = torch.tensor(self.streams[f"{task}/{number}"].take(len(members)))
        slots = [
            (self.tasks[t], int(k), int(p)) for t, k, p in zip(task_ids.tolist(), numbers.tolist(), positions.tolist())
        ]
        per_rank = n // num_processes
        mine = range(rank * per_rank, (rank + 1) * per_rank)

        target = torch.empty(per_rank, self.embedding_dim)
        reference = torch.zeros(per_rank, self.embedding_dim)
        mask = torch.zeros(per_rank, self.mask_size, self.mask_size)
        text = None
        task_index = torch.empty(per_rank, dtype=torch.long)
        swapped = torch.zeros(per_rank, dtype=torch.bool)
        groups: dict[tuple[str, int], list[tuple[int, int]]] = {}
        for local, slot in enumerate(mine):
            task, number, position = slots[slot]
            groups.setdefault((task, number), []).append((local, position))
            task_index[local] = TASKS.index(task)
        for (task, number), members in groups.items():
            pool = self.pools[task][number]
            locals_ = [m[0] for m in members]
            rows = pool.rows([m[1] for m in members])
            text_embeds = _stack(rows["text_embeds"])
            if text is None:
                text = torch.empty(per_rank, *text_embeds.shape[1:])
            elif text_embeds.shape[1:] != text.shape[1:]:
                raise ValueError(
                    f"`text_embeds` of {task!r} rows have shape {tuple(text_embeds.shape[1:])}, others {tuple(text.shape[1:])}."
                )
            target_embeds = _stack(rows["target_image_embeds"])
            reference_embeds = _stack(rows["reference_image_embeds"]) if task != "t2i" else None
            if task == "masked":
                masks = _stack(rows["mask"])
                if masks.shape[1:] != (self.mask_size, self.mask_size):
                    raise ValueError(
                        f"`mask` rows have shape {tuple(masks.shape[1:])}; the prior's mask side is {self.mask_size}."
                    )
                mask[locals_] = (masks > 0.5).float()
            if task == "triplet" and pool.has_reverse and self.swap_probability > 0:
                reverse = rows["reverse_text_embeds"]
                for j, local in enumerate(locals_):
                    if swap[mine[local]] and reverse[j] is not None:
                        # The paper swaps reference and target at random; the text becomes the reverse modification.
                        target_embeds[j], reference_embeds[j] = reference_embeds[j].clone(), target_embeds[j].clone()
                        text_embeds[j] = _stack([reverse[j]])[0]
                        swapped[local] = True
            target[locals_] = target_embeds
            text[locals_] = text_embeds
            if reference_embeds is not None:
                reference[locals_] = reference_embeds
        if target.shape[1] != self.embedding_dim:
            raise ValueError(f"Image embeddings have size {target.shape[1]}; the prior's is {self.embedding_dim}.")

        # Classifier-free guidance: drop the text (-> the empty prompt's embedding) and the image (-> zeros); the mask
        # is never dropped.
        mine_drop_text, mine_drop_image = (
            drop_text[rank * per_rank : (rank + 1) * per_rank],
            drop_image[rank * per_rank : (rank + 1) * per_rank],
        )
        null_text = self.null_text_embeds.to(text.dtype)
        if null_text.shape != text.shape[1:]:
            raise ValueError(
                f"The null text embedding has shape {tuple(null_text.shape)}, the texts {tuple(text.shape[1:])}."
            )
        text[mine_drop_text] = null_text
        reference[mine_drop_image] = 0.0
        return {
            "target_image_embeds": target,
            "reference_image_embeds": reference,
            "text_embeds": text,
            "mask": mask,
            "timesteps": timesteps[rank * per_rank : (rank + 1) * per_rank],
            "noise": noise[rank * per_rank : (rank + 1) * per_rank],
            "task_index": task_index,
            "swapped": swapped,
            "text_dropped": mine_drop_text,
            "image_dropped": mine_drop_image,
        }


def load_null_text_embeds(path: str | os.PathLike) -> torch.Tensor:
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        path = path / NULL_TEXT_EMBEDS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"No null text embedding at {path}.")
    tensors = load_file(str(path))
    if "null_text_embeds" not in tensors:
        raise ValueError(f"{path} has no `null_text_embeds` tensor (it has {sorted(tensors)}).")
    embeds = tensors["null_text_embeds"].float()
    return embeds[0] if embeds.ndim == 3 else embeds
