# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""Nearest-neighbour search over embedding galleries: an exact torch scan and optional faiss indexes.

Both index classes answer the same call, `search(queries[B, D], k) -> (scores[B, k], indices[B, k])`, rank by inner
product (cosine similarity when the embeddings and queries are L2-normalised) and break ties the same way: the lower
gallery index first. An exact search and a faiss flat search over the same embeddings therefore return the same
top-k, ties included.

- [`ExactIndex`] scans the gallery in row chunks with torch: each chunk's scores are reduced to a top-k at once, so a
  `[N, B]` score matrix is never materialised. Embeddings are stored in float32 or float16 (half the bytes, so about
  half the scan time of this memory-bound loop); float16 candidates are re-scored in float32.
- [`FaissIndex`] wraps a faiss flat, IVF or HNSW inner-product index (`pip install hf-cir[faiss]`).
"""

from __future__ import annotations

import json
import math
import os
import struct
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..utils import atomic_file

__all__ = ["ExactIndex", "FaissIndex", "import_faiss", "is_faiss_available", "top_k_lowest_index"]

_FAISS_MAGIC = b"HFCIRFAISS1\n"
_FORMAT_VERSION = 1

_SUPPORTED_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}

# Below this many queries a CPU float32 scan is bound by memory bandwidth, and torch's single-threaded matrix-vector
# kernel leaves the other cores idle: the chunks are then spread over a thread pool (torch releases the GIL).
_THREADED_MAX_QUERIES = 4
# Chunks are as large as a score block of this many bytes allows: each chunk is one matrix product, and every call
# of a parallel kernel costs a synchronisation of the thread team (milliseconds on a machine busy with other work).
_SCORE_BLOCK_BYTES = 16 << 20
# A low-precision chunk converted to float32 (for a batch of queries on CPU) stays below this many bytes.
_CONVERT_BLOCK_BYTES = 64 << 20


def top_k_lowest_index(scores: torch.Tensor, k: int, indices: torch.Tensor | None = None):
    """The `k` highest scores of each row, best first; equal scores keep the lower index first.

    `torch.topk` picks arbitrarily among equal values; this makes the choice deterministic and identical to faiss'
    (which keeps the lowest ids among equal scores).

    Args:
        scores (`torch.Tensor` of shape `(batch_size, n)`): the scores to rank.
        k (`int`): how many to keep (at most `n`).
        indices (`torch.Tensor` of shape `(batch_size, n)`, *optional*): the global index of each score; defaults
            to the column positions.

    Returns:
        `tuple(torch.Tensor, torch.Tensor)`: scores and indices of shape `(batch_size, k)`.

    Example:

    ```python
    >>> import torch
    >>> from hf_cir.retrieval.search import top_k_lowest_index
    >>> top_k_lowest_index(torch.tensor([[0.5, 0.9, 0.9, 0.1, 0.9]]), 2)
    (tensor([[0.9000, 0.9000]]), tensor([[1, 2]]))

    ```
    """
    n = scores.shape[1]
    k = min(k, n)
    if indices is not None:
        # Few candidates (the merge step): a full two-key sort is cheap and exact.
        by_index = torch.sort(indices, dim=1, stable=True)
        sorted_scores = scores.gather(1, by_index.indices)
        order = torch.sort(sorted_scores, dim=1, descending=True, stable=True).indices[:, :k]
        return sorted_scores.gather(1, order), by_index.values.gather(1, order)
    values, positions = torch.topk(scores, k, dim=1)
    kth = values[:, -1:]
    # Rows where more values equal the k-th than topk kept: choose the lowest positions among them.
    ambiguous = (scores == kth).sum(1) > (values == kth).sum(1)
    if bool(ambiguous.any()):
        for row in ambiguous.nonzero().flatten().tolist():
            above = (scores[row] > kth[row]).nonzero().flatten()
            tied = (scores[row] == kth[row]).nonzero().flatten()[: k - above.numel()]
            positions[row] = torch.cat([above, tied])
            values[row] = scores[row, positions[row]]
    # Best first, ties by position.
    positions, by_position = torch.sort(positions, dim=1)
    values = values.gather(1, by_position)
    order = torch.sort(values, dim=1, descending=True, stable=True).indices
    return values.gather(1, order), positions.gather(1, order)


def _as_tensor(array: Any, name: str) -> torch.Tensor:
    if isinstance(array, np.ndarray):
        array = torch.from_numpy(array)
    if not isinstance(array, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor or numpy array, got {type(array).__name__}.")
    return array


def _check_embeddings(embeddings: Any) -> torch.Tensor:
    embeddings = _as_tensor(embeddings, "embeddings")
    if embeddings.ndim != 2:
        raise ValueError(f"`embeddings` must have shape [N, D], got shape {tuple(embeddings.shape)}.")
    if embeddings.shape[0] == 0 or embeddings.shape[1] == 0:
        raise ValueError(f"`embeddings` must hold at least one non-empty row, got shape {tuple(embeddings.shape)}.")
    if not embeddings.is_floating_point():
        raise ValueError(f"`embeddings` must be floating point, got {embeddings.dtype}.")
    if not bool(torch.isfinite(embeddings).all()):
        raise ValueError("`embeddings` contains NaN or infinite values.")
    return embeddings


def _check_queries(queries: Any, dim: int, k: int, ntotal: int) -> torch.Tensor:
    queries = _as_tensor(queries, "queries")
    if queries.ndim == 1:
        queries = queries.unsqueeze(0)
    if queries.ndim != 2 or queries.shape[0] == 0:
        raise ValueError(f"`queries` must have shape [B, D] with B >= 1, got shape {tuple(queries.shape)}.")
    if queries.shape[1] != dim:
        raise ValueError(
            f"`queries` have dimension {queries.shape[1]}, but the index holds {dim}-dimensional embeddings: "
            "embed the queries with the model that built the index."
        )
    if not queries.is_floating_point():
        raise ValueError(f"`queries` must be floating point, got {queries.dtype}.")
    if not bool(torch.isfinite(queries).all()):
        raise ValueError("`queries` contains NaN or infinite values.")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"`k` must be a positive integer, got {k!r}.")
    if k > ntotal:
        raise ValueError(f"`k` ({k}) is larger than the number of indexed embeddings ({ntotal}).")
    return queries


class ExactIndex:
    r"""Exact inner-product search over a gallery of embeddings, with torch, on any device.

    The scan reads the gallery once per call in row chunks, reducing each chunk's `[B, chunk]` scores to a top-k at
    once; the candidates are merged at the end. Ties go to the lower index (as in faiss). Float16 storage halves the
    memory and the bytes read; its candidates (a few more than `k` per chunk) are re-scored in float32 from the
    stored values, so returned scores are float32 inner products of the float16-stored embeddings.

    Args:
        embeddings (`torch.Tensor` of shape `(num_embeddings, dim)`): the gallery, usually L2-normalised so that
            inner products are cosine similarities. Kept on its device.
        dtype (`torch.dtype`, *optional*, defaults to `torch.float32`): storage type: `torch.float32`,
            `torch.float16` or `torch.bfloat16`.
        chunk_size (`int`, *optional*): rows scored at a time. By default as many as a 16 MiB block of `B x rows`
            float32 scores holds (the whole gallery for one query up to 4M rows: a few large products cost less
            than many small ones); a 256 MiB block on an accelerator.

    Example:

    ```python
    >>> import torch
    >>> from hf_cir.retrieval.search import ExactIndex
    >>> gallery = torch.nn.functional.normalize(torch.randn(1000, 64), dim=-1)
    >>> index = ExactIndex(gallery)
    >>> scores, indices = index.search(gallery[[3, 7]], k=5)
    >>> indices[:, 0].tolist()
    [3, 7]

    ```
    """

    def __init__(
        self, embeddings: torch.Tensor, dtype: torch.dtype = torch.float32, chunk_size: int | None = None
    ) -> None:
        if dtype not in _SUPPORTED_DTYPES:
            raise ValueError(
                f"`dtype` must be one of {', '.join(map(str, _SUPPORTED_DTYPES))} for an ExactIndex, got {dtype}."
            )
        if chunk_size is not None and (
            isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
        ):
            raise ValueError(f"`chunk_size` must be a positive integer or None, got {chunk_size!r}.")
        embeddings = _check_embeddings(embeddings)
        self.embeddings = embeddings.detach().to(dtype=dtype).contiguous()
        self.chunk_size = chunk_size
        self._pool: ThreadPoolExecutor | None = None  # made on the first threaded scan; see `close`
        self._pool_workers = 0
        self._pool_lock = threading.Lock()

    def _thread_pool(self, workers: int) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None or self._pool_workers != workers:
                self.close()
                self._pool_workers = workers
                self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hf-cir-search")
                # The threads end with the index, also when it is dropped without `close()`.
                weakref.finalize(self, self._pool.shutdown, wait=False)
            return self._pool

    def close(self) -> None:
        """Stop the scan's worker threads (they are made again if the index searches later)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> ExactIndex:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def ntotal(self) -> int:
        """Number of indexed embeddings."""
        return self.embeddings.shape[0]

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return self.embeddings.shape[1]

    @property
    def dtype(self) -> torch.dtype:
        """Storage dtype."""
        return self.embeddings.dtype

    @property
    def device(self) -> torch.device:
        """Device the embeddings (and the scan) live on."""
        return self.embeddings.device

    def __len__(self) -> int:
        return self.ntotal

    def __repr__(self) -> str:
        return f"ExactIndex(ntotal={self.ntotal}, dim={self.dim}, dtype={self.dtype}, device={self.device})"

    def _chunks(self, threads: int, batch: int, convert: bool) -> list[tuple[int, int]]:
        n = self.ntotal
        rows = self.chunk_size
        if rows is None:
            budget = _SCORE_BLOCK_BYTES if self.device.type == "cpu" else 16 * _SCORE_BLOCK_BYTES
            rows = max(1, budget // (4 * max(batch, 1)))
            if convert:
                rows = min(rows, max(1, _CONVERT_BLOCK_BYTES // (4 * self.dim)))
        count = max(1, math.ceil(n / rows))
        count = math.ceil(count / threads) * threads if count > 1 or threads > 1 else count
        count = min(count, n)
        rows = math.ceil(n / count)
        return [(start, min(start + rows, n)) for start in range(0, n, rows)]

    @torch.no_grad()
    def search(self, queries: torch.Tensor, k: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
        """The `k` gallery embeddings with the highest inner product with each query, best first.

        Args:
            queries (`torch.Tensor` of shape `(batch_size, dim)` or `(dim,)`): query embeddings (any float dtype
                and device; they are moved to the index's device).
            k (`int`, *optional*, defaults to 10): results per query, at most `ntotal`.

        Returns:
            `tuple(torch.Tensor, torch.Tensor)`: float32 scores and int64 indices of shape `(batch_size, k)`, on the
            index's device.
        """
        queries = _check_queries(queries, self.dim, k, self.ntotal)
        queries = queries.detach().to(device=self.device, dtype=torch.float32)
        low_precision = self.dtype != torch.float32
        on_cpu = self.device.type == "cpu"
        batch = queries.shape[0]
        # Low-precision scores can misorder near-ties: keep a margin of candidates and re-score them in float32.
        # On CPU, torch's half-precision matrix-vector kernel is fast (parallel, memory-bound) but its matrix-matrix
        # kernel is not: a batch of queries converts each chunk to float32 instead (exact scores).
        native_low = low_precision and (not on_cpu or batch == 1)
        per_chunk = min(2 * k + 16, self.ntotal) if native_low else k
        query_operand = queries.to(self.dtype) if native_low else queries
        threads = torch.get_num_threads() if on_cpu and not low_precision and batch <= _THREADED_MAX_QUERIES else 1

        def scan(bounds: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
            start, end = bounds
            chunk = self.embeddings[start:end]
            if low_precision and not native_low:
                chunk = chunk.float()
            scores = torch.mm(query_operand, chunk.T)
            values, positions = top_k_lowest_index(scores, per_chunk)
            return values.float(), positions + start

        chunks = self._chunks(threads, batch, convert=low_precision and not native_low)
        if threads > 1 and len(chunks) > 1:
            parts = list(self._thread_pool(threads).map(scan, chunks))
        else:
            parts = [scan(bounds) for bounds in chunks]
        values = torch.cat([part[0] for part in parts], dim=1)
        indices = torch.cat([part[1] for part in parts], dim=1)
        if native_low:
            candidates = self.embeddings[indices].float()  # [B, C, D]
            values = torch.bmm(candidates, queries.unsqueeze(-1)).squeeze(-1)
        if len(parts) == 1 and not native_low:
            return values, indices
        return top_k_lowest_index(values, k, indices)


def write_faiss_index(index, path: str | os.PathLike) -> None:
    """`faiss.write_index` streamed through [`atomic_file`]: never half-written, and a full disk is named as such."""
    faiss = import_faiss()
    with atomic_file(path, "wb") as handle:
        writer = faiss.PyCallbackIOWriter(handle.write)
        faiss.write_index(index, writer)
        del writer  # flushes what faiss buffered into `handle`


def is_faiss_available() -> bool:
    """Whether faiss can be imported (the `faiss` extra: `pip install hf-cir[faiss]`)."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def import_faiss():
    """The `faiss` module, or an `ImportError` that says how to install it (every faiss index of hf-cir imports it
    here: `FaissIndex`, the compressed indexes of `hf_cir.retrieval.compressed`)."""
    try:
        import faiss
    except ImportError as error:
        raise ImportError(
            "Faiss indexes need faiss: `pip install hf-cir[faiss]` (or `hf-cir[scale]`, or `pip install faiss-cpu`); "
            "exact search needs no extra dependency."
        ) from error
    return faiss


class FaissIndex:
    r"""Inner-product search through a faiss index: `"flat"` (exact), `"ivf"` or `"hnsw"` (approximate).

    Results follow [`ExactIndex`]'s conventions: float32 scores, int64 indices, best first, equal scores with the lower
    index first (a flat index returns exactly the top-k of an [`ExactIndex`] over the same float32 embeddings, up to
    float rounding of the scores). Approximate indexes may return fewer than `k` hits for a query; missing slots hold
    index -1 and score `-inf`.

    Args:
        embeddings (`torch.Tensor` of shape `(num_embeddings, dim)`): the gallery (stored as float32).
        kind (`str`, *optional*, defaults to `"flat"`): `"flat"`, `"ivf"` (inverted lists, `IndexIVFFlat`) or
            `"hnsw"` (graph, `IndexHNSWFlat`).
        nlist (`int`, *optional*): IVF lists; defaults to about `sqrt(num_embeddings)`.
        nprobe (`int`, *optional*): IVF lists visited per query; defaults to `max(1, nlist // 4)`.
        train_size (`int`, *optional*): IVF k-means training sample; defaults to `min(num_embeddings, 64 * nlist)`.
        m (`int`, *optional*, defaults to 32): HNSW neighbours per node.
        ef_construction (`int`, *optional*, defaults to 80): HNSW build-time beam width.
        ef_search (`int`, *optional*, defaults to 128): HNSW query-time beam width.
        seed (`int`, *optional*, defaults to 0): seed of the IVF training sample and k-means.

    Example:

    ```python
    >>> import torch
    >>> from hf_cir.retrieval.search import ExactIndex, FaissIndex
    >>> gallery = torch.nn.functional.normalize(torch.randn(1000, 64), dim=-1)
    >>> queries = gallery[:4] + 0.05 * torch.randn(4, 64)
    >>> flat = FaissIndex(gallery, kind="flat")
    >>> torch.equal(flat.search(queries, 10)[1], ExactIndex(gallery).search(queries, 10)[1])
    True

    ```
    """

    KINDS = ("flat", "ivf", "hnsw")

    def __init__(
        self,
        embeddings: torch.Tensor,
        kind: str = "flat",
        *,
        nlist: int | None = None,
        nprobe: int | None = None,
        train_size: int | None = None,
        m: int = 32,
        ef_construction: int = 80,
        ef_search: int = 128,
        seed: int = 0,
    ) -> None:
        faiss = import_faiss()
        if kind not in self.KINDS:
            raise ValueError(f"`kind` must be one of {', '.join(map(repr, self.KINDS))}, got {kind!r}.")
        for name, value in (("nlist", nlist), ("nprobe", nprobe), ("train_size", train_size)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        for name, value in (("m", m), ("ef_construction", ef_construction), ("ef_search", ef_search)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        vectors = np.ascontiguousarray(_check_embeddings(embeddings).detach().cpu().float().numpy())
        n, dim = vectors.shape
        if kind == "flat":
            index = faiss.IndexFlatIP(dim)
        elif kind == "ivf":
            nlist = nlist if nlist is not None else max(1, min(round(math.sqrt(n)), n // 39 or 1))
            if nlist > n:
                raise ValueError(f"`nlist` ({nlist}) cannot exceed the number of embeddings ({n}).")
            train_size = min(n, train_size if train_size is not None else 64 * nlist)
            if train_size < nlist:
                raise ValueError(f"`train_size` ({train_size}) must be at least `nlist` ({nlist}).")
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = seed
            index.cp.max_points_per_centroid = max(1, math.ceil(train_size / nlist))
            sample = np.random.default_rng(seed).choice(n, train_size, replace=False) if train_size < n else None
            index.train(vectors if sample is None else vectors[np.sort(sample)])
            index.nprobe = min(nlist, nprobe if nprobe is not None else max(1, nlist // 4))
        else:
            index = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = ef_construction
            index.hnsw.efSearch = ef_search
        index.add(vectors)
        self.index = index
        self.kind = kind

    @classmethod
    def _from_faiss(cls, index, kind: str) -> FaissIndex:
        self = cls.__new__(cls)
        self.index, self.kind = index, kind
        return self

    @property
    def ntotal(self) -> int:
        """Number of indexed embeddings."""
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return int(self.index.d)

    def __len__(self) -> int:
        return self.ntotal

    def __repr__(self) -> str:
        extra = ""
        if self.kind == "ivf":
            extra = f", nlist={self.index.nlist}, nprobe={self.index.nprobe}"
        elif self.kind == "hnsw":
            extra = f", ef_search={self.index.hnsw.efSearch}"
        return f"FaissIndex(kind={self.kind!r}, ntotal={self.ntotal}, dim={self.dim}{extra})"

    @property
    def nprobe(self) -> int | None:
        """IVF lists visited per query (settable); None for other kinds."""
        return int(self.index.nprobe) if self.kind == "ivf" else None

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        if self.kind != "ivf":
            raise ValueError(f"`nprobe` applies to an IVF index, this one is {self.kind!r}.")
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= self.index.nlist:
            raise ValueError(f"`nprobe` must be an integer in [1, {self.index.nlist}], got {value!r}.")
        self.index.nprobe = value

    @property
    def ef_search(self) -> int | None:
        """HNSW query-time beam width (settable); None for other kinds."""
        return int(self.index.hnsw.efSearch) if self.kind == "hnsw" else None

    @ef_search.setter
    def ef_search(self, value: int) -> None:
        if self.kind != "hnsw":
            raise ValueError(f"`ef_search` applies to an HNSW index, this one is {self.kind!r}.")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`ef_search` must be a positive integer, got {value!r}.")
        self.index.hnsw.efSearch = value

    def search(self, queries: torch.Tensor, k: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
        """The (approximately, for IVF and HNSW) `k` best gallery embeddings per query, best first.

        Args:
            queries (`torch.Tensor` of shape `(batch_size, dim)` or `(dim,)`): query embeddings.
            k (`int`, *optional*, defaults to 10): results per query, at most `ntotal`.

        Returns:
            `tuple(torch.Tensor, torch.Tensor)`: float32 scores and int64 indices of shape `(batch_size, k)` on the
            CPU; slots an approximate index could not fill hold index -1 and score `-inf`.
        """
        queries = _check_queries(queries, self.dim, k, self.ntotal)
        array = np.ascontiguousarray(queries.detach().cpu().float().numpy())
        scores, indices = self.index.search(array, k)
        scores, indices = torch.from_numpy(scores), torch.from_numpy(indices).long()
        missing = indices < 0
        scores[missing] = -math.inf
        # faiss keeps the lowest ids among equal scores but lists them highest id first: order ties by index.
        # Missing slots (-1) get the largest key so that they stay last.
        keys = torch.where(missing, torch.iinfo(torch.int64).max, indices)
        by_index = torch.sort(keys, dim=1, stable=True).indices
        scores, indices = scores.gather(1, by_index), indices.gather(1, by_index)
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices
        return scores.gather(1, order), indices.gather(1, order)

    def save(self, path: str | os.PathLike) -> None:
        """Write the index with `faiss.write_index` (plain `faiss.read_index` opens it), and its kind and format
        version beside it in `path` with suffix `.json`; each file atomically.

        Example:

        ```python
        >>> import faiss, os, tempfile, torch
        >>> from hf_cir.retrieval.search import FaissIndex
        >>> path = os.path.join(tempfile.mkdtemp(), "faiss.index")
        >>> FaissIndex(torch.randn(100, 8), kind="hnsw").save(path)
        >>> faiss.read_index(path).ntotal, FaissIndex.load(path).kind
        (100, 'hnsw')

        ```
        """
        path = Path(path)
        write_faiss_index(self.index, path)
        with atomic_file(path.with_suffix(".json"), "w") as handle:
            json.dump({"kind": self.kind, "format_version": _FORMAT_VERSION, "ntotal": self.ntotal}, handle)

    @classmethod
    def load(cls, path: str | os.PathLike) -> FaissIndex:
        """Read an index written by [`FaissIndex.save`] (or by hf-cir 0.1, whose files carried their own header);
        a missing, foreign or corrupt file is a clear error."""
        faiss = import_faiss()
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Faiss index file {path} does not exist.")
        with open(path, "rb") as handle:
            legacy = handle.read(len(_FAISS_MAGIC)) == _FAISS_MAGIC
        if legacy:
            return cls._load_legacy(path)
        settings_file = path.with_suffix(".json")
        try:
            settings = json.loads(settings_file.read_text())
            kind = settings["kind"]
        except (OSError, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
            raise ValueError(
                f"{settings_file} (the settings of {path.name}) is missing or corrupt ({error})."
            ) from error
        if kind not in cls.KINDS:
            raise ValueError(f"{settings_file} is corrupt: unknown index kind {kind!r}.")
        if int(settings.get("format_version", 0)) > _FORMAT_VERSION:
            raise ValueError(f"{path} has format version {settings['format_version']}; this hf-cir reads up to 1.")
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as error:
            raise ValueError(f"{path} is corrupt: faiss cannot read it ({error}).") from error
        return cls._from_faiss(index, kind)

    @classmethod
    def _load_legacy(cls, path: Path) -> FaissIndex:
        faiss = import_faiss()
        raw = path.read_bytes()
        offset = len(_FAISS_MAGIC)
        (length,) = struct.unpack("<Q", raw[offset : offset + 8])
        offset += 8
        try:
            header = json.loads(raw[offset : offset + length])
            kind = header["kind"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, struct.error) as error:
            raise ValueError(f"{path} is corrupt: unreadable header ({error}).") from error
        if kind not in cls.KINDS:
            raise ValueError(f"{path} is corrupt: unknown index kind {kind!r}.")
        try:
            index = faiss.deserialize_index(np.frombuffer(raw, dtype=np.uint8, offset=offset + length).copy())
        except RuntimeError as error:
            raise ValueError(f"{path} is corrupt: faiss cannot read it ({error}).") from error
        return cls._from_faiss(index, kind)
