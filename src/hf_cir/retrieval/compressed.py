# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""Compressed approximate search for large galleries: a faiss IVF-PQ shortlist, re-ranked exactly.

A [`CompressedIndex`] keeps only short product-quantisation codes in memory (tens of bytes per image instead of
1,536 for a float16 768-d embedding). A query visits `nprobe` inverted lists, takes the `rerank` best candidates by
their approximate scores, and re-scores those exactly from the index's stored embeddings (memory-mapped, see
`hf_cir.retrieval.storage`), so recall approaches exact search while memory stays at PQ size.

The index is chosen by [`plan_compressed_index`] from the gallery size and a memory budget, with faiss's
`index_factory` (Jégou et al., "Product quantization for nearest neighbor search", TPAMI 2011; André et al.,
"Quicker ADC", 2019, for the 4-bit fast-scan codes):

- `nlist` inverted lists with a flat coarse quantiser (`IVF{nlist}`): the power of two nearest to `4 * sqrt(N)`, at
  least 1 and at most `N / 39` (faiss's minimum of training points per centroid) and 1,024. The cap is measured:
  on the benchmark's 1M gallery the flat 1,024-list index built in 44 s against 644 s for `IVF4096_HNSW32` (the
  earlier rule) and reached recall@10 1.00 where the latter stopped at 0.87; at 10M the 4,096- and 8,192-list
  k-means would take about an hour on 2 cores. Beyond about 10M images the lists grow with `N / nlist` and so does
  the query time: pass a larger `nlist`.
- codes: `PQ{m}x4fs`, `m` 4-bit sub-quantisers (`m / 2` bytes) in faiss's SIMD fast-scan layout, plus the 8-byte
  id of each vector in its list; `m` is the largest divisor of the dimension among 16, 32, 48, 64, 96, 128, 192,
  256 whose codes and ids fit the budget (default budget: 1/16 of the float16 embeddings, plus the centroids).
- search: `nprobe = max(16, nlist // 64)` (16 up to 1,024 lists), and `rerank = 250 * k` candidates (at least 1,000,
  at most `max(k, 10,000)`) re-scored exactly: on clustered 768-d data the shortlist size, not `nprobe`, sets the
  recall (10M images, PQ128: recall@10 0.86 with 1,000 candidates, 0.96 with 2,500 at about 16 ms per query on 2
  cores). An index keeps the settings it was built with (its `faiss.json`): indexes built before these defaults
  re-rank `max(10 k, 100)` until `min_rerank` / `rerank_factor` there are raised.

`benchmarks/bench_index_scale.py` measures these choices (bytes per vector, build time, recall@10 against exact
search, ms per query). The index file is a plain faiss file (`faiss.read_index` opens it; `mmap=True` maps it), its
settings are in a JSON file beside it. Indexes built by several processes over disjoint rows (the same trained
quantiser, global row ids) are merged with [`merge_compressed_parts`] (faiss's `merge_from`).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..utils import atomic_file
from .search import _check_queries, import_faiss, top_k_lowest_index, write_faiss_index

__all__ = [
    "CompressedIndex",
    "CompressedIndexPlan",
    "merge_compressed_parts",
    "parse_memory_size",
    "plan_compressed_index",
]

COMPRESSED_KIND = "ivf-pq"
_SUBQUANTIZERS = (256, 192, 128, 96, 64, 48, 32, 16)
_ID_BYTES = 8
_MAX_LISTS = 1024
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "m": 1 << 20, "mb": 1 << 20, "g": 1 << 30, "gb": 1 << 30}
_UNITS.update({"t": 1 << 40, "tb": 1 << 40, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40})


def parse_memory_size(text: str | int) -> int:
    """Bytes of a size such as `"4GB"`, `"512MiB"`, `"2g"` or `1000000` (units are powers of 1024).

    Example:

    ```python
    >>> from hf_cir.retrieval.compressed import parse_memory_size
    >>> parse_memory_size("1.5GB"), parse_memory_size(4096)
    (1610612736, 4096)

    ```
    """
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
        if not match or match.group(2).lower() not in _UNITS:
            raise ValueError(f"`memory_budget`: {text!r} is not a size (e.g. 512MB, 4GB, 1.5TB).")
        value = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if value <= 0:
        raise ValueError(f"`memory_budget` must be positive, got {text!r}.")
    return value


