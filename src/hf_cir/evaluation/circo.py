"""CIRCO (Baldrati et al., "Zero-Shot Composed Image Retrieval with Textual Inversion", ICCV 2023).

On-disk layout (the official one, https://github.com/miccunifi/CIRCO)::

    DATA_DIR/
        annotations/{val,test}.json      # id, reference_img_id, relative_caption, shared_concept, gt_img_ids (val)
        COCO2017_unlabeled/annotations/image_info_unlabeled2017.json
        COCO2017_unlabeled/unlabeled2017/*.jpg

The gallery is every COCO-2017 unlabeled image. Metrics: mAP@{5,10,25,50} over the multiple ground truths (AP@K
divides by min(#ground truths, K)), and Recall@{5,10,25,50} of the annotated target. The test server takes the
top 50 image ids of every query.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from ..utils import load_image
from .annotations import AnnotationEntry, expect_list, expect_mapping, relative_file_name
from .base import Benchmark, CIRQuery, EmbeddingTable, read_json
from .metrics import average_precision_at_k, ranked_top_k, recall_at_k, target_ranks
from .registry import register_benchmark

__all__ = ["CIRCOBenchmark"]

_KS = (5, 10, 25, 50)


@register_benchmark
class CIRCOBenchmark(Benchmark):
    """CIRCO validation metrics and test-server submission file.

    Example:

    ```python
    >>> from hf_cir.evaluation import CIRCOBenchmark
    >>> benchmark = CIRCOBenchmark("data/CIRCO", split="val")  # doctest: +SKIP
    >>> CIRCOBenchmark.metric_names[:2]
    ('map@5', 'map@10')
    ```
    """

    name = "circo"
    display_name = "CIRCO"
    ks = _KS
    metric_names = tuple(f"map@{k}" for k in _KS) + tuple(f"recall@{k}" for k in _KS)

    def __init__(self, data_dir: str | os.PathLike, split: str = "val"):
        super().__init__(data_dir, split)
        if self.data_dir is None:
            raise ValueError("circo: a data directory is required.")
        coco = self.data_dir / "COCO2017_unlabeled"
        info_file = coco / "annotations" / "image_info_unlabeled2017.json"
        info = expect_mapping(read_json(info_file, "circo"), info_file)
        if not isinstance(info.get("images"), list):
            raise ValueError(f"{info_file.name}: expected an 'images' list.")
        self._image_dir = coco / "unlabeled2017"
        self._files = {}
        for number, image in enumerate(info["images"]):
            item = AnnotationEntry(image, info_file, number, parent="images")
            self._files[item.identifier("id")] = relative_file_name(item.get("file_name"), item.where)
        self._annotations_file = self.data_dir / "annotations" / f"{split}.json"
        annotations = expect_list(read_json(self._annotations_file, "circo"), self._annotations_file)
        self._queries = [self._parse(index, entry) for index, entry in enumerate(annotations)]

    def _parse(self, index: int, data: dict) -> CIRQuery:
        entry = AnnotationEntry(data, self._annotations_file, index)
        query_id = entry.identifier("id")
        reference = entry.identifier("reference_img_id")
        caption = entry.string("relative_caption")
        targets = entry.identifiers("gt_img_ids") if self.has_labels else []
        if self.has_labels and entry.has("target_img_id"):
            target = entry.identifier("target_img_id")
            if target not in targets:
                targets.insert(0, target)
        for key, image_id in (("reference_img_id", reference), *(("gt_img_ids", target) for target in targets)):
            if image_id not in self._files:
                raise ValueError(f"{entry.where}: {key} {image_id} is not a COCO-2017 unlabeled image.")
        fields = {"relative_caption": caption}
        if entry.has("shared_concept"):
            fields["shared_concept"] = entry.string("shared_concept")
        return CIRQuery(query_id=query_id, reference_id=reference, texts=[caption], target_ids=targets, fields=fields)

    def image_ids(self) -> list[str]:
        return list(self._files)

    def load_image(self, image_id: str) -> Image.Image:
        return load_image(self._image_dir / self._files[image_id], name=f"circo image {image_id}")

    def queries(self) -> list[CIRQuery]:
        return self._queries

    def _scores(self, query_features: torch.Tensor, images: EmbeddingTable):
        ids = self.image_ids()
        gallery = images if list(images.ids) == ids else EmbeddingTable(ids, images.rows(ids))
        features = F.normalize(gallery.features.float(), dim=-1)
        for start in range(0, len(self._queries), 256):
            scores = F.normalize(query_features[start : start + 256].float(), dim=-1) @ features.T
            yield self._queries[start : start + 256], scores, gallery

    def compute_metrics(self, query_features: torch.Tensor, images: EmbeddingTable) -> dict[str, float]:
        if not self.has_labels:
            raise ValueError("circo: the test split has no public labels; write the submission file instead.")
        average_precisions = {k: [] for k in self.ks}
        ranks = []
        for queries, scores, gallery in self._scores(query_features, images):
            ranks.append(target_ranks(scores, gallery.indices([query.target_ids[0] for query in queries])))
            for row, query in enumerate(queries):
                relevant = torch.zeros(len(gallery), dtype=torch.bool)
                relevant[gallery.indices(query.target_ids)] = True
                top = ranked_top_k(scores[row], max(self.ks), relevant=relevant)
                for k in self.ks:
                    average_precisions[k].append(average_precision_at_k(relevant[top], len(set(query.target_ids)), k))
        metrics = {f"map@{k}": 100.0 * sum(values) / len(values) for k, values in average_precisions.items()}
        metrics.update({f"recall@{k}": value for k, value in recall_at_k(torch.cat(ranks), self.ks).items()})
        return metrics

    def submission_files(self, query_features: torch.Tensor, images: EmbeddingTable) -> dict[str, Any]:
        """CIRCO's server file: `{query id: [50 image ids, best first]}` for every query."""
        submission = {}
        for queries, scores, gallery in self._scores(query_features, images):
            for row, query in enumerate(queries):
                submission[query.query_id] = [gallery.ids[i] for i in ranked_top_k(scores[row], 50).tolist()]
        return {f"circo_{self.split}_submission.json": submission}
