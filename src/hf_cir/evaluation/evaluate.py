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

from ..retrieval.embeddings import embed_images
from ..retrieval.models import RetrievalModel
from ..utils import atomic_file
from .base import Benchmark, CIRQuery, EmbeddingTable

__all__ = ["EvaluationResult", "default_cache_dir", "encode_benchmark_queries", "evaluate"]


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
) -> torch.Tensor:
    """One L2-normalised feature per query; a query with several texts gets the normalised mean of their features.

    Reference images come from `images` (the raw embeddings computed for the gallery), so no image is encoded twice.
    """
    from tqdm.auto import tqdm

    items = [(row, text, query.reference_id) for row, query in enumerate(queries) for text in query.texts]
    if not items:
        raise ValueError("The benchmark has no queries.")
    sums = torch.zeros(len(queries), model.embedding_dim)
    for start in tqdm(range(0, len(items), batch_size), desc="Encoding queries", disable=not show_progress):
        batch = items[start : start + batch_size]
        with_image = [item for item in batch if item[2] is not None]
        without_image = [item for item in batch if item[2] is None]
        for group, has_image in ((with_image, True), (without_image, False)):
            if not group:
                continue
            texts = [text for _, text, _ in group]
            embeds = images.rows([reference for _, _, reference in group]) if has_image else None
            features = F.normalize(model.encode_queries(texts, image_embeds=embeds, method=method), dim=-1)
            sums.index_add_(0, torch.tensor([row for row, _, _ in group]), features)
    return F.normalize(sums, dim=-1)


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
    embedded = embed_images(
        model.encode_images,
        image_ids,
        benchmark.load_image,
        work_dir=work_dir,
        fingerprint=fingerprint,
        batch_size=batch_size,
        show_progress=show_progress,
        skip_errors=False,
        description=f"Embedding {benchmark.name} images",
    )
    images = EmbeddingTable(embedded.ids, embedded.embeddings)
    queries = benchmark.queries()
    query_features = encode_benchmark_queries(model, queries, images, method, batch_size, show_progress)
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
        computed_images=embedded.computed,
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
