"""A searchable index of your own images: build it once with a model, query it with composed queries.

An index is a folder::

    INDEX/
        index.json               # format, model, embedding size, image root, relative paths, skipped files
        embeddings.safetensors   # "embeddings": [N, D] float32, unnormalised, row i = paths[i]
        faiss.index              # optional approximate index (flat, IVF or HNSW), see `hf_cir.retrieval.search`

It is written atomically (a reader sees the old index or the new one, never half of one). While it is being built,
finished chunks are kept in `INDEX.partial/`, so an interrupted build resumes without recomputing them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..utils import IMAGE_EXTENSIONS, atomic_directory, load_image
from .embeddings import embed_images
from .models import RetrievalModel
from .search import ExactIndex, FaissIndex

__all__ = ["GalleryIndex", "SearchHit", "list_image_files"]

logger = logging.getLogger(__name__)

INDEX_FORMAT = "hf-cir-index"
INDEX_VERSION = 1
FAISS_KINDS = ("flat", "ivf", "hnsw")


@dataclass
class SearchHit:
    """One result: the image's path (relative to the index's image root), its cosine similarity, and its rank (1 = best)."""

    path: str
    score: float
    rank: int
    absolute_path: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "path": self.path, "absolute_path": self.absolute_path, "score": self.score}


def list_image_files(root: str | os.PathLike, exclude: tuple[Path, ...] = ()) -> tuple[list[str], dict[str, str]]:
    """All files under `root` (recursively, sorted): image candidates, and `{path: reason}` of files that are not.

    Files whose extension is not an image extension are reported as non-images; 0-byte files as empty. Whether an
    image file can really be decoded is found out when it is embedded.

    Example:

    ```python
    >>> from hf_cir.retrieval import list_image_files
    >>> images, others = list_image_files("photos/")  # doctest: +SKIP
    ```
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"`images`: {root} is not a folder.")
    excluded = {path.resolve() for path in exclude}
    candidates: list[str] = []
    others: dict[str, str] = {}
    for directory, subdirectories, files in os.walk(root):
        directory_path = Path(directory)
        subdirectories[:] = sorted(d for d in subdirectories if (directory_path / d).resolve() not in excluded)
        for name in sorted(files):
            path = directory_path / name
            relative = path.relative_to(root).as_posix()
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                others[relative] = "not an image file (unknown extension)"
            elif path.stat().st_size == 0:
                others[relative] = "empty file (0 bytes)"
            else:
                candidates.append(relative)
    return sorted(candidates), {path: others[path] for path in sorted(others)}


