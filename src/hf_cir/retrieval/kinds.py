# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""Index kinds: the one table of the approximate indexes an hf-cir index may carry beside its exact embeddings.

Each [`IndexKind`] says how to build its file from a finished index folder, how to load it (checked against the
index it belongs to), and how many bytes of memory a vector takes; the CLI's `--faiss` choices and help are made
from this table ([`index_kind_choices`], [`index_kind_help`]). A new kind is one [`register_index_kind`] call.

`"auto"` is not a kind: [`resolve_index_kind`] turns it into exact search (no file) up to `AUTO_EXACT_LIMIT`
images and the compressed `"ivf-pq"` above.

Nothing here imports torch or faiss at import time (`hf-cir --help` reads the choices).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "AUTO",
    "AUTO_EXACT_LIMIT",
    "INDEX_KINDS",
    "IndexKind",
    "check_index_kind_options",
    "index_kind_choices",
    "index_kind_help",
    "register_index_kind",
    "resolve_index_kind",
]

AUTO = "auto"
AUTO_EXACT_LIMIT = 100_000
FILE_NAME = "faiss.index"


@dataclass(frozen=True)
class IndexKind:
    """One kind of approximate index.

    Args:
        name: The name (`--faiss NAME`, `manifest["faiss"]["kind"]`).
        help: One phrase for `--help`.
        build: `(embeddings, folder, group, memory_budget, options) -> manifest entry`: write the kind's file into
            `folder` from `embeddings` (a `ShardedEmbeddings`); every process of `group` calls it.
        load: `(path, embeddings) -> searcher` whose `search(queries, k)` returns `(scores, rows)`.
        bytes_per_vector: `(dim, options) -> bytes` of memory per indexed vector.
        uses_memory_budget: Whether `memory_budget` means anything to this kind.
    """

    name: str
    help: str
    build: Callable[..., dict[str, Any]]
    load: Callable[..., Any]
    bytes_per_vector: Callable[[int, dict], float]
    uses_memory_budget: bool = False


INDEX_KINDS: dict[str, IndexKind] = {}


def register_index_kind(kind: IndexKind) -> IndexKind:
    if kind.name in INDEX_KINDS or kind.name == AUTO:
        raise ValueError(f"Index kind {kind.name!r} is already registered.")
    INDEX_KINDS[kind.name] = kind
    return kind


def index_kind_choices() -> list[str]:
    """The `--faiss` choices: every kind, then `"auto"`."""
    return [*INDEX_KINDS, AUTO]


def index_kind_help() -> str:
    kinds = "; ".join(f"{kind.name}: {kind.help}" for kind in INDEX_KINDS.values())
    auto = f"{AUTO}: exact search up to {AUTO_EXACT_LIMIT:,} images, else ivf-pq"
    return f"also build an approximate index ({kinds}; {auto})"


def check_index_kind_options(
    name: str | None,
    memory_budget: Any = None,
    kind_argument: str = "`faiss`",
    budget_argument: str = "`memory_budget`",
) -> None:
    """Refuse an unknown kind, and a `memory_budget` that the chosen kind would ignore (the messages call the two
    arguments `kind_argument` and `budget_argument`, e.g. `--faiss` and `--memory-budget` in the CLI)."""
    if name is not None and name not in index_kind_choices():
        raise ValueError(
            f"{kind_argument}: unknown index kind {name!r}; expected one of {', '.join(index_kind_choices())}."
        )
    if memory_budget is None:
        return
    budgeted = [kind.name for kind in INDEX_KINDS.values() if kind.uses_memory_budget]
    if name is None or (name != AUTO and not INDEX_KINDS[name].uses_memory_budget):
        target = "exact search (no approximate index)" if name is None else f"{kind_argument} {name}"
        raise ValueError(
            f"{budget_argument} sizes a compressed index ({kind_argument} {' or '.join([*budgeted, AUTO])}); it does "
            f"not apply to {target}: leave it out, or choose {kind_argument} {budgeted[0]}."
        )


def resolve_index_kind(name: str | None, count: int) -> IndexKind | None:
    """The kind to build for `count` images (`"auto"` decides by size; `None`: exact search only)."""
    if name == AUTO:
        name = "ivf-pq" if count > AUTO_EXACT_LIMIT else None
    return INDEX_KINDS[name] if name is not None else None


