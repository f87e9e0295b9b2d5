"""The toy benchmark: held-out composed queries of the toy world, each with its own gallery of hard negatives.

`hf-cir evaluate --benchmark toy` runs it; no data directory is needed, everything is rendered from seeds.
Each query's gallery (101 images by default) holds the target, its 20 one-attribute neighbours (among them the
reference when one attribute changes), the reference, and random other combinations, each once. Queries of the
`val` split have held-out targets, combinations that no toy model saw in training; the `train` split draws them
from the training combinations (a sanity check). Metrics: Recall@{1,5,10} in percent, ties counted against the
target.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from PIL import Image

from ..evaluation.base import Benchmark, CIRQuery, EmbeddingTable, per_query_gallery_image_ids
from ..evaluation.metrics import recall_at_k, target_ranks
from ..evaluation.registry import register_benchmark
from .world import NUM_NEIGHBOURS, ToyAttributes, ToyWorld

__all__ = ["ToyBenchmark"]

_KS = (1, 5, 10)
_SPLITS = {"val": "held_out", "train": "train"}


@register_benchmark
class ToyBenchmark(Benchmark):
    """Recall@{1,5,10} on the toy world's composed queries.

    Args:
        data_dir: Unused (the toy world is rendered, not read); must be `None`.
        split (`str`, *optional*, defaults to `"val"`): `"val"` for held-out targets, `"train"` for targets among
            the training combinations.
        seed (`int`, *optional*, defaults to 0): Draws the queries, the galleries and the renderings.
        num_queries (`int`, *optional*, defaults to 600): Number of queries.
        gallery_size (`int`, *optional*, defaults to 101): Images in each query's gallery.
        world_seed (`int`, *optional*, defaults to 0): The world the models were trained on (fixes the held-out
            combinations); keep the default for the shipped toy checkpoints.

    Example:

    ```python
    >>> from hf_cir.toy.benchmark import ToyBenchmark
    >>> benchmark = ToyBenchmark(num_queries=4)
    >>> query = benchmark.queries()[0]
    >>> len(query.gallery_ids), query.target_ids[0] in query.gallery_ids
    (101, True)
    ```
    """

    name = "toy"
    display_name = "hf-cir toy world"
    needs_data_dir = False
    ships_models = True
    splits = tuple(_SPLITS)
    metric_names = tuple(f"recall@{k}" for k in _KS)

    def __init__(
        self,
        data_dir: str | os.PathLike | None = None,
        split: str = "val",
        seed: int = 0,
        num_queries: int = 600,
        gallery_size: int = 101,
        world_seed: int = 0,
    ):
        if data_dir is not None:
            raise ValueError(
                f"toy: the toy benchmark is rendered from seeds and takes no data directory (got {data_dir})."
            )
        super().__init__(None, split)
        if num_queries < 1:
            raise ValueError(f"toy: `num_queries` must be at least 1; got {num_queries}.")
        self.seed = seed
        self.num_queries = num_queries
        self.gallery_size = gallery_size
        self.world = ToyWorld(seed=world_seed)
        self._toy_queries = self.world.queries(_SPLITS[split], num_queries, gallery_size, seed=seed)
        self._queries = [
            CIRQuery(
                query_id=str(index),
                reference_id=self._reference_id(query.triplet.reference),
                texts=[query.triplet.text],
                target_ids=[self._gallery_id(query.triplet.target)],
                gallery_ids=[self._gallery_id(member) for member in query.gallery],
                category=f"{len(query.triplet.changed)}-change",
            )
            for index, query in enumerate(self._toy_queries)
        ]

    # Gallery images and reference images are different renderings (evaluation stream, never seen in training):
    # the reference's own gallery copy is a near duplicate, not the same pixels.
    def _gallery_id(self, attributes: ToyAttributes) -> str:
        return f"gallery/{attributes.index}"

    def _reference_id(self, attributes: ToyAttributes) -> str:
        return f"reference/{attributes.index}"

    @property
    def has_labels(self) -> bool:
        return True

    @property
    def toy_queries(self):
        """The underlying `ToyQuery` objects (attributes of reference, target and gallery), in query order."""
        return self._toy_queries

    def image_ids(self) -> list[str]:
        return per_query_gallery_image_ids(self._queries)

    def load_image(self, image_id: str) -> Image.Image:
        kind, _, index = image_id.partition("/")
        if kind not in ("gallery", "reference") or not index.isdigit() or int(index) >= len(self.world.combinations):
            raise KeyError(f"toy: unknown image id {image_id!r}; expected 'gallery/N' or 'reference/N'.")
        variant = 2 * self.seed + (kind == "reference")
        return self.world.render(self.world.combinations[int(index)], variant, stream="eval")

    def attributes(self, image_id: str) -> ToyAttributes:
        """The attribute combination an image id shows."""
        return self.world.combinations[int(image_id.partition("/")[2])]

    def queries(self) -> list[CIRQuery]:
        return self._queries

    def compute_metrics(self, query_features: torch.Tensor, images: EmbeddingTable) -> dict[str, float]:
        if query_features.shape[0] != len(self._queries):
            raise ValueError(f"toy: got {query_features.shape[0]} query features for {len(self._queries)} queries.")
        ranks = self.target_ranks(query_features, images)
        metrics = {f"recall@{k}": value for k, value in recall_at_k(ranks, _KS).items()}
        for category in sorted({q.category for q in self._queries}):
            rows = torch.tensor([q.category == category for q in self._queries])
            for k, value in recall_at_k(ranks[rows], _KS).items():
                metrics[f"{category}_recall@{k}"] = value
        return metrics

    def target_ranks(self, query_features: torch.Tensor, images: EmbeddingTable) -> torch.Tensor:
        """0-based rank of each query's target in its gallery (ties count against the target)."""
        query_features = F.normalize(query_features.float(), dim=-1)
        gallery = torch.stack([images.indices(q.gallery_ids) for q in self._queries])  # [Q, G]
        features = F.normalize(images.features.float(), dim=-1)[gallery]  # [Q, G, D]
        scores = torch.einsum("qd,qgd->qg", query_features, features)
        targets = torch.tensor([q.gallery_ids.index(q.target_ids[0]) for q in self._queries])
        return target_ranks(scores, targets)

    def cache_key(self) -> str:
        return (
            f"toy|{self.split}|world={self.world.seed}|seed={self.seed}|queries={self.num_queries}"
            f"|gallery={self.gallery_size}|neighbours={NUM_NEIGHBOURS}"
        )


