"""Run any retrieval model and method on any benchmark: embed the images once (cached), encode queries, score."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..families import method_spec
from ..retrieval.models import RetrievalModel
from ..retrieval.query import ComposedQuery, embed_queries
from ..utils import atomic_file
from ..utils.units import ProcessGroup, UnitWork, run_units
from .base import Benchmark, CIRQuery, EmbeddingTable

__all__ = ["EvaluationResult", "default_cache_dir", "embed_benchmark_images", "encode_benchmark_queries", "evaluate"]


def default_cache_dir() -> Path:
    """Where gallery embeddings are cached: `$HF_CIR_CACHE`, else `$HF_HOME/hf_cir/embeddings`."""
    if os.environ.get("HF_CIR_CACHE"):
        return Path(os.environ["HF_CIR_CACHE"])
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "hf_cir" / "embeddings"


@dataclass
class EvaluationResult:
    """What one evaluation produced: metric values (percent), and the files written."""

    benchmark: str
    split: str
    method: str
    model: str
    metrics: dict[str, float]
    num_queries: int
    num_images: int
    computed_images: int = 0
    files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        """The metrics as a two-column text table."""
        header = f"{self.benchmark} ({self.split}), method {self.method}, model {self.model}"
        if not self.metrics:
            return header + "\n  (no public labels: see the submission files)"
        width = max(len(name) for name in self.metrics)
        rows = [f"  {name.ljust(width)}  {value:7.2f}" for name, value in self.metrics.items()]
        return "\n".join([header, *rows])


@torch.no_grad()
def encode_benchmark_queries(
    model: RetrievalModel,
    queries: list[CIRQuery],
    images: EmbeddingTable,
    method: str,
    batch_size: int = 32,
    show_progress: bool = True,
    benchmark: Benchmark | None = None,
) -> torch.Tensor:
    """One L2-normalised feature per query; a query with several texts gets the normalised mean of their features.

    Reference images come from `images` (the raw embeddings computed for the gallery), so no image is encoded twice;
    a method that composes from the reference image itself (`MethodSpec.reference_pixels`, MagicLens) gets the image,
    loaded once per batch by `benchmark.load_image`. With `benchmark`, the texts are `benchmark.query_texts(query,
    method)` (the method's own query texts where it defines them), else each query's `texts`.
    """
    from tqdm.auto import tqdm

    method = model.check_method(method)
    spec = method_spec(method)
    items = [
        (row, text, query.reference_id)
        for row, query in enumerate(queries)
        for text in (benchmark.query_texts(query, method) if benchmark is not None else query.texts)
    ]
    if not items:
        raise ValueError("The benchmark has no queries.")
    pixels = spec.reference_pixels and spec.uses_reference
    if pixels and benchmark is None:
        raise ValueError(f"Method {method!r} composes from the reference images: pass the `benchmark` to load them.")
    takes_text = spec.text != "refused"
    sums = torch.zeros(len(queries), model.embedding_dim)
    for start in tqdm(range(0, len(items), batch_size), desc="Encoding queries", disable=not show_progress):
        batch = items[start : start + batch_size]
        references = [reference for _, _, reference in batch if reference is not None]
        if pixels:  # each reference image of the batch opened once (a query's texts share it)
            opened = {reference: benchmark.load_image(reference) for reference in dict.fromkeys(references)}
            stored = iter([opened[reference] for reference in references])
        else:
            stored = iter(images.rows(references)) if references else iter(())
        # The same composed queries, checks and model calls as `hf-cir search` and the app (`hf_cir.retrieval.query`).
        composed = [
            ComposedQuery(
                text=text if takes_text else None,
                image=next(stored) if reference and pixels else None,
                image_embeds=next(stored) if reference and not pixels else None,
            )
            for _, text, reference in batch
        ]
        features = F.normalize(embed_queries(model, composed, method, batch_size=batch_size), dim=-1)
        sums.index_add_(0, torch.tensor([row for row, _, _ in batch]), features)
    return F.normalize(sums, dim=-1)


CACHE_UNIT_SIZE = 1024


class _CachedGallery(UnitWork):
    """The benchmark's images through the embedding engine: units of `CACHE_UNIT_SIZE` images in `image_ids()` order,
    each cached as `shard-{u:06d}.safetensors` (unnormalised float32 embeddings, their ids and the model's
    fingerprint; the layout of earlier caches, whose shards are reused when they hold exactly a unit's ids) when there
    is a cache folder. An unreadable image is an error (a benchmark's gallery is complete)."""

    def __init__(self, model: RetrievalModel, benchmark: Benchmark, work_dir: Path | None, fingerprint: str):
        self.model, self.benchmark, self.work_dir, self.fingerprint = model, benchmark, work_dir, fingerprint
        self.ids = benchmark.image_ids()

    def path(self, unit: int) -> Path:
        return self.work_dir / f"shard-{unit:06d}.safetensors"

    def rows(self, unit: int) -> list[str]:
        return self.ids[unit * CACHE_UNIT_SIZE : (unit + 1) * CACHE_UNIT_SIZE]

    def num_units(self) -> int:
        return -(-len(self.ids) // CACHE_UNIT_SIZE)

    def iter_units(self, wanted):
        for unit in range(self.num_units()):
            yield unit, (self.rows(unit) if wanted(unit) else None)

    def committed(self, unit: int) -> dict | None:
        from safetensors import SafetensorError, safe_open

        if self.work_dir is None or not self.path(unit).is_file():
            return None
        try:
            with safe_open(str(self.path(unit)), framework="pt") as handle:
                metadata = handle.metadata() or {}
                embeddings = handle.get_tensor("embeddings")
            ids = json.loads(metadata["ids"])
        except (SafetensorError, OSError, KeyError, ValueError):
            return None  # unreadable or half-written elsewhere: computed again
        if metadata.get("fingerprint") != self.fingerprint or ids != self.rows(unit) or len(embeddings) != len(ids):
            return None
        return {"embeddings": embeddings}

    def preparer(self):
        return self.benchmark.load_image  # the benchmark's annotations and paths, not the model

    def compute(self, unit, rows, batch):
        for _, _, error in batch:
            if error is not None:
                raise error
        images = [image for _, image, _ in batch]
        embeddings = self.model.encode_images(images).detach().float().cpu()
        if embeddings.shape[0] != len(images):
            raise ValueError(f"The encoder returned {embeddings.shape[0]} embeddings for {len(images)} images.")
        return embeddings

    def write(self, unit, rows, results) -> dict:
        from safetensors.torch import save

        embeddings = torch.cat(results)
        if self.work_dir is not None:
            data = save(
                {"embeddings": embeddings.contiguous()},
                metadata={"ids": json.dumps(rows), "fingerprint": self.fingerprint},
            )
            self.work_dir.mkdir(parents=True, exist_ok=True)
            with atomic_file(self.path(unit), "wb") as handle:
                handle.write(data)
        return {"embeddings": embeddings}


def embed_benchmark_images(
    model: RetrievalModel,
    benchmark: Benchmark,
    work_dir: str | os.PathLike | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
    show_progress: bool = True,
) -> tuple[EmbeddingTable, int]:
    """The unnormalised embeddings of every benchmark image, through the embedding engine, cached in `work_dir`.

    Returns:
        `(table of image_ids() -> embeddings, images embedded by this call)`.
    """
    work = _CachedGallery(
        model, benchmark, Path(work_dir) if work_dir is not None else None, model.gallery_fingerprint()
    )
    run = run_units(
        work,
        ProcessGroup.single(),  # every process of a launched run evaluates the whole benchmark
        batch_size=batch_size,
        num_workers=num_workers,
        show_progress=show_progress,
        description=f"Embedding {benchmark.name} images",
        progress_unit="img",
    )
    records = {**run.reused, **run.written}
    chunks = [records[unit]["embeddings"] for unit in range(run.num_units)]
    embeddings = torch.cat(chunks) if chunks else torch.empty(0, 0)
    return EmbeddingTable(list(work.ids), embeddings), run.rows


def _write_json(path: Path, data: Any) -> None:
    with atomic_file(path, "w") as handle:
        json.dump(data, handle, indent=1)


def evaluate(
    model: RetrievalModel,
    benchmark: Benchmark,
    method: str | None = None,
    batch_size: int = 32,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    show_progress: bool = True,
    output_dir: str | os.PathLike | None = None,
    num_workers: int = 0,
) -> EvaluationResult:
    """Evaluate `model` with `method` on `benchmark`.

    The benchmark's images are embedded in batches on the model's device and cached under `cache_dir` (keyed by
    the benchmark's images and the model's image encoder), so a second evaluation (another method, another split of
    the same images) embeds nothing. With `output_dir`, the results JSON and, on a test split, the benchmark's
    submission files are written there.

    Args:
        model: From [`load_retrieval_model`].
        benchmark: From [`get_benchmark`].
        method: `lincir`, `searle`, `pic2word`, `compodiff`, `image`, `text` or `sum` (default: the model's own).
        batch_size: Images (and texts) per forward pass.
        cache_dir: Embedding cache (default: [`default_cache_dir`]).
        use_cache: Set `False` to neither read nor write the cache.
        show_progress: Progress bars.
        output_dir: Where to write `results_{benchmark}_{split}_{method}.json` and, on a test split, the
            benchmark's submission files, named per method (`cirr_test1_recall_{method}.json`, ...).
        num_workers: DataLoader workers that open the benchmark's images.

    Example:

    ```python
    >>> from hf_cir.evaluation import evaluate, get_benchmark
    >>> from hf_cir.retrieval import load_retrieval_model
    >>> model = load_retrieval_model("path/to/lincir-model")  # doctest: +SKIP
    >>> result = evaluate(model, get_benchmark("cirr", "data/CIRR", split="val"))  # doctest: +SKIP
    >>> print(result.table())  # doctest: +SKIP
    ```
    """
    method = model.check_method(method)
    image_ids = benchmark.image_ids()
    fingerprint = model.gallery_fingerprint()
    work_dir = None
    if use_cache:
        key = hashlib.sha256(benchmark.cache_key().encode()).hexdigest()[:16]
        work_dir = (
            Path(cache_dir if cache_dir is not None else default_cache_dir()) / f"{benchmark.name}-{key}-{fingerprint}"
        )
    images, computed = embed_benchmark_images(model, benchmark, work_dir, batch_size, num_workers, show_progress)
    queries = benchmark.queries()
    query_features = encode_benchmark_queries(
        model, queries, images, method, batch_size, show_progress, benchmark=benchmark
    )
    normalized = EmbeddingTable(images.ids, F.normalize(images.features, dim=-1))
    metrics = benchmark.compute_metrics(query_features, normalized) if benchmark.has_labels else {}
    result = EvaluationResult(
        benchmark=benchmark.name,
        split=benchmark.split,
        method=method,
        model=model.name_or_path,
        metrics=metrics,
        num_queries=len(queries),
        num_images=len(image_ids),
        computed_images=computed,
    )
    if output_dir is not None:
        output_dir = Path(output_dir)
        if not benchmark.has_labels or benchmark.split == "test":
            try:
                submissions = benchmark.submission_files(query_features, normalized)
            except NotImplementedError:
                submissions = {}
            for name, content in submissions.items():
                # One file per method: several methods in one output folder must not overwrite each other's.
                path = output_dir / f"{Path(name).stem}_{method}{Path(name).suffix}"
                _write_json(path, content)
                result.files[name] = str(path)
        name = f"results_{benchmark.name}_{benchmark.split}_{method}.json"
        result.files["results"] = str(output_dir / name)
        _write_json(output_dir / name, result.to_dict())
    return result
