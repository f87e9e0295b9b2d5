"""A searchable index of your own images: build it once with a model, query it with composed queries.

An index is a folder in the index format v2 (`hf_cir.retrieval.storage`): float16 or float32 embedding shards,
Parquet metadata (ids, paths, captions, ...), a small `manifest.json`, and optionally a faiss index (flat, IVF,
HNSW, or the compressed IVF-PQ of `hf_cir.retrieval.compressed`). Folders of format 1 (`index.json` +
`embeddings.safetensors`) still load, and `GalleryIndex.upgrade` converts them.

It appears atomically (a reader sees the old index or the new one, never half of one). While it is being built,
finished shards are kept in `INDEX.partial/`, so an interrupted build (any of its processes) resumes without
recomputing them; see `hf_cir.retrieval.engine`.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..utils import atomic_directory
from ..utils.io import ArtefactKind, check_replaceable
from ..utils.units import ProcessGroup, check_positive_integers
from .engine import BUILD_NAME, OutputLock, build_index_folder, lock_path
from .kinds import INDEX_KINDS, check_index_kind_options
from .models import RetrievalModel
from .search import ExactIndex, FaissIndex
from .sources import GallerySource, as_gallery_source, list_image_files  # noqa: F401  (public here too)
from .storage import (
    INDEX_FORMAT,
    MANIFEST_NAME,
    SKIPPED_NAME,
    STORAGE_DTYPES,
    ShardedEmbeddings,
    ShardedMetadata,
    index_damage,
    make_manifest,
    read_manifest,
    read_skipped,
    write_manifest,
    write_shard,
    write_skipped,
)
from .validation import check_embedding_matrix, check_index_metadata, check_stored_paths, resolve_inside

__all__ = ["INDEX_FOLDER", "GalleryIndex", "SearchHit", "list_image_files"]

logger = logging.getLogger(__name__)

# Up to this many bytes of stored embeddings, exact search loads them into RAM (faster); beyond, it scans the
# memory-mapped shards block by block.
IN_RAM_EXACT_BYTES = 2 << 30
# An index folder of format 1 as hf-cir 0.1 wrote it: `--overwrite` replaces only such a folder (or a v2 one).
INDEX_FOLDER = ArtefactKind(
    "hf-cir index",
    "index.json",
    lambda info: info.get("format") == INDEX_FORMAT,
    entries=("embeddings.safetensors", "faiss.index"),
)
INDEX_FOLDER_V2 = ArtefactKind(
    "hf-cir index",
    MANIFEST_NAME,
    lambda info: info.get("format") == INDEX_FORMAT,
    # `units` and the build record are left only by a build killed while tidying the moved folder (see the engine).
    entries=("embeddings", "metadata", SKIPPED_NAME, "faiss.index", "faiss.json", "units", BUILD_NAME),
)
# A build's resumable shards (`INDEX.partial/`), removed when the build completes (format 1: shard files only).
PARTIAL_FOLDER = ArtefactKind(
    "unfinished hf-cir index build", None, lambda _: True, entries=("shard-*.safetensors", ".shard-*.tmp")
)
PARTIAL_FOLDER_V2 = ArtefactKind(
    "unfinished hf-cir index build",
    BUILD_NAME,
    lambda info: isinstance(info, dict) and "fingerprint" in info,
    entries=("embeddings", "metadata", "units", SKIPPED_NAME, "faiss*", MANIFEST_NAME),
)


@dataclass
class SearchHit:
    """One result: the image's path (relative to the index's image root), its cosine similarity, and its rank (1 = best)."""

    path: str
    score: float
    rank: int
    absolute_path: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "path": self.path,
            "absolute_path": self.absolute_path,
            "score": self.score,
            "metadata": self.metadata,
        }


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
        self._paths = list(paths)
        self._embeddings = embeddings.float()
        self._normalized_rows = None
        self.root = Path(root)
        self.info = dict(info)
        self.skipped = dict(skipped or {})
        self.location = location
        self._table: ShardedEmbeddings | None = None  # format v2: the memory-mapped shards
        self._metadata: ShardedMetadata | None = None
        self._backend = None
        self._exact = None
        # How many images the build that made this object embedded (the rest came from a resumed partial build).
        self.computed = 0

    @classmethod
    def _from_folder(cls, folder: Path, manifest: dict[str, Any]) -> GalleryIndex:
        """An index over a v2 folder (checked by `read_manifest`): nothing is read until asked for."""
        self = cls.__new__(cls)
        self._table = ShardedEmbeddings.open(folder, manifest["num_shards"])
        if len(self._table) != manifest["count"] or (
            len(self._table) and self._table.dim != manifest["embedding_dim"]
        ):
            raise ValueError(
                f"`index`: {folder} is corrupt: shards hold {len(self._table)} x {self._table.dim} embeddings, the "
                f"manifest says {manifest['count']} x {manifest['embedding_dim']}."
            )
        self._metadata = ShardedMetadata(folder, self._table)
        self._paths = self._embeddings = self._normalized_rows = None
        self.root = Path(manifest["root"]) if manifest.get("root") else folder
        self.info = dict(manifest)
        self.skipped = read_skipped(folder)
        self.location = folder
        self._backend = self._exact = None
        self.computed = 0
        return self

    def __len__(self) -> int:
        return len(self._table) if self._table is not None else len(self._paths)

    @property
    def paths(self) -> list[str]:
        """The stored id of every row (for an image folder: its path relative to `root`), in row order."""
        if self._paths is None:
            self._paths = self._metadata.column("id")
        return self._paths

    @property
    def embeddings(self) -> torch.Tensor:
        """Every stored image embedding, unnormalised float32 `[N, D]` (loads the whole table: see `get_embeddings`)."""
        if self._embeddings is None:
            self._embeddings = self.get_embeddings(range(len(self)))
        return self._embeddings

    def get_embeddings(self, rows) -> torch.Tensor:
        """The unnormalised float32 embeddings `[len(rows), D]` of row numbers `rows` (read from disk for v2)."""
        rows = list(rows)
        if self._table is None:
            return self._embeddings[rows]
        norms = torch.tensor([row["norm"] for row in self._metadata.rows(rows)], dtype=torch.float32)
        return self._table.rows(rows) * norms[:, None]

    def metadata(self, rows) -> list[dict[str, Any]]:
        """The metadata rows (id, path, caption, url, ... as the source had them) of row numbers `rows`."""
        rows = list(rows)
        if self._metadata is None:
            return [{"id": self._paths[row], "path": self._paths[row]} for row in rows]
        return [{k: v for k, v in row.items() if k != "norm"} for row in self._metadata.rows(rows)]

    @property
    def _normalized(self) -> torch.Tensor:
        if self._normalized_rows is None:
            self._normalized_rows = (
                F.normalize(self._embeddings, dim=-1) if self._table is None else self._table.to_tensor()
            )
        return self._normalized_rows

    @property
    def embedding_dim(self) -> int:
        return int(
            self.info.get("embedding_dim", self._table.dim if self._table is not None else self._embeddings.shape[1])
        )

    # -- building --------------------------------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        model: RetrievalModel,
        source: str | os.PathLike | GallerySource | Any,
        output: str | os.PathLike,
        batch_size: int = 32,
        save_every: int = 4096,
        show_progress: bool = True,
        faiss: str | None = None,
        overwrite: bool = False,
        faiss_kwargs: dict[str, Any] | None = None,
        num_workers: int = 0,
        dtype: str = "float32",
        memory_budget: int | str | None = None,
        **source_kwargs,
    ) -> GalleryIndex:
        """Embed every readable image of `source` and save the index to `output` (format v2).

        Unreadable, non-image and empty inputs are skipped; a warning lists them and `index.skipped` keeps them.
        Finished shards of `save_every` images are kept in `output.partial/` until the index is complete, so running
        the same command again after an interruption only embeds the images that are missing. Under
        `accelerate launch` every process runs this same call and embeds its own shards (see
        `hf_cir.retrieval.engine`); every process returns the finished index.

        Args:
            model: The model that embeds the images (and later the queries).
            source: An image folder, a `datasets.Dataset` (or `DatasetDict`) with an image column, a streaming
                `datasets.IterableDataset` (shards of `save_every` consecutive rows), or a `GallerySource`
                (`DatasetSource` for data files / saved datasets / Hub ids, `WebDatasetSource` for tar shards).
            output: The index folder to write.
            batch_size: Images per encoder call.
            save_every: Images per resumable shard (a webdataset shard is one tar).
            show_progress: Show a progress bar.
            faiss: Also build a faiss index: `"flat"`, `"ivf"`, `"hnsw"`, `"ivf-pq"` (compressed, re-ranked
                exactly) or `"auto"` (exact search up to 100k images, else `"ivf-pq"`).
            overwrite: Replace an existing index at `output`. Without it, an existing index is refused unless it is
                damaged and was built by this same call (model, source, `save_every`, `dtype`): then its damaged
                shards are computed again and its intact ones kept.
            faiss_kwargs: Extra arguments of the faiss index (`"ivf-pq"`: `m`, the PQ sub-quantisers, and `nlist`, the
                inverted lists; see `hf_cir.retrieval.compressed.plan_compressed_index`).
            num_workers: DataLoader workers that open and preprocess the images.
            dtype: Storage dtype of the embeddings, `"float32"` or `"float16"`.
            memory_budget: Bytes (or `"4GB"`) the `"ivf-pq"` index may take in memory; sets its code size.
            source_kwargs: Options of the dataset source (`image_column`, `id_column`, `metadata_columns`, `split`).
        """
        output = Path(output)
        # Every argument is checked before anything is created (no `.partial` folder is left by a refused call).
        check_positive_integers(batch_size=(batch_size, 1), save_every=(save_every, 1), num_workers=(num_workers, 0))
        if dtype not in STORAGE_DTYPES:
            raise ValueError(f"`dtype` must be one of {', '.join(STORAGE_DTYPES)}, got {dtype!r}.")
        check_index_kind_options(faiss, memory_budget)
        if memory_budget is not None:
            from .compressed import parse_memory_size

            parse_memory_size(memory_budget)
        partial = output.with_name(output.name + ".partial")
        protected = {}
        if isinstance(source, (str, os.PathLike)) and not source_kwargs:
            if not Path(source).is_dir():
                raise FileNotFoundError(f"`images`: {source} is not a folder.")
            protected = {"`images`": Path(source)}
        if output.exists() and not overwrite and index_damage(output) is None:  # a damaged index is repaired
            raise FileExistsError(
                f"`output`: {output} already exists; pass overwrite=True (--overwrite) to replace it."
            )
        # Before any work: refuse a folder that is not ours. These checks run before the build takes the output's
        # lock, so a build under way elsewhere may show a half-written `.partial`: then its lock is what refuses.
        try:
            check_replaceable(
                output, INDEX_FOLDER_V2 if (output / MANIFEST_NAME).exists() else INDEX_FOLDER, protected
            )
            _check_partial_folder(partial, protected)
        except (OSError, ValueError):
            OutputLock(output).probe()
            raise
        if isinstance(source, (str, os.PathLike)) and not source_kwargs:
            source_kwargs = {"exclude": (output, partial, lock_path(output))}
        gallery = as_gallery_source(source, **source_kwargs)
        computed, skipped = build_index_folder(
            model,
            gallery,
            output,
            unit_size=save_every,
            batch_size=batch_size,
            num_workers=num_workers,
            dtype=dtype,
            faiss=faiss,
            memory_budget=memory_budget,
            faiss_kwargs=faiss_kwargs,
            show_progress=show_progress,
            description=f"Indexing {gallery.describe().get('root') or gallery.kind}",
            overwrite=overwrite,
        )
        if skipped:
            listing = "\n".join(f"  {path}: {reason}" for path, reason in list(skipped.items())[:100])
            more = f"\n  ... and {len(skipped) - 100} more" if len(skipped) > 100 else ""
            warnings.warn(
                f"Skipped {len(skipped)} file(s) that are not readable images:\n{listing}{more}", stacklevel=2
            )
        index = cls.load(output)
        index.computed = computed
        return index

    def save(
        self,
        path: str | os.PathLike,
        overwrite: bool = False,
        dtype: str = "float32",
        shard_size: int = 4096,
        faiss_kwargs: dict[str, Any] | None = None,
    ) -> None:
        """Write the index folder (format v2) atomically; a faiss index of a kind in `info["faiss"]` is rebuilt."""
        import pyarrow as pa

        path = Path(path)
        with atomic_directory(
            path,
            overwrite=overwrite,
            kind=INDEX_FOLDER_V2 if (path / MANIFEST_NAME).exists() else INDEX_FOLDER,
            protected={"image root": self.root},
        ) as tmp:
            ids = self.paths
            count = len(ids)
            shard_rows = []
            for number, start in enumerate(range(0, count, shard_size)):
                rows = range(start, min(start + shard_size, count))
                embeddings = self.get_embeddings(rows)
                norms = embeddings.norm(dim=-1)
                metadata = self.metadata(rows)
                table = pa.table(
                    {
                        "id": [ids[row] for row in rows],
                        "norm": norms.numpy(),
                        "path": [row.get("path") for row in metadata],
                    }
                )
                write_shard(tmp, number, F.normalize(embeddings, dim=-1).numpy(), table, dtype)
                shard_rows.append(len(rows))
            write_skipped(tmp, self.skipped)
            kind = self.info.get("faiss")
            kind = kind.get("kind") if isinstance(kind, dict) else kind
            faiss_info = None
            if kind:
                table = ShardedEmbeddings.open(tmp, len(shard_rows))
                faiss_info = INDEX_KINDS[kind].build(table, tmp, ProcessGroup.single(), None, faiss_kwargs)
            kept = {key: value for key, value in self.info.items() if key not in ("paths", "skipped", "num_shards")}
            kept.update(
                embedding_dim=self.embedding_dim,
                dtype=dtype,
                count=count,
                num_shards=len(shard_rows),
                shard_rows=shard_rows,
                root=str(self.root),
                faiss=faiss_info,
            )
            write_manifest(tmp, make_manifest(**kept))
        self.location = path

    @classmethod
    def upgrade(cls, path: str | os.PathLike, dtype: str = "float32") -> GalleryIndex:
        """Convert an index folder of format 1 in place to format v2 (atomically); a v2 folder is left as it is.

        Example:

        ```python
        >>> from hf_cir.retrieval import GalleryIndex
        >>> GalleryIndex.upgrade("photos.index").info["version"]  # doctest: +SKIP
        2
        ```
        """
        index = cls.load(path)
        if index._table is None:
            index.save(path, overwrite=True, dtype=dtype)
        return cls.load(path)

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
        if (path / MANIFEST_NAME).is_file():
            return cls._load_v2(path)
        if not (path / "index.json").is_file():
            raise FileNotFoundError(
                f"`index`: {path} is not an hf-cir index (missing {MANIFEST_NAME}, or index.json of format 1)."
            )
        for name in ("index.json", "embeddings.safetensors"):
            if not (path / name).is_file():
                raise FileNotFoundError(f"`index`: {path} is not an hf-cir index (missing {name}).")
        source = f"`index`: {path / 'index.json'}"
        try:
            info = json.loads((path / "index.json").read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{source} is corrupt ({error}).") from error
        info = check_index_metadata(
            info, source, INDEX_FORMAT, versions=(1,), required=("root", "embedding_dim", "paths")
        )
        paths = check_stored_paths(info.pop("paths"), source)
        skipped = info.pop("skipped", {})
        embeddings_file = path / "embeddings.safetensors"
        try:
            embeddings = load_file(str(embeddings_file))["embeddings"]
        except (SafetensorError, OSError, KeyError) as error:
            raise ValueError(f"`index`: {embeddings_file} is corrupt ({error}).") from error
        check_embedding_matrix(embeddings, f"`index`: {embeddings_file}", rows=len(paths), dim=info["embedding_dim"])
        index = cls(paths, embeddings, info["root"], info, skipped, location=path)
        if info.get("faiss"):
            faiss_path = path / "faiss.index"
            if not faiss_path.exists():
                raise FileNotFoundError(f"`index`: {path} says it has a faiss index but faiss.index is missing.")
            index._backend = FaissIndex.load(faiss_path)
        return index

    @classmethod
    def _load_v2(cls, path: Path) -> GalleryIndex:
        manifest = read_manifest(path)
        index = cls._from_folder(path, manifest)
        faiss_info = manifest.get("faiss")
        if faiss_info:  # its file was checked by `read_manifest`; the kind checks that it fits the embeddings
            index._backend = INDEX_KINDS[faiss_info["kind"]].load(path / faiss_info["file"], index._table)
        return index

    # -- searching -------------------------------------------------------------------------------------------------

    def check_model(self, model: RetrievalModel, allow_other_model: bool = False) -> None:
        """Raise if `model` embeds into another space than the index was built with.

        An index built by another gallery encoder (another fingerprint) of the same size is an error too, unless
        `allow_other_model=True` (then a warning): its scores would compare embeddings of two different models.
        """
        if model.embedding_dim != self.embedding_dim:
            raise ValueError(
                f"The index {self.location or ''} holds {self.embedding_dim}-d embeddings from {self.info.get('model')}, "
                f"but the model {model.name_or_path} embeds into {model.embedding_dim} dimensions: query it with the "
                "model that built it, or rebuild the index with this model."
            )
        if self.info.get("fingerprint") and self.info["fingerprint"] != model.gallery_fingerprint():
            message = (
                f"The index {self.location or ''} was built with {self.info.get('model')}, whose image encoder "
                f"differs from {model.name_or_path}'s: scores would compare embeddings of two different models"
            )
            if not allow_other_model:
                raise ValueError(
                    f"{message}. Query it with the model that built it, rebuild it with this model, or pass "
                    "allow_other_model=True (--allow-other-model) to search anyway."
                )
            logger.warning(message + ".")

    def image_file(self, path: str) -> Path:
        """The file of the stored image `path`, resolved; an error if it is not inside the index's image root."""
        return resolve_inside(self.root, path, f"`index`: {self.location or 'index'} entry {path!r}")

    def find(self, file: str | os.PathLike) -> str | None:
        """The stored path of `file` when it is an image of this index (same file under the image root), else `None`."""
        try:
            relative = Path(file).resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return None
        return relative if relative in self._positions() else None

    def position(self, path: str) -> int | None:
        """The row of the stored image `path` (its id), or `None` when the index does not hold it."""
        return self._positions().get(path)

    def _positions(self) -> dict[str, int]:
        if getattr(self, "_position_of", None) is None:
            self._position_of = {image: row for row, image in enumerate(self.paths)}
        return self._position_of

    def search(
        self,
        query_embeds: torch.Tensor,
        k: int = 10,
        exact: bool | None = None,
        exclude: list[str | None] | None = None,
    ) -> list[list[SearchHit]]:
        """Top-`k` images for each query embedding `[B, D]`, by cosine similarity, best first.

        Args:
            query_embeds: Unnormalised query embeddings.
            k: How many results per query.
            exact: Force exact search even when the index has a faiss index (default: use faiss when present).
            exclude: Per query, a stored path to leave out of its results (its reference image, say), or `None`.
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"`top_k` must be an integer >= 1, got {k!r}.")
        if not isinstance(query_embeds, torch.Tensor) or not query_embeds.is_floating_point():
            raise ValueError(f"`query_embeds` must be a floating-point tensor, got {type(query_embeds).__name__}.")
        if query_embeds.ndim == 1:
            query_embeds = query_embeds.unsqueeze(0)
        if query_embeds.ndim != 2 or query_embeds.shape[0] == 0:
            raise ValueError(f"`query_embeds` must have shape [B, D] with B >= 1, got {tuple(query_embeds.shape)}.")
        if query_embeds.shape[-1] != self.embedding_dim:
            raise ValueError(
                f"Query embeddings have size {query_embeds.shape[-1]}, the index holds {self.embedding_dim}-d embeddings."
            )
        if not bool(torch.isfinite(query_embeds).all()):
            raise ValueError("`query_embeds` hold non-finite values (NaN or infinity).")
        exclude = list(exclude) if exclude is not None else [None] * query_embeds.shape[0]
        if len(exclude) != query_embeds.shape[0]:
            raise ValueError(f"`exclude` has {len(exclude)} entries for {query_embeds.shape[0]} queries.")
        queries = F.normalize(query_embeds.float().cpu(), dim=-1)
        wanted = min(k, len(self))
        fetch = min(wanted + (1 if any(path is not None for path in exclude) else 0), len(self))
        if self._backend is not None and exact is not True:
            scores, indices = self._backend.search(queries, fetch)
        else:
            scores, indices = self._exact_search(queries, fetch)
        scores, indices = torch.as_tensor(scores).tolist(), torch.as_tensor(indices).tolist()
        found = sorted({index for row in indices for index in row if index >= 0})
        rows = dict(zip(found, self.metadata(found)))
        results = []
        for row_scores, row_indices, left_out in zip(scores, indices, exclude):
            hits = []
            for score, index in zip(row_scores, row_indices):
                # faiss pads with -1 when it finds fewer than k
                if index < 0 or rows[index]["id"] == left_out:
                    continue
                if len(hits) == wanted:
                    break
                metadata = rows[index]
                path = metadata["id"]
                stored = metadata.get("path")
                absolute = str(self.root / stored) if stored and _stays_inside(stored) else ""
                hits.append(SearchHit(path, float(score), len(hits) + 1, absolute, metadata))
            results.append(hits)
        return results

    def _exact_search(self, queries: torch.Tensor, k: int):
        if self._table is not None and self._table.nbytes > IN_RAM_EXACT_BYTES:
            return self._table.search(queries, k)  # larger than RAM allows: a memory-mapped block scan
        if self._exact is None:
            if self._table is not None:  # in RAM in the stored dtype (float16 halves the bytes each scan reads)
                self._exact = ExactIndex(self._table.to_tensor(keep_dtype=True), dtype=self._table_torch_dtype())
            else:
                self._exact = ExactIndex(self._normalized)
        return self._exact.search(queries, k)

    def _table_torch_dtype(self) -> torch.dtype:
        return torch.float16 if self.info.get("dtype") == "float16" else torch.float32


def _stays_inside(relative: Any) -> bool:
    if not isinstance(relative, str):
        return False
    path = Path(relative)
    return not path.is_absolute() and ".." not in path.parts


def _check_partial_folder(partial: Path, protected: dict) -> None:
    """An existing `INDEX.partial` must hold only a build's chunks (and be no input) before a build uses or removes it."""
    kind = PARTIAL_FOLDER_V2 if (partial / BUILD_NAME).exists() else PARTIAL_FOLDER
    check_replaceable(partial, kind, protected, argument="output")