# ---------------------------------------------------------------------------------------------------------------------
# Every method on the shipped (or freshly built) toy checkpoints
# ---------------------------------------------------------------------------------------------------------------------

# Rows of the toy table: (label, model folder name or "untrained", method).
TOY_METHODS: tuple[tuple[str, str, str], ...] = (
    ("image only", "lincir", "image"),
    ("text only", "lincir", "text"),
    ("sum of image and text", "lincir", "sum"),
    ("LinCIR, untrained phi", "untrained", "lincir"),
    ("LinCIR (trained)", "lincir", "lincir"),
    ("CompoDiff", "compodiff", "compodiff"),
)


# Texts kept by the toy CompoDiff's text-encoding cache: the toy benchmark repeats its modification texts.
TOY_TEXT_CACHE_SIZE = 1024


def load_toy_models(
    checkpoints_dir: str | os.PathLike | None = None,
    device: str | None = "cpu",
    compodiff_options: dict | None = None,
) -> dict:
    """The toy retrieval models by name: `lincir`, `untrained` (LinCIR around the toy CLIP, phi seeded with 0) and
    `compodiff` (when its folder exists). Folders default to the checkpoints shipped in `hf_cir/toy/checkpoints`.

    CompoDiff samples with its checkpoint's own defaults (`model_index.json`). `compodiff_options` are keyword
    arguments of `load_retrieval_model` for the CompoDiff model, on top of a text-encoding cache: sampling settings (`num_inference_steps`,
    `num_samples_per_prompt`, guidance scales, `seed`), `preset`, `scheduler`, `precision`, `dtype`,
    `text_cache_size`.

    Example:

    ```python
    >>> from hf_cir.toy.benchmark import load_toy_models
    >>> sorted(load_toy_models())  # doctest: +SKIP
    ['compodiff', 'lincir', 'untrained']
    ```
    """
    from pathlib import Path

    from ..models.lincir import LinCIRModel, LinCIRProcessor
    from ..retrieval import LinCIRRetrievalModel, load_retrieval_model
    from .checkpoints import default_checkpoints_dir

    root = Path(checkpoints_dir) if checkpoints_dir is not None else default_checkpoints_dir()
    models = {}
    for name in ("clip", "lincir"):
        if not (root / name).is_dir():
            raise FileNotFoundError(
                f"No toy {name} checkpoint in {root}: run `make toy-models` (training/toy/build_toy_models.py)."
            )
    models["lincir"] = load_retrieval_model(root / "lincir", device=device)
    torch.manual_seed(0)
    untrained = LinCIRModel.from_clip(root / "clip")
    processor = LinCIRProcessor.from_pretrained(root / "clip")
    models["untrained"] = LinCIRRetrievalModel(
        untrained, processor, name_or_path="LinCIR, untrained phi", device=device
    )
    if (root / "compodiff").is_dir():
        options = {"text_cache_size": TOY_TEXT_CACHE_SIZE, **(compodiff_options or {})}
        models["compodiff"] = load_retrieval_model(root / "compodiff", device=device, **options)
    return models


