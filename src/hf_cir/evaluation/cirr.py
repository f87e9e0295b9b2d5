"""CIRR (Liu et al., "Image Retrieval on Real-life Images with Pre-trained Vision-and-Language Models", ICCV 2021).

On-disk layout (the official one, https://github.com/Cuberick-Orion/CIRR)::

    DATA_DIR/
        cirr/captions/cap.rc2.{val,test1}.json       # pairid, reference, target_hard, caption, img_set.members
        cirr/image_splits/split.rc2.{val,test1}.json  # image name -> path relative to DATA_DIR ("./dev/....png")
        dev/ test1/                                   # the images

`DATA_DIR` may also be the inner `cirr/` folder itself (images are then looked up next to it). The `test` split is
CIRR's `test1`.

Metrics: Recall@{1,5,10,50} over the split's images with the reference image removed, and Recall_subset@{1,2,3}
within the query's image set (its members other than the reference).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from ..utils import load_image
from .annotations import AnnotationEntry, expect_list, expect_mapping, relative_file_name
from .base import Benchmark, CIRQuery, EmbeddingTable, read_json
from .metrics import ranked_top_k, recall_at_k, target_ranks
from .registry import register_benchmark

__all__ = ["CIRRBenchmark"]

_SPLIT_FILES = {"val": "val", "test": "test1"}


@register_benchmark
class CIRRBenchmark(Benchmark):
    """CIRR validation metrics and test-server submission files.

    Example:

    ```python
    >>> from hf_cir.evaluation import CIRRBenchmark
    >>> benchmark = CIRRBenchmark("data/CIRR", split="val")  # doctest: +SKIP
    >>> CIRRBenchmark.metric_names
    ('recall@1', 'recall@5', 'recall@10', 'recall@50', 'recall_subset@1', 'recall_subset@2', 'recall_subset@3')
    ```
    """

    name = "cirr"
    display_name = "CIRR"
    metric_names = (
        "recall@1",
        "recall@5",
        "recall@10",
        "recall@50",
        "recall_subset@1",
        "recall_subset@2",
        "recall_subset@3",
    )
    recall_ks = (1, 5, 10, 50)
    subset_ks = (1, 2, 3)

    def __init__(self, data_dir: str | os.PathLike, split: str = "val"):
        super().__init__(data_dir, split)
        if self.data_dir is None:
            raise ValueError("cirr: a data directory is required.")
        annotations = self.data_dir if (self.data_dir / "captions").is_dir() else self.data_dir / "cirr"
        split_file = _SPLIT_FILES[split]
        captions_file = annotations / "captions" / f"cap.rc2.{split_file}.json"
        self._captions_file = captions_file
        self._triplets = expect_list(read_json(captions_file, "cirr"), captions_file)
        split_path = annotations / "image_splits" / f"split.rc2.{split_file}.json"
        relpaths = expect_mapping(read_json(split_path, "cirr"), split_path)
        self._relpaths: dict[str, str] = {
            name: relative_file_name(path, f"{split_path.name} entry {name!r}") for name, path in relpaths.items()
        }
        # Official relative paths start at the folder that holds `cirr/`.
        first = next(iter(self._relpaths.values()), None)
        self._image_root = self.data_dir
        if annotations == self.data_dir and first is not None and not (self.data_dir / first).exists():
            self._image_root = self.data_dir.parent
        self._queries = [self._parse(index, triplet) for index, triplet in enumerate(self._triplets)]

    def _parse(self, index: int, triplet: dict) -> CIRQuery:
        entry = AnnotationEntry(triplet, self._captions_file, index)
        pair_id = entry.identifier("pairid")
        reference = entry.identifier("reference")
        caption = entry.string("caption")
        members = entry.mapping("img_set").identifiers("members")
        target = entry.identifier("target_hard") if self.has_labels else None
        for key, image_id in (
            ("reference", reference),
            ("target_hard", target),
            *(("img_set.members", m) for m in members),
        ):
            if image_id is not None and image_id not in self._relpaths:
                raise ValueError(
                    f"{entry.where}: {key} {image_id!r} is not in the split's image list "
                    f"(split.rc2.{_SPLIT_FILES[self.split]}.json)."
                )
        return CIRQuery(
            query_id=pair_id,
            reference_id=reference,
            texts=[caption],
            target_ids=[target] if target is not None else [],
            subset_ids=members,
        )

    def image_ids(self) -> list[str]:
        return list(self._relpaths)

    def image_path(self, image_id: str) -> Path:
        return self._image_root / self._relpaths[image_id]

    def load_image(self, image_id: str) -> Image.Image:
        return load_image(self.image_path(image_id), name=f"cirr image {image_id}")

    def queries(self) -> list[CIRQuery]:
        return self._queries

    def _masks(self, queries: list[CIRQuery], gallery: EmbeddingTable) -> tuple[torch.Tensor, torch.Tensor]:
        """Per query: valid gallery items (all but the reference) and the image-set items (members but the reference)."""
        valid = torch.ones(len(queries), len(gallery), dtype=torch.bool)
        subset = torch.zeros(len(queries), len(gallery), dtype=torch.bool)
        for row, query in enumerate(queries):
            members = [member for member in query.subset_ids or [] if member in gallery]
            subset[row, gallery.indices(members)] = True
            reference = gallery.indices([query.reference_id])
            valid[row, reference] = False
            subset[row, reference] = False
        return valid, subset

    def compute_metrics(self, query_features: torch.Tensor, images: EmbeddingTable) -> dict[str, float]:
        if not self.has_labels:
            raise ValueError("cirr: the test split has no public labels; write submission files instead.")
        gallery = (
            images
            if list(images.ids) == self.image_ids()
            else EmbeddingTable(self.image_ids(), images.rows(self.image_ids()))
        )
        features = F.normalize(gallery.features.float(), dim=-1)
        ranks, subset_ranks = [], []
        for start in range(0, len(self._queries), 256):
            queries = self._queries[start : start + 256]
            scores = F.normalize(query_features[start : start + 256].float(), dim=-1) @ features.T
            targets = gallery.indices([query.target_ids[0] for query in queries])
            valid, subset = self._masks(queries, gallery)
            ranks.append(target_ranks(scores, targets, valid))
            if not bool(subset[torch.arange(len(queries)), targets].all()):
                raise ValueError("cirr: a query's target is not a member of its image set.")
            subset_ranks.append(target_ranks(scores, targets, subset))
        recall = recall_at_k(torch.cat(ranks), self.recall_ks)
        recall_subset = recall_at_k(torch.cat(subset_ranks), self.subset_ks)
        metrics = {f"recall@{k}": value for k, value in recall.items()}
        metrics.update({f"recall_subset@{k}": value for k, value in recall_subset.items()})
        metrics["average"] = (metrics["recall@5"] + metrics["recall_subset@1"]) / 2
        return metrics

    def submission_files(self, query_features: torch.Tensor, images: EmbeddingTable) -> dict[str, Any]:
        """CIRR's two server files: `recall` (top 50, reference removed) and `recall_subset` (top 3 of the image set)."""
        gallery = EmbeddingTable(self.image_ids(), images.rows(self.image_ids()))
        features = F.normalize(gallery.features.float(), dim=-1)
        recall: dict[str, Any] = {"version": "rc2", "metric": "recall"}
        recall_subset: dict[str, Any] = {"version": "rc2", "metric": "recall_subset"}
        for start in range(0, len(self._queries), 256):
            queries = self._queries[start : start + 256]
            scores = F.normalize(query_features[start : start + 256].float(), dim=-1) @ features.T
            valid, subset = self._masks(queries, gallery)
            for row, query in enumerate(queries):
                top = ranked_top_k(scores[row], 50, valid=valid[row])
                recall[query.query_id] = [gallery.ids[i] for i in top.tolist()]
                top_subset = ranked_top_k(scores[row], 3, valid=subset[row])
                recall_subset[query.query_id] = [gallery.ids[i] for i in top_subset.tolist()]
        split = _SPLIT_FILES[self.split]
        return {f"cirr_{split}_recall.json": recall, f"cirr_{split}_recall_subset.json": recall_subset}
