"""FashionIQ (Wu et al., "Fashion IQ: A New Dataset Towards Retrieving Images by Natural Language Feedback", CVPR 2021).

On-disk layout (the official one, https://github.com/XiaoxiaoGuo/fashion-iq)::

    DATA_DIR/
        captions/cap.{dress,shirt,toptee}.val.json      # candidate, target, captions (two per pair)
        image_splits/split.{dress,shirt,toptee}.val.json  # the category's gallery (image names)
        images/{name}.jpg

Protocol of the LinCIR and SEARLE evaluations: the two captions are joined as "{c1} and {c2}" (each stripped of
surrounding ".?, "), the query is also encoded with the captions in reverse order, and the query feature is the
normalised mean of the two normalised features. A method whose own evaluation joins them otherwise says so in the
family registry (`MethodSpec.query_texts`: MagicLens's `"{captions[0]} and {captions[1]}"`, unstripped, one order).
Recall@{10,50} within each category's gallery, then the mean over categories. Only the validation split has public
targets.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from ..utils import load_image
from .annotations import AnnotationEntry, expect_list, relative_file_name
from .base import Benchmark, CIRQuery, EmbeddingTable, read_json
from .metrics import recall_at_k, target_ranks
from .registry import register_benchmark

__all__ = ["FashionIQBenchmark", "join_fashioniq_captions"]

CATEGORIES = ("dress", "shirt", "toptee")
_KS = (10, 50)


def join_fashioniq_captions(first: str, second: str) -> str:
    """Join a FashionIQ caption pair the way the LinCIR/SEARLE evaluation does.

    Example:

    ```python
    >>> from hf_cir.evaluation.fashioniq import join_fashioniq_captions
    >>> join_fashioniq_captions("is red.", " has long sleeves?")
    'is red and has long sleeves'
    ```
    """
    return f"{first.strip('.?, ')} and {second.strip('.?, ')}"


@register_benchmark
class FashionIQBenchmark(Benchmark):
    """FashionIQ validation Recall@{10,50}, per category and averaged.

    Example:

    ```python
    >>> from hf_cir.evaluation import FashionIQBenchmark
    >>> benchmark = FashionIQBenchmark("data/FashionIQ", categories=["dress"])  # doctest: +SKIP
    >>> FashionIQBenchmark.metric_names[-2:]
    ('average_recall@10', 'average_recall@50')
    ```
    """

    name = "fashioniq"
    display_name = "FashionIQ"
    splits = ("val",)
    ks = _KS
    metric_names = tuple(f"{c}_recall@{k}" for c in CATEGORIES for k in _KS) + tuple(
        f"average_recall@{k}" for k in _KS
    )

    def __init__(self, data_dir: str | os.PathLike, split: str = "val", categories: Sequence[str] = CATEGORIES):
        super().__init__(data_dir, split)
        if self.data_dir is None:
            raise ValueError("fashioniq: a data directory is required.")
        categories = [categories] if isinstance(categories, str) else list(categories)
        unknown = [category for category in categories if category not in CATEGORIES]
        if unknown or not categories:
            raise ValueError(f"fashioniq: unknown categories {unknown}; expected some of {', '.join(CATEGORIES)}.")
        self.categories = tuple(categories)
        self._galleries: dict[str, list[str]] = {}
        self._queries: list[CIRQuery] = []
        for category in self.categories:
            split_file = self.data_dir / "image_splits" / f"split.{category}.{split}.json"
            names = expect_list(read_json(split_file, "fashioniq"), split_file)
            self._galleries[category] = list(
                dict.fromkeys(relative_file_name(name, f"{split_file.name} entry {n}") for n, name in enumerate(names))
            )
            captions_file = self.data_dir / "captions" / f"cap.{category}.{split}.json"
            triplets = expect_list(read_json(captions_file, "fashioniq"), captions_file)
            for index, triplet in enumerate(triplets):
                self._queries.append(self._parse(category, AnnotationEntry(triplet, captions_file, index)))

    def _parse(self, category: str, entry: AnnotationEntry) -> CIRQuery:
        candidate = relative_file_name(entry.get("candidate"), f"{entry.where}: 'candidate'")
        target = relative_file_name(entry.get("target"), f"{entry.where}: 'target'")
        captions = entry.strings("captions", length=2)
        if target not in self._galleries[category]:
            raise ValueError(f"{entry.where}: target {target!r} is not in the {category} gallery.")
        return CIRQuery(
            query_id=f"{category}/{entry.index}",
            reference_id=candidate,
            texts=[
                join_fashioniq_captions(captions[0], captions[1]),
                join_fashioniq_captions(captions[1], captions[0]),
            ],
            target_ids=[target],
            category=category,
            fields={"captions": captions},
        )

    def image_ids(self) -> list[str]:
        ids = dict.fromkeys(image_id for gallery in self._galleries.values() for image_id in gallery)
        ids.update(dict.fromkeys(query.reference_id for query in self._queries))
        return list(ids)

    def gallery_ids(self, category: str) -> list[str]:
        return list(self._galleries[category])

    def load_image(self, image_id: str) -> Image.Image:
        return load_image(self.data_dir / "images" / f"{image_id}.jpg", name=f"fashioniq image {image_id}")

    def queries(self) -> list[CIRQuery]:
        return self._queries

    def compute_metrics(self, query_features: torch.Tensor, images: EmbeddingTable) -> dict[str, float]:
        metrics: dict[str, float] = {}
        for category in self.categories:
            rows = [row for row, query in enumerate(self._queries) if query.category == category]
            if not rows:
                raise ValueError(f"fashioniq: no {category} queries.")
            gallery = EmbeddingTable(self._galleries[category], images.rows(self._galleries[category]))
            scores = (
                F.normalize(query_features[rows].float(), dim=-1) @ F.normalize(gallery.features.float(), dim=-1).T
            )
            targets = gallery.indices([self._queries[row].target_ids[0] for row in rows])
            for k, value in recall_at_k(target_ranks(scores, targets), self.ks).items():
                metrics[f"{category}_recall@{k}"] = value
        for k in self.ks:
            metrics[f"average_recall@{k}"] = sum(metrics[f"{c}_recall@{k}"] for c in self.categories) / len(
                self.categories
            )
        metrics["average"] = sum(metrics[f"average_recall@{k}"] for k in self.ks) / len(self.ks)
        return metrics