def evaluate_toy_models(
    checkpoints_dir: str | os.PathLike | None = None,
    seeds: tuple[int, ...] = (0, 1),
    num_queries: int = 600,
    gallery_size: int = 101,
    models: dict | None = None,
    device: str | None = "cpu",
    compodiff_options: dict | None = None,
) -> dict[str, dict[int, dict[str, float]]]:
    """Recall@{1,5,10} of every row of `TOY_METHODS` on the held-out toy queries, for each benchmark seed.

    `compodiff_options` set the CompoDiff row's sampling and precision (see [`load_toy_models`]); the other rows
    do not sample and do not change with them.

    Returns:
        `{row label: {seed: {"recall@1": ..., "recall@5": ..., "recall@10": ...}}}` in percent. Rows whose
        checkpoint is missing (e.g. CompoDiff before it is trained) are left out.

    Example:

    ```python
    >>> from hf_cir.toy.benchmark import evaluate_toy_models, format_toy_table
    >>> print(format_toy_table(evaluate_toy_models(seeds=(0,), num_queries=50)))  # doctest: +SKIP
    ```
    """
    import tempfile

    from ..evaluation.evaluate import evaluate

    if models is not None and compodiff_options:
        raise ValueError("Pass `compodiff_options` or ready `models`, not both: the options apply at loading.")
    models = models if models is not None else load_toy_models(checkpoints_dir, device, compodiff_options)
    results: dict[str, dict[int, dict[str, float]]] = {}
    # A private embedding cache: models sharing an image tower (trained and untrained LinCIR) embed each image once.
    with tempfile.TemporaryDirectory(prefix="hf-cir-toy-") as cache_dir:
        for seed in seeds:
            benchmark = ToyBenchmark(seed=seed, num_queries=num_queries, gallery_size=gallery_size)
            for label, model_name, method in TOY_METHODS:
                if model_name not in models:
                    continue
                result = evaluate(
                    models[model_name],
                    benchmark,
                    method=method,
                    batch_size=256,
                    cache_dir=cache_dir,
                    show_progress=False,
                )
                metrics = {name: result.metrics[name] for name in ToyBenchmark.metric_names}
                results.setdefault(label, {})[seed] = metrics
    return results


def format_toy_table(results: dict[str, dict[int, dict[str, float]]]) -> str:
    """A Markdown table: one row per method, Recall@{1,5,10} per seed."""
    seeds = sorted({seed for per_seed in results.values() for seed in per_seed})
    header = "| method | " + " | ".join(f"R@{k} (seed {s})" for s in seeds for k in _KS) + " |"
    rule = "| --- |" + " ---: |" * (len(seeds) * len(_KS))
    rows = [
        f"| {label} | "
        + " | ".join(f"{per_seed[s][f'recall@{k}']:.1f}" if s in per_seed else "-" for s in seeds for k in _KS)
        + " |"
        for label, per_seed in results.items()
    ]
    return "\n".join([header, rule, *rows])