class GalleryIndex:
    """Embeddings of an image folder, searchable with composed queries.

    Example:

    ```python
    >>> from hf_cir.retrieval import GalleryIndex, load_retrieval_model
    >>> model = load_retrieval_model("path/to/lincir-model")  # doctest: +SKIP
    >>> index = GalleryIndex.build(model, "photos/", "photos.index")  # doctest: +SKIP
    >>> query = model.encode_queries(["is red"], images=["query.jpg"])  # doctest: +SKIP
    >>> [hit.path for hit in index.search(query, k=5)[0]]  # doctest: +SKIP
    ['beach/red_car.jpg', ...]
    ```
    """

    def __init__(
        self,
        paths: list[str],
        embeddings: torch.Tensor,
        root: str | os.PathLike,
        info: dict[str, Any],
        skipped: dict[str, str] | None = None,
        location: Path | None = None,
    ):
        if embeddings.ndim != 2 or embeddings.shape[0] != len(paths):
            raise ValueError(f"{len(paths)} paths for embeddings of shape {tuple(embeddings.shape)}.")
        self.paths = list(paths)
        self.embeddings = embeddings.float()
        self.root = Path(root)
        self.info = dict(info)
        self.skipped = dict(skipped or {})
        self.location = location
        self._normalized = F.normalize(self.embeddings, dim=-1)
        self._backend = None
        self._exact = None
        # How many images the build that made this object embedded (the rest came from a resumed partial build).
        self.computed = 0

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def embedding_dim(self) -> int:
        return int(self.info.get("embedding_dim", self.embeddings.shape[1]))

    # -- building --------------------------------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        model: RetrievalModel,
        images: str | os.PathLike,
        output: str | os.PathLike,
        batch_size: int = 32,
        save_every: int = 256,
        show_progress: bool = True,
        faiss: str | None = None,
        overwrite: bool = False,
        faiss_kwargs: dict[str, Any] | None = None,
    ) -> GalleryIndex:
        """Embed every readable image under `images` (recursively) and save the index to `output`.

        Unreadable, non-image and empty files are skipped; a warning lists them and `index.skipped` keeps them.
        Finished chunks of `save_every` images are kept in `output.partial/` until the index is complete, so running
        the same command again after an interruption only embeds the images that are missing.

        Args:
            model: The model that embeds the images (and later the queries).
            images: The image folder.
            output: The index folder to write.
            batch_size: Images per encoder call.
            save_every: Images per resumable chunk.
            show_progress: Show a progress bar.
            faiss: Also build a faiss index: `"flat"`, `"ivf"` or `"hnsw"`.
            overwrite: Replace an existing index at `output`.
            faiss_kwargs: Extra arguments of the faiss index.
        """
        images = Path(images)
        output = Path(output)
        if faiss is not None and faiss not in FAISS_KINDS:
            raise ValueError(f"Unknown faiss index kind {faiss!r}; expected one of {', '.join(FAISS_KINDS)}.")
        if output.exists() and not overwrite:
            raise FileExistsError(
                f"`output`: {output} already exists; pass overwrite=True (--overwrite) to replace it."
            )
        partial = output.with_name(output.name + ".partial")
        candidates, others = list_image_files(images, exclude=(output, partial))
        fingerprint = model.gallery_fingerprint()
        result = embed_images(
            model.encode_images,
            candidates,
            lambda path: load_image(images / path, name=path),
            work_dir=partial,
            fingerprint=fingerprint,
            batch_size=batch_size,
            save_every=save_every,
            show_progress=show_progress,
            description=f"Indexing {images}",
        )
        skipped = {**others, **result.skipped}
        skipped = {path: skipped[path] for path in sorted(skipped)}
        if skipped:
            listing = "\n".join(f"  {path}: {reason}" for path, reason in skipped.items())
            warnings.warn(f"Skipped {len(skipped)} file(s) that are not readable images:\n{listing}", stacklevel=2)
        if not result.ids:
            raise ValueError(f"`images`: no readable image under {images}.")
        info = {
            "format": INDEX_FORMAT,
            "version": INDEX_VERSION,
            "model": model.name_or_path,
            "model_type": model.model_type,
            "embedding_dim": model.embedding_dim,
            "fingerprint": fingerprint,
            "root": str(images.resolve()),
            "count": len(result.ids),
            "faiss": faiss,
        }
        index = cls(result.ids, result.embeddings, images.resolve(), info, skipped)
        index.save(output, overwrite=overwrite, faiss_kwargs=faiss_kwargs)
        shutil.rmtree(partial, ignore_errors=True)
        index.computed = result.computed
        return index

    def save(
        self, path: str | os.PathLike, overwrite: bool = False, faiss_kwargs: dict[str, Any] | None = None
    ) -> None:
        """Write the index folder atomically."""
        path = Path(path)
        with atomic_directory(path, overwrite=overwrite) as tmp:
            save_file({"embeddings": self.embeddings.contiguous()}, str(tmp / "embeddings.safetensors"))
            info = dict(self.info, paths=self.paths, skipped=self.skipped)
            (tmp / "index.json").write_text(json.dumps(info, indent=1))
            kind = self.info.get("faiss")
            if kind:
                backend = FaissIndex(self._normalized, kind=kind, **(faiss_kwargs or {}))
                backend.save(tmp / "faiss.index")
                self._backend = backend
        self.location = path

    # -- loading ---------------------------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike) -> GalleryIndex:
        """Open an index folder; a missing or corrupt folder is an error that says what is wrong.

        Example:

        ```python
        >>> from hf_cir.retrieval import GalleryIndex
        >>> index = GalleryIndex.load("photos.index")  # doctest: +SKIP
        ```
        """
        path = Path(path)
        if not path.is_dir():
            partial = path.with_name(path.name + ".partial")
            hint = (
                f" ({partial} holds an unfinished build: run `hf-cir index` again to finish it)"
                if partial.is_dir()
                else ""
            )
            raise FileNotFoundError(f"`index`: {path} does not exist or is not a folder{hint}.")
        for name in ("index.json", "embeddings.safetensors"):
            if not (path / name).is_file():
                raise FileNotFoundError(f"`index`: {path} is not an hf-cir index (missing {name}).")
        try:
            info = json.loads((path / "index.json").read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"`index`: {path / 'index.json'} is corrupt ({error}).") from error
        if not isinstance(info, dict) or info.get("format") != INDEX_FORMAT:
            raise ValueError(f"`index`: {path / 'index.json'} is not an hf-cir index file (format {INDEX_FORMAT!r}).")
        if info.get("version", 0) > INDEX_VERSION:
            raise ValueError(
                f"`index`: {path} has format version {info['version']}; this hf-cir reads up to {INDEX_VERSION}."
            )
        try:
            embeddings = load_file(str(path / "embeddings.safetensors"))["embeddings"]
        except (SafetensorError, OSError, KeyError) as error:
            raise ValueError(f"`index`: {path / 'embeddings.safetensors'} is corrupt ({error}).") from error
        paths = info.pop("paths", None)
        skipped = info.pop("skipped", {})
        if not isinstance(paths, list) or embeddings.ndim != 2 or embeddings.shape[0] != len(paths):
            raise ValueError(
                f"`index`: {path} is corrupt: {len(paths) if isinstance(paths, list) else 'no'} paths for embeddings "
                f"of shape {tuple(embeddings.shape)}."
            )
        if embeddings.shape[1] != info.get("embedding_dim"):
            raise ValueError(
                f"`index`: {path} is corrupt: embeddings of size {embeddings.shape[1]}, index.json says {info.get('embedding_dim')}."
            )
        index = cls(paths, embeddings, info.get("root", ""), info, skipped, location=path)
        if info.get("faiss"):
            faiss_path = path / "faiss.index"
            if not faiss_path.exists():
                raise FileNotFoundError(f"`index`: {path} says it has a faiss index but faiss.index is missing.")
            index._backend = FaissIndex.load(faiss_path)
        return index

    # -- searching -------------------------------------------------------------------------------------------------

    def check_model(self, model: RetrievalModel) -> None:
        """Raise if `model` embeds into another space than the index was built with (warn on another model)."""
        if model.embedding_dim != self.embedding_dim:
            raise ValueError(
                f"The index {self.location or ''} holds {self.embedding_dim}-d embeddings from {self.info.get('model')}, "
                f"but the model {model.name_or_path} embeds into {model.embedding_dim} dimensions: query it with the "
                "model that built it, or rebuild the index with this model."
            )
        if self.info.get("fingerprint") and self.info["fingerprint"] != model.gallery_fingerprint():
            logger.warning(
                f"The index was built with {self.info.get('model')}, whose image embeddings differ from "
                f"{model.name_or_path}'s; results compare embeddings from two different models."
            )

    def search(self, query_embeds: torch.Tensor, k: int = 10, exact: bool | None = None) -> list[list[SearchHit]]:
        """Top-`k` images for each query embedding `[B, D]`, by cosine similarity, best first.

        Args:
            query_embeds: Unnormalised query embeddings.
            k: How many results per query.
            exact: Force exact search even when the index has a faiss index (default: use faiss when present).
        """
        if k < 1:
            raise ValueError(f"`top_k` must be at least 1, got {k}.")
        if query_embeds.ndim == 1:
            query_embeds = query_embeds.unsqueeze(0)
        if query_embeds.shape[-1] != self.embedding_dim:
            raise ValueError(
                f"Query embeddings have size {query_embeds.shape[-1]}, the index holds {self.embedding_dim}-d embeddings."
            )
        queries = F.normalize(query_embeds.float().cpu(), dim=-1)
        k = min(k, len(self))
        if self._backend is not None and exact is not True:
            scores, indices = self._backend.search(queries, k)
        else:
            scores, indices = self._exact_search(queries, k)
        results = []
        for row_scores, row_indices in zip(torch.as_tensor(scores).tolist(), torch.as_tensor(indices).tolist()):
            hits = []
            for rank, (score, index) in enumerate(zip(row_scores, row_indices)):
                if index < 0:  # faiss pads with -1 when it finds fewer than k
                    continue
                hits.append(SearchHit(self.paths[index], float(score), rank + 1, str(self.root / self.paths[index])))
            results.append(hits)
        return results

    def _exact_search(self, queries: torch.Tensor, k: int):
        if self._exact is None:
            self._exact = ExactIndex(self._normalized)
        return self._exact.search(queries, k)