def _check_loaded(path: Path, index, embeddings) -> None:
    """A faiss file must fit the index it sits in: same dimension, one vector per stored row."""
    if int(index.d) != embeddings.dim or int(index.ntotal) != len(embeddings):
        raise ValueError(
            f"`index`: {path} does not belong to this index: it was built for {int(index.ntotal)} vectors of "
            f"{int(index.d)} dimensions, the index holds {len(embeddings)} of {embeddings.dim} (dimension or size "
            "mismatch); rebuild it with `hf-cir index --overwrite`."
        )


# -- flat, ivf, hnsw: faiss's own indexes, built in RAM by the main process -------------------------------------------


def _build_in_ram(kind: str):
    def build(embeddings, folder: Path, group, memory_budget=None, options=None) -> dict[str, Any]:
        from .search import FaissIndex

        if group.is_main:
            FaissIndex(embeddings.to_tensor(), kind=kind, **(options or {})).save(Path(folder) / FILE_NAME)
        return {"kind": kind, "file": FILE_NAME}

    return build


def _load_faiss(path: Path, embeddings):
    from .search import FaissIndex

    loaded = FaissIndex.load(path)
    _check_loaded(path, loaded.index, embeddings)
    return loaded


for _name, _help, _bytes in (
    ("flat", "exact, in RAM", lambda dim, options: 4 * dim),
    ("ivf", "inverted lists of full vectors", lambda dim, options: 4 * dim + 8),
    ("hnsw", "graph of full vectors", lambda dim, options: 4 * dim + 8 * options.get("m", 32)),
):
    register_index_kind(IndexKind(_name, _help, _build_in_ram(_name), _load_faiss, _bytes))


# -- ivf-pq: compressed codes, filled by every process, re-ranked exactly ----------------------------------------------


def _build_compressed(embeddings, folder: Path, group, memory_budget=None, options=None, seed: int = 0):
    import faiss
    import numpy as np

    from .compressed import (
        CompressedIndex,
        add_rows,
        merge_compressed_parts,
        plan_compressed_index,
        train_compressed_index,
    )
    from .search import write_faiss_index

    folder = Path(folder)
    count = len(embeddings)
    plan = plan_compressed_index(count, embeddings.dim, memory_budget, **(options or {}))
    trained = folder / "faiss.trained.index"
    if group.is_main:
        rng = np.random.default_rng(seed)
        sample = np.sort(rng.choice(count, min(plan.train_size, count), replace=False))
        write_faiss_index(train_compressed_index(embeddings.rows(sample).numpy(), plan, seed), trained)
    group.barrier()
    part = faiss.read_index(str(trained))
    shards = range(len(embeddings.shards))
    add_rows(part, ((int(embeddings.offsets[u]), embeddings.shards[u]) for u in shards if group.owns(u)))
    write_faiss_index(part, folder / f"faiss.part-{group.rank:05d}.index")
    group.barrier()
    if group.is_main:
        parts = [folder / f"faiss.part-{rank:05d}.index" for rank in range(group.world_size)]
        CompressedIndex(merge_compressed_parts(parts), plan.to_dict(), use_gpu=False).save(folder / FILE_NAME)
        for path in [trained, *parts]:
            path.unlink()
    return {"kind": "ivf-pq", "file": FILE_NAME, "factory": plan.factory}


def _load_compressed(path: Path, embeddings):
    from .compressed import CompressedIndex

    return CompressedIndex.load(path, embeddings, check=lambda index: _check_loaded(path, index, embeddings))


def _compressed_bytes(dim: int, options: dict) -> float:
    from .compressed import plan_compressed_index

    count = options.get("count", 1_000_000)
    return plan_compressed_index(count, dim, options.get("memory_budget"), options.get("m")).bytes_per_vector


register_index_kind(
    IndexKind(
        "ivf-pq",
        "compressed product-quantisation codes re-ranked exactly (sized by --memory-budget)",
        _build_compressed,
        _load_compressed,
        _compressed_bytes,
        uses_memory_budget=True,
    )
)
