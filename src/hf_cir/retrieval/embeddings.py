"""Embedding many images once: batched, with a progress bar, resumable from shards written atomically to disk.

Both `hf-cir index` and the benchmark evaluation embed their images through [`embed_images`]. Given a work folder,
every finished chunk of images is saved as a safetensors shard (written to a temporary file and renamed), so a run
that is interrupted, by an error or by a kill, resumes where it stopped and never recomputes a finished image.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from ..utils import atomic_file

__all__ = ["EmbeddingResult", "embed_images", "load_embedding_shards"]

logger = logging.getLogger(__name__)

_SHARD = re.compile(r"^shard-(\d{6})\.safetensors$")


@dataclass
class EmbeddingResult:
    """Embeddings of the images that could be read, in input order, and the ones that could not.

    Attributes:
        ids: The embedded image ids, in the order they were given.
        embeddings: `[len(ids), D]` float32 unnormalised embeddings.
        skipped: `{image id: reason}` of the images that could not be read.
        computed: How many images this call encoded (the rest came from earlier shards).
    """

    ids: list[str]
    embeddings: torch.Tensor
    skipped: dict[str, str] = field(default_factory=dict)
    computed: int = 0


def _save_shard(path: Path, ids: list[str], embeddings: torch.Tensor, fingerprint: str) -> None:
    data = save({"embeddings": embeddings.contiguous()}, metadata={"ids": json.dumps(ids), "fingerprint": fingerprint})
    with atomic_file(path, "wb") as handle:
        handle.write(data)


def load_embedding_shards(folder: str | os.PathLike, fingerprint: str | None = None) -> tuple[list[str], torch.Tensor]:
    """Ids and embeddings stored in a work folder's shards (shards of another model are ignored with a warning).

    Example:

    ```python
    >>> from hf_cir.retrieval.embeddings import load_embedding_shards
    >>> ids, embeddings = load_embedding_shards("gallery.partial")  # doctest: +SKIP
    ```
    """
    folder = Path(folder)
    ids: list[str] = []
    chunks: list[torch.Tensor] = []
    if not folder.is_dir():
        return ids, torch.empty(0, 0)
    for path in sorted(folder.iterdir()):
        if not _SHARD.match(path.name):
            continue
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
            tensors = load_file(str(path))
            shard_ids = json.loads(metadata["ids"])
            embeddings = tensors["embeddings"]
        except (SafetensorError, OSError, KeyError, ValueError) as error:
            logger.warning(f"Ignoring unreadable embedding shard {path} ({error}); its images are recomputed.")
            continue
        if fingerprint is not None and metadata.get("fingerprint") != fingerprint:
            logger.warning(f"Ignoring {path}: it was computed by another model or preprocessing.")
            continue
        if embeddings.ndim != 2 or embeddings.shape[0] != len(shard_ids):
            logger.warning(f"Ignoring {path}: {len(shard_ids)} ids for embeddings of shape {tuple(embeddings.shape)}.")
            continue
        ids.extend(shard_ids)
        chunks.append(embeddings)
    if not chunks:
        return ids, torch.empty(0, 0)
    return ids, torch.cat(chunks)


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def embed_images(
    encode: Callable[[list[Image.Image]], torch.Tensor],
    ids: Sequence[str],
    load: Callable[[str], Image.Image],
    work_dir: str | os.PathLike | None = None,
    fingerprint: str = "",
    batch_size: int = 32,
    save_every: int = 1024,
    show_progress: bool = True,
    skip_errors: bool = True,
    description: str = "Embedding images",
    num_workers: int = 4,
) -> EmbeddingResult:
    """Embed the images `ids` (opened with `load`) in batches, resuming from `work_dir`'s shards.

    Args:
        encode: Maps a list of RGB images to `[B, D]` embeddings (e.g. `RetrievalModel.encode_images`).
        ids: Image ids, each passed to `load`.
        load: Opens one image; an exception marks the image as unreadable.
        work_dir: Where finished chunks are saved as shards; `None` keeps everything in memory.
        fingerprint: Identifies the encoder; shards with another fingerprint are ignored.
        batch_size: Images per `encode` call.
        save_every: Images per shard (rounded up to whole batches).
        show_progress: Show a tqdm progress bar.
        skip_errors: Skip unreadable images (listed in the result) instead of raising.
        description: Progress bar label.
        num_workers: Threads that open images (1: open them in the calling thread).

    Example:

    ```python
    >>> import torch
    >>> from PIL import Image
    >>> from hf_cir.retrieval.embeddings import embed_images
    >>> encode = lambda images: torch.ones(len(images), 4)
    >>> result = embed_images(encode, ["a", "b"], lambda _: Image.new("RGB", (8, 8)), show_progress=False)
    >>> result.embeddings.shape, result.computed
    (torch.Size([2, 4]), 2)
    ```
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"`batch_size` must be at least 1, got {batch_size}.")
    ids = list(ids)
    work = Path(work_dir) if work_dir is not None else None
    done_ids: list[str] = []
    done = torch.empty(0, 0)
    if work is not None:
        work.mkdir(parents=True, exist_ok=True)
        done_ids, done = load_embedding_shards(work, fingerprint)
    position = {image_id: row for row, image_id in enumerate(done_ids)}
    wanted = set(ids)
    remaining = [image_id for image_id in ids if image_id not in position]
    next_shard = 0
    if work is not None:
        numbers = [int(m.group(1)) for p in work.iterdir() if (m := _SHARD.match(p.name))]
        next_shard = max(numbers, default=-1) + 1

    skipped: dict[str, str] = {}
    new_ids: list[str] = []
    new_chunks: list[torch.Tensor] = []
    pending_ids: list[str] = []
    pending: list[torch.Tensor] = []
    computed = 0

    def flush() -> None:
        nonlocal next_shard, pending_ids, pending
        if not pending_ids:
            return
        embeddings = torch.cat(pending)
        if work is not None:
            _save_shard(work / f"shard-{next_shard:06d}.safetensors", pending_ids, embeddings, fingerprint)
            next_shard += 1
        new_ids.extend(pending_ids)
        new_chunks.append(embeddings)
        pending_ids, pending = [], []

    def _try_load(image_id: str):
        try:
            return load(image_id), None
        except Exception as error:  # reported per image below
            return None, error

    # Decoding images releases the GIL: a few threads keep the encoder fed.
    pool = ThreadPoolExecutor(max_workers=num_workers) if num_workers > 1 else None
    progress = tqdm(total=len(ids), initial=len(ids) - len(remaining), desc=description, disable=not show_progress)
    try:
        for start in range(0, len(remaining), batch_size):
            batch_ids, images = [], []
            chunk = remaining[start : start + batch_size]
            loaded = list(pool.map(_try_load, chunk)) if pool is not None else [_try_load(i) for i in chunk]
            for image_id, (image, error) in zip(chunk, loaded):
                if error is not None:
                    if not skip_errors:
                        raise error
                    skipped[image_id] = _describe(error)
                    continue
                batch_ids.append(image_id)
                images.append(image)
            if images:
                embeddings = encode(images).detach().float().cpu()
                if embeddings.shape[0] != len(images):
                    raise ValueError(
                        f"The encoder returned {embeddings.shape[0]} embeddings for {len(images)} images."
                    )
                pending_ids.extend(batch_ids)
                pending.append(embeddings)
                computed += len(images)
            progress.update(len(remaining[start : start + batch_size]))
            if len(pending_ids) >= save_every:
                flush()
        flush()
    finally:
        progress.close()
        if pool is not None:
            pool.shutdown(wait=True)

    all_ids = [i for i in done_ids if i in wanted] + new_ids
    chunks = ([done[[position[i] for i in done_ids if i in wanted]]] if done.numel() else []) + new_chunks
    if not chunks:
        return EmbeddingResult([], torch.empty(0, 0), skipped, computed)
    table = torch.cat(chunks)
    row = {image_id: index for index, image_id in enumerate(all_ids)}
    ordered = [image_id for image_id in ids if image_id in row]
    return EmbeddingResult(ordered, table[[row[i] for i in ordered]], skipped, computed)
