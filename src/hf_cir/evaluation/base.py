"""The interface every composed image retrieval benchmark implements.

A benchmark is data plus a metric. It names the images it needs (`image_ids`, `load_image`), the queries
(`queries`), and turns query features and image features into metric values (`compute_metrics`) or
test-server submission files (`submission_files`). Embedding the images and the queries is the job of
`hf_cir.evaluation.evaluate`, the same for every benchmark and every method, so a new benchmark (the toy
world's `hf_cir.toy.benchmark`, for instance) only has to implement this class.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from PIL import Image

__all__ = ["Benchmark", "CIRQuery", "EmbeddingTable", "read_json"]


@dataclass
class CIRQuery:
    """One composed query of a benchmark.

    Args:
        query_id: The benchmark's id of the query (CIRR's pairid, CIRCO's id, a running number elsewhere).
        reference_id: Image id of the reference image, or `None` for a text-only query.
        texts: The modification text. Several entries are several phrasings of the same query: each is encoded
            and the L2-normalised features are averaged, then normalised again (FashionIQ's caption pair in both
            orders, as in the LinCIR and SEARLE evaluation).
        target_ids: Ground-truth image ids (the annotated target first); empty on a test split without labels.
        gallery_ids: The query's own gallery (GeneCIS), or `None` when the query searches the shared gallery.
        subset_ids: The query's image set (CIRR's `img_set.members`), used by Recall_subset.
        category: A sub-benchmark the query belongs to (FashionIQ's dress, shirt or toptee).
        fields: The annotation's own texts (CIRCO's `relative_caption` and `shared_concept`, FashionIQ's `captions`),
            from which a method that defines its own query texts on this benchmark builds them
            (`hf_cir.families.MethodSpec.query_texts`, read by [`Benchmark.query_texts`]).

    Example:

    ```python
    >>> from hf_cir.evaluation import CIRQuery
    >>> CIRQuery("0", "ref.png", ["is red"], target_ids=["target.png"]).texts
    ['is red']
    ```
    """

    query_id: str
    reference_id: str | None
    texts: list[str]
    target_ids: list[str] = field(default_factory=list)
    gallery_ids: list[str] | None = None
    subset_ids: list[str] | None = None
    category: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)


class EmbeddingTable:
    """Image features addressed by image id: a `[N, D]` tensor and the id of each row.

    Example:

    ```python
    >>> import torch
    >>> from hf_cir.evaluation import EmbeddingTable
    >>> table = EmbeddingTable(["a", "b"], torch.eye(2))
    >>> table.rows(["b", "a"]).tolist()
    [[0.0, 1.0], [1.0, 0.0]]
    ```
    """

    def __init__(self, ids: Sequence[str], features: torch.Tensor):
        if features.ndim != 2 or features.shape[0] != len(ids):
            raise ValueError(
                f"Expected features of shape [{len(ids)}, D] for {len(ids)} ids, got {tuple(features.shape)}."
            )
        self.ids = list(ids)
        self.features = features
        self.position = {image_id: row for row, image_id in enumerate(self.ids)}
        if len(self.position) != len(self.ids):
            raise ValueError("Image ids must be unique.")

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, image_id: str) -> bool:
        return image_id in self.position

    def indices(self, ids: Sequence[str]) -> torch.Tensor:
        missing = [image_id for image_id in ids if image_id not in self.position]
        if missing:
            raise KeyError(f"No features for image id(s): {', '.join(map(str, missing[:5]))}")
        return torch.tensor([self.position[image_id] for image_id in ids], dtype=torch.long)

    def rows(self, ids: Sequence[str]) -> torch.Tensor:
        return self.features[self.indices(ids)]


def read_json(path: Path, benchmark: str) -> Any:
    """Read a benchmark annotation file; a missing or malformed file is an error that names it."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{benchmark}: missing file {path}. The data directory is not in the {benchmark} layout "
            f"(see `hf-cir evaluate --help`)."
        )
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise ValueError(f"{benchmark}: {path} is not valid JSON ({error}).") from error


def per_query_gallery_image_ids(queries: list[CIRQuery]) -> list[str]:
    """The references and per-query galleries of `queries`, each image once, in first-seen order (for benchmarks
    whose queries each search their own gallery, like GeneCIS)."""
    ids: dict[str, None] = {}
    for query in queries:
        ids[query.reference_id] = None
        ids.update(dict.fromkeys(query.gallery_ids or ()))
    return list(ids)


