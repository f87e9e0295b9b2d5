"""GeneCIS (Vaze et al., "GeneCIS: A Benchmark for General Conditional Image Similarity", CVPR 2023).

On-disk layout (the annotation files of https://github.com/facebookresearch/genecis, and the two image sets)::

    DATA_DIR/
        genecis/{focus_attribute,change_attribute,focus_object,change_object}.json
        val2017/{id:012d}.jpg          # COCO 2017 validation images (object tasks)
        VG_100K_all/{image_id}.jpg     # Visual Genome images (attribute tasks)

The image folders can be moved with `coco_dir=` and `vg_dir=`. Each query has its own small gallery: the target
and the listed distractors. Attribute tasks use a crop around the instance box as GeneCIS' loader does (the box
grown by 0.7 of its size up and left, 1.7 times its size in total, clipped to the image, padded to a black square).
Metrics: Recall@{1,2,3} within each query's gallery, per task and averaged. GeneCIS is an evaluation-only set, so
`val` and `test` read the same files.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from ..utils import load_image
from .annotations import AnnotationEntry, expect_list, relative_file_name
from .base import Benchmark, CIRQuery, EmbeddingTable, per_query_gallery_image_ids, read_json
from .metrics import recall_at_k, target_ranks
from .registry import register_benchmark

__all__ = ["GeneCISBenchmark", "crop_instance"]

TASKS = ("focus_attribute", "change_attribute", "focus_object", "change_object")
_KS = (1, 2, 3)
_DILATION = 0.7


def crop_instance(image: Image.Image, box: Sequence[float], dilation: float = _DILATION) -> Image.Image:
    """GeneCIS' attribute-task crop: `box` = (x, y, width, height) grown by `dilation`, padded to a black square.

    Example:

    ```python
    >>> from PIL import Image
    >>> from hf_cir.evaluation.genecis import crop_instance
    >>> crop_instance(Image.new("RGB", (100, 50)), [40, 10, 20, 10]).size
    (34, 34)
    ```
    """
    x, y, width, height = (float(value) for value in box)
    left, top = max(0.0, x - dilation * width), max(0.0, y - dilation * height)
    right = min(image.width, left + (1 + dilation) * width)
    bottom = min(image.height, top + (1 + dilation) * height)
    crop = image.crop((left, top, right, bottom))
    side = max(crop.size)
    if crop.width == crop.height:
        return crop
    square = Image.new(crop.mode, (side, side), (0,) * len(crop.getbands()))
    square.paste(crop, ((side - crop.width) // 2, (side - crop.height) // 2))
    return square


@register_benchmark
class GeneCISBenchmark(Benchmark):
    """GeneCIS Recall@{1,2,3} within each query's own gallery, for the four tasks.

    Example:

    ```python
    >>> from hf_cir.evaluation import GeneCISBenchmark
    >>> benchmark = GeneCISBenchmark("data/GeneCIS", tasks=["change_object"])  # doctest: +SKIP
    >>> GeneCISBenchmark.metric_names[-3:]
    ('average_recall@1', 'average_recall@2', 'average_recall@3')
    ```
    """

    name = "genecis"
    display_name = "GeneCIS"
    ks = _KS
    metric_names = tuple(f"{t}_recall@{k}" for t in TASKS for k in _KS) + tuple(f"average_recall@{k}" for k in _KS)

    def __init__(
        self,
        data_dir: str | os.PathLike,
        split: str = "test",
        tasks: Sequence[str] = TASKS,
        coco_dir: str | os.PathLike | None = None,
        vg_dir: str | os.PathLike | None = None,
    ):
        super().__init__(data_dir, split)
        if self.data_dir is None:
            raise ValueError("genecis: a data directory is required.")
        tasks = [tasks] if isinstance(tasks, str) else list(tasks)
        unknown = [task for task in tasks if task not in TASKS]
        if unknown or not tasks:
            raise ValueError(f"genecis: unknown tasks {unknown}; expected some of {', '.join(TASKS)}.")
        self.tasks = tuple(tasks)
        self.coco_dir = Path(coco_dir) if coco_dir is not None else self.data_dir / "val2017"
        self.vg_dir = Path(vg_dir) if vg_dir is not None else self.data_dir / "VG_100K_all"
        annotations = self.data_dir / "genecis" if (self.data_dir / "genecis").is_dir() else self.data_dir
        self._queries: list[CIRQuery] = []
        for task in self.tasks:
            task_file = annotations / f"{task}.json"
            entries = expect_list(read_json(task_file, "genecis"), task_file)
            needed = self.coco_dir if task.endswith("object") else self.vg_dir
            if not needed.is_dir():
                raise FileNotFoundError(f"genecis: missing image folder {needed} needed by the {task} task.")
            for index, entry in enumerate(entries):
                self._queries.append(self._parse(task, AnnotationEntry(entry, task_file, index)))

    @staticmethod
    def _image_id(task: str, item: AnnotationEntry) -> str:
        if task.endswith("object"):
            value = item.get("val_image_id")
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{item.where}: '{item.parent}.val_image_id' must be a COCO image id (an integer).")
            return f"coco:{value}"
        image_id = relative_file_name(str(item.identifier("image_id")), f"{item.where}: '{item.parent}.image_id'")
        if ":" in image_id or "/" in image_id:
            raise ValueError(f"{item.where}: '{item.parent}.image_id' {image_id!r} is not a Visual Genome image id.")
        box = ",".join(f"{value:g}" for value in item.numbers("instance_bbox", length=4))
        return f"vg:{image_id}:{box}"

    def _parse(self, task: str, entry: AnnotationEntry) -> CIRQuery:
        target = self._image_id(task, entry.mapping("target"))
        gallery = [target] + [self._image_id(task, item) for item in entry.entries("gallery")]
        reference = self._image_id(task, entry.mapping("reference"))
        return CIRQuery(
            query_id=f"{task}/{entry.index}",
            reference_id=reference,
            texts=[entry.string("condition")],
            target_ids=[target],
            gallery_ids=gallery,
            category=task,
        )

    @property
    def has_labels(self) -> bool:
        return True

    def image_ids(self) -> list[str]:
        return per_query_gallery_image_ids(self._queries)

    def load_image(self, image_id: str) -> Image.Image:
        source, _, rest = image_id.partition(":")
        if source == "coco":
            return load_image(self.coco_dir / f"{int(rest):012d}.jpg", name=f"genecis image {image_id}")
        image_name, _, box = rest.partition(":")
        image = load_image(self.vg_dir / f"{image_name}.jpg", name=f"genecis image {image_id}")
        return crop_instance(image, [float(value) for value in box.split(",")])

    def queries(self) -> list[CIRQuery]:
        return self._queries

    def compute_metrics(self, query_features: torch.Tensor, images: EmbeddingTable) -> dict[str, float]:
        metrics: dict[str, float] = {}
        query_features = F.normalize(query_features.float(), dim=-1)
        for task in self.tasks:
            rows = [row for row, query in enumerate(self._queries) if query.category == task]
            if not rows:
                raise ValueError(f"genecis: no {task} queries.")
            ranks = []
            for row in rows:
                gallery = F.normalize(images.rows(self._queries[row].gallery_ids).float(), dim=-1)
                scores = (query_features[row : row + 1] @ gallery.T).reshape(1, -1)
                # By construction the target is the first item of the query's gallery.
                ranks.append(target_ranks(scores, torch.zeros(1, dtype=torch.long)))
            for k, value in recall_at_k(torch.cat(ranks), self.ks).items():
                metrics[f"{task}_recall@{k}"] = value
        for k in self.ks:
            metrics[f"average_recall@{k}"] = sum(metrics[f"{t}_recall@{k}"] for t in self.tasks) / len(self.tasks)
        return metrics