@dataclass
class CompressedIndexPlan:
    """The faiss index chosen for a gallery (see the module docstring for the rules)."""

    factory: str
    nlist: int
    m: int
    nprobe: int
    rerank_factor: int
    min_rerank: int
    train_size: int
    bytes_per_vector: float
    memory_bytes: int
    max_rerank: int = 10_000

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_compressed_index(
    num_vectors: int,
    dim: int,
    memory_budget: int | str | None = None,
    m: int | None = None,
    nlist: int | None = None,
) -> CompressedIndexPlan:
    """Choose the IVF-PQ index of `num_vectors` `dim`-d embeddings that fits `memory_budget`.

    Args:
        num_vectors: Gallery size.
        dim: Embedding size.
        memory_budget: Bytes (or a size string) the index may take in memory; default 1/16 of the float16
            embeddings (`num_vectors * dim / 8` bytes) plus the centroids.
        m: Force the number of sub-quantisers.
        nlist: Force the number of inverted lists (e.g. more than 1,024 for a gallery far beyond 10M images).

    Example:

    ```python
    >>> from hf_cir.retrieval.compressed import plan_compressed_index
    >>> plan = plan_compressed_index(10_000_000, 768, "1GB")
    >>> plan.factory, plan.bytes_per_vector
    ('IVF1024,PQ192x4fs', 104.0)

    ```
    """
    if num_vectors < 1 or dim < 1:
        raise ValueError(f"A compressed index needs at least one vector and dimension, got {num_vectors}x{dim}.")
    if nlist is None:
        nlist = 2 ** round(math.log2(max(1.0, 4 * math.sqrt(num_vectors))))
        nlist = int(max(1, min(nlist, num_vectors // 39, _MAX_LISTS)))
    elif isinstance(nlist, bool) or not isinstance(nlist, int) or not 1 <= nlist <= num_vectors:
        raise ValueError(f"`nlist` must be an integer in [1, {num_vectors}] (the gallery size), got {nlist!r}.")
    quantizer = f"IVF{nlist}"
    fixed = nlist * dim * 4  # the centroids
    budget = parse_memory_size(memory_budget) if memory_budget is not None else fixed + num_vectors * dim // 8
    per_vector = (budget - fixed) / num_vectors - _ID_BYTES
    candidates = [m] if m is not None else [c for c in _SUBQUANTIZERS if dim % c == 0]
    if m is not None and dim % m:
        raise ValueError(f"`m` ({m}) must divide the embedding size ({dim}).")
    fitting = [c for c in candidates if c / 2 <= per_vector or (memory_budget is None and m is not None)]
    if memory_budget is None and not fitting and candidates:
        fitting = [min(candidates)]  # a small gallery: the centroids alone exceed 1/16 of its embeddings
    if not fitting:
        smallest = min(candidates) if candidates else None
        if smallest is None:
            raise ValueError(f"No sub-quantiser count in {_SUBQUANTIZERS} divides the embedding size {dim}.")
        need = fixed + num_vectors * (smallest / 2 + _ID_BYTES)
        raise ValueError(
            f"`memory_budget`: {budget} bytes cannot hold {num_vectors} compressed vectors; the smallest index "
            f"(PQ{smallest}) needs about {need} bytes."
        )
    chosen = max(fitting)
    train_size = int(min(num_vectors, max(40 * nlist, 65_536), 500_000))
    return CompressedIndexPlan(
        factory=f"{quantizer},PQ{chosen}x4fs",
        nlist=nlist,
        m=chosen,
        nprobe=min(nlist, max(16, nlist // 64)),
        rerank_factor=250,
        min_rerank=1000,
        train_size=train_size,
        bytes_per_vector=chosen / 2 + _ID_BYTES,
        memory_bytes=int(fixed + num_vectors * (chosen / 2 + _ID_BYTES)),
    )


def train_compressed_index(sample: np.ndarray, plan: CompressedIndexPlan, seed: int = 0):
    """An empty faiss index of `plan`, trained on `sample` (`[n, D]` float32, L2-normalised rows)."""
    faiss = import_faiss()
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    index = faiss.index_factory(sample.shape[1], plan.factory, faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.extract_index_ivf(index)
    ivf.cp.seed = seed
    ivf.cp.niter = 10
    ivf.cp.max_points_per_centroid = max(39, math.ceil(len(sample) / max(1, plan.nlist)))
    index.train(sample)
    ivf.nprobe = plan.nprobe
    return index


def _to_gpu(index):
    """The index on every GPU faiss sees (searches there), or the index itself (CPU faiss, unsupported kinds)."""
    faiss = import_faiss()
    if not hasattr(faiss, "index_cpu_to_all_gpus") or faiss.get_num_gpus() == 0:
        return index
    try:
        return faiss.index_cpu_to_all_gpus(index)
    except RuntimeError:  # e.g. fast-scan codes have no GPU implementation: search on the CPU
        return index


class CompressedIndex:
    """An IVF-PQ faiss index over a gallery's rows, re-ranked exactly from the stored embeddings.

    Args:
        index: A trained, filled faiss index whose ids are the gallery row numbers.
        settings: `nprobe`, `rerank_factor`, `min_rerank`, `factory` (what [`plan_compressed_index`] chose).
        embeddings: The stored embeddings (anything with `rows(indices) -> [n, D]` float32 tensor, e.g. a
            `ShardedEmbeddings`), used to re-rank; `None` returns the approximate scores.
        use_gpu: Search on the GPUs faiss sees (default: when there are any).

    Example:

    ```python
    >>> import torch
    >>> from hf_cir.retrieval.compressed import CompressedIndex, plan_compressed_index
    >>> gallery = torch.nn.functional.normalize(torch.randn(5000, 64), dim=-1)
    >>> index = CompressedIndex.build(gallery, plan_compressed_index(5000, 64, m=32))
    >>> index.embeddings = type("Rows", (), {"rows": lambda self, i: gallery[torch.as_tensor(i)]})()
    >>> scores, ids = index.search(gallery[:3], k=5)
    >>> ids[:, 0].tolist()
    [0, 1, 2]

    ```
    """

    def __init__(self, index, settings: dict[str, Any], embeddings=None, use_gpu: bool | None = None):
        self.index = index
        self.settings = dict(settings)
        self.embeddings = embeddings
        self._search_index = _to_gpu(index) if use_gpu is not False else index
        if "nprobe" in self.settings:
            self.nprobe = int(self.settings["nprobe"])

    @classmethod
    def build(cls, embeddings: torch.Tensor | np.ndarray, plan: CompressedIndexPlan, seed: int = 0, **kwargs):
        """Train on a seeded sample of `plan.train_size` rows and add every row (ids = row numbers)."""
        vectors = np.ascontiguousarray(torch.as_tensor(embeddings).float().numpy())
        rng = np.random.default_rng(seed)
        sample = np.sort(rng.choice(len(vectors), min(plan.train_size, len(vectors)), replace=False))
        index = train_compressed_index(vectors[sample], plan, seed)
        index.add_with_ids(vectors, np.arange(len(vectors), dtype=np.int64))
        return cls(index, plan.to_dict(), **kwargs)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def __len__(self) -> int:
        return self.ntotal

    @property
    def nprobe(self) -> int:
        return int(import_faiss().extract_index_ivf(self.index).nprobe)

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        faiss = import_faiss()
        ivf = faiss.extract_index_ivf(self.index)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= ivf.nlist:
            raise ValueError(f"`nprobe` must be an integer in [1, {ivf.nlist}], got {value!r}.")
        ivf.nprobe = value
        if self._search_index is not self.index:
            faiss.GpuParameterSpace().set_index_parameter(self._search_index, "nprobe", value)
        self.settings["nprobe"] = value

    def shortlist_size(self, k: int, rerank: int | None = None) -> int:
        """Candidates re-ranked for `k` results: `rerank`, or `max(rerank_factor * k, min_rerank)` capped at
        `max(k, max_rerank)` (so a large `k` does not read hundreds of thousands of rows per query)."""
        if rerank is None:
            rerank = max(self.settings.get("rerank_factor", 10) * k, self.settings.get("min_rerank", 100))
            rerank = min(rerank, max(k, self.settings.get("max_rerank", 10_000)))
        return int(min(max(rerank, k), self.ntotal))

    def search(self, queries: torch.Tensor, k: int = 10, rerank: int | None = None):
        """Scores and row indices `[B, k]` of the best rows for L2-normalised `queries` `[B, D]`, best first.

        The `rerank` best approximate candidates (default: [`shortlist_size`]) are re-scored exactly from the stored
        embeddings; missing slots (fewer candidates than `k`) hold index -1 and score `-inf`.
        """
        queries = _check_queries(queries, int(self.index.d), k, self.ntotal).float()
        shortlist = self.shortlist_size(k, rerank)
        scores, ids = self._search_index.search(np.ascontiguousarray(queries.numpy()), shortlist)
        scores, ids = torch.from_numpy(scores), torch.from_numpy(ids).long()
        missing = ids < 0
        if self.embeddings is not None:
            safe = torch.where(missing, 0, ids)
            rows = self.embeddings.rows(safe.numpy().reshape(-1)).reshape(*safe.shape, -1)
            scores = torch.bmm(rows, queries[:, :, None])[..., 0]
        scores = scores.masked_fill(missing, -math.inf)
        keys = torch.where(missing, torch.iinfo(torch.int64).max, ids)
        values, chosen = top_k_lowest_index(scores, min(k, shortlist), keys)
        chosen = torch.where(torch.isinf(values), -1, chosen)
        return values, chosen

    def save(self, path: str | os.PathLike) -> None:
        """`faiss.write_index` to `path` and the settings to `path` with suffix `.json`, each atomically."""
        path = Path(path)
        write_faiss_index(self.index, path)
        with atomic_file(path.with_suffix(".json"), "w") as handle:
            json.dump({"kind": COMPRESSED_KIND, "ntotal": self.ntotal, **self.settings}, handle, indent=1)

    @classmethod
    def load(
        cls, path: str | os.PathLike, embeddings=None, mmap: bool = True, use_gpu: bool | None = None, check=None
    ):
        """Open an index written by [`save`] (memory-mapped by default: the codes stay on disk until used).

        `check(faiss_index)` runs on the file as read, before its settings are applied (e.g. that it was built for
        the dimension of `embeddings`)."""
        faiss = import_faiss()
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Compressed index file {path} does not exist.")
        try:
            settings = json.loads(path.with_suffix(".json").read_text())
        except (OSError, ValueError) as error:
            raise ValueError(f"{path.with_suffix('.json')} is missing or corrupt ({error}).") from error
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
        try:
            index = faiss.read_index(str(path), flags)
        except RuntimeError as error:
            raise ValueError(f"{path} is corrupt: faiss cannot read it ({error}).") from error
        if not isinstance(settings, dict) or int(settings.get("ntotal", index.ntotal)) != index.ntotal:
            raise ValueError(
                f"{path} holds {index.ntotal} vectors but its settings say otherwise ({settings!r:.200})."
            )
        if check is not None:
            check(index)
        if embeddings is not None and int(index.d) != getattr(embeddings, "dim", index.d):
            raise ValueError(
                f"{path} was built for {int(index.d)}-d vectors, its embeddings are {embeddings.dim}-d (dimension "
                "mismatch)."
            )
        return cls(index, settings, embeddings, use_gpu=use_gpu)


def add_rows(index, blocks) -> None:
    """Add `(first row, [n, D] array)` blocks to a trained faiss index, with their global row numbers as ids."""
    for start, block in blocks:
        if len(block):
            vectors = np.ascontiguousarray(block, dtype=np.float32)
            index.add_with_ids(vectors, np.arange(start, start + len(block), dtype=np.int64))


def merge_compressed_parts(parts: list) -> Any:
    """One faiss index holding every part's vectors (parts share one trained quantiser; ids are kept).

    Each part is a faiss index or the path of one; the first part receives the others (`merge_from`).
    """
    faiss = import_faiss()
    opened = [faiss.read_index(str(p)) if isinstance(p, (str, os.PathLike)) else p for p in parts]
    if not opened:
        raise ValueError("No index parts to merge.")
    merged = opened[0]
    target = faiss.extract_index_ivf(merged)
    for part in opened[1:]:
        target.merge_from(faiss.extract_index_ivf(part), 0)
    return merged