class Benchmark(ABC):
    """Base class of composed image retrieval benchmarks.

    Subclasses set `name`, `splits` and `metric_names`, and implement `image_ids`, `load_image`, `queries` and
    `compute_metrics` (and `submission_files` when the benchmark has a test server). The constructor checks the
    on-disk layout so that a wrong `data_dir` fails at once with the name of the missing file.

    Features given to `compute_metrics` are L2-normalised; higher dot product means more similar. Ties are broken
    pessimistically: an image scored exactly as high as a ground truth ranks before it, so a method that scores
    everything the same gets no credit.

    Example:

    ```python
    >>> from hf_cir.evaluation import get_benchmark
    >>> benchmark = get_benchmark("cirr", "path/to/CIRR", split="val")  # doctest: +SKIP
    >>> len(benchmark.queries())  # doctest: +SKIP
    4181
    ```
    """

    name: ClassVar[str] = ""
    splits: ClassVar[tuple[str, ...]] = ("val", "test")
    metric_names: ClassVar[tuple[str, ...]] = ()
    # The name of the dataset on the Hub / in papers, used in model cards.
    display_name: ClassVar[str] = ""
    # Whether the benchmark reads a data directory (the toy world renders its own).
    needs_data_dir: ClassVar[bool] = True
    # Whether hf-cir ships models trained for this benchmark (the toy world's): `hf-cir evaluate` without `--model`
    # then prints the table of every shipped model and method.
    ships_models: ClassVar[bool] = False

    def __init__(self, data_dir: str | os.PathLike | None = None, split: str = "val"):
        if split not in self.splits:
            raise ValueError(f"{self.name}: unknown split {split!r}; expected one of {', '.join(self.splits)}.")
        self.split = split
        self.data_dir = Path(data_dir) if data_dir is not None else None
        if self.data_dir is not None and not self.data_dir.is_dir():
            raise FileNotFoundError(f"{self.name}: data directory {self.data_dir} does not exist.")

    @property
    def has_labels(self) -> bool:
        """Whether the split's ground truths are public (metrics can be computed here)."""
        return self.split != "test"

    @abstractmethod
    def image_ids(self) -> list[str]:
        """Every image the evaluation embeds (galleries and references), each once, in a fixed order."""

    @abstractmethod
    def load_image(self, image_id: str) -> Image.Image:
        """The RGB image with this id (cropped, for benchmarks that crop)."""

    @abstractmethod
    def queries(self) -> list[CIRQuery]:
        """The split's queries."""

    def query_texts(self, query: CIRQuery, method: str) -> list[str]:
        """The texts `method` encodes for `query`: the method's own template for this benchmark, filled with the
        query's annotation `fields`, when the family registry gives one (`MethodSpec.query_texts`: MagicLens's
        evaluation asks CIRCO for `find {shared_concept} but {relative_caption}`), else the query's `texts`."""
        from ..families import method_spec

        template = method_spec(method).query_text_template(self.name)
        if template is None:
            return list(query.texts)
        try:
            return [template.format(**query.fields)]
        except (KeyError, IndexError, AttributeError) as error:
            raise ValueError(
                f"{self.name}: query {query.query_id} has no {error} for method {method!r}'s query text {template!r}; "
                f"its annotation gives {sorted(query.fields) or 'no fields'}."
            ) from None

    @abstractmethod
    def compute_metrics(self, query_features: torch.Tensor, images: EmbeddingTable) -> dict[str, float]:
        """Metric values (percentages) from one feature row per query (in `queries()` order) and image features."""

    def submission_files(self, query_features: torch.Tensor, images: EmbeddingTable) -> dict[str, Any]:
        """Test-server submission files, as `{file name: JSON-serialisable object}`."""
        raise NotImplementedError(f"{self.name} has no test-server submission format.")

    def cache_key(self) -> str:
        """A string that identifies the images this benchmark embeds (for the embedding cache)."""
        root = str(self.data_dir.resolve()) if self.data_dir is not None else ""
        return f"{self.name}|{self.split}|{root}"
