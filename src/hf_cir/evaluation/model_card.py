"""Writing evaluation results into a model folder's card (README.md) as a model-index block."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard

from ..utils import atomic_file
from .evaluate import EvaluationResult
from .registry import get_benchmark_class

__all__ = ["update_model_card"]

TASK_TYPE = "composed-image-retrieval"
TASK_NAME = "Composed Image Retrieval"


def _eval_results(result: EvaluationResult) -> list[EvalResult]:
    try:
        dataset_name = get_benchmark_class(result.benchmark).display_name or result.benchmark
    except (ValueError, ImportError):
        dataset_name = result.benchmark
    return [
        EvalResult(
            task_type=TASK_TYPE,
            task_name=TASK_NAME,
            dataset_type=result.benchmark,
            dataset_name=dataset_name,
            dataset_split=result.split,
            metric_type=metric,
            metric_name=f"{metric} ({result.method})",
            metric_value=round(float(value), 2),
        )
        for metric, value in result.metrics.items()
    ]


def update_model_card(model_dir: str | os.PathLike, results: Iterable[EvaluationResult]) -> Path:
    """Merge evaluation results into `model_dir/README.md`'s model-index (created when the folder has no card).

    A result replaces an earlier one for the same benchmark, split, metric and method; other entries stay.

    Example:

    ```python
    >>> from hf_cir.evaluation import update_model_card
    >>> update_model_card("path/to/lincir-model", [result])  # doctest: +SKIP
    ```
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ValueError(
            f"`--update-model-card` needs a local model folder; {model_dir} is not one (for a Hub model, download it "
            "first, or edit the card on the Hub)."
        )
    new = [entry for result in results for entry in _eval_results(result)]
    if not new:
        raise ValueError("No metric values to write into the model card (a test split has none: submit the files).")
    path = model_dir / "README.md"
    if path.is_file():
        card = ModelCard.load(path)
    else:
        header = f"---\ntags:\n- {TASK_TYPE}\n---\n"
        card = ModelCard(header + f"\n# {model_dir.name}\n\nEvaluation results written by `hf-cir evaluate`.\n")
    data = card.data
    if not data.model_name:
        data.model_name = model_dir.resolve().name

    def key(entry: EvalResult) -> tuple:
        return entry.dataset_type, entry.dataset_split, entry.metric_type, entry.metric_name

    replaced = {key(entry) for entry in new}
    kept = [entry for entry in (data.eval_results or []) if key(entry) not in replaced]
    data.eval_results = kept + new
    content = str(card)
    with atomic_file(path, "w") as handle:
        handle.write(content)
    return path
