"""Writing evaluation results into a model folder's card (README.md): the model's own method into its model-index,
baselines into a labelled table of the card's text (`hf_cir.hub.update_card_evaluation` does the card work)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard

from ..families import BASELINE_METHODS, read_model_folder
from ..hub import update_card_evaluation, write_model_card
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


def update_model_card(
    model_dir: str | os.PathLike, results: Iterable[EvaluationResult], model_method: str | None = None
) -> Path:
    """Merge evaluation results into `model_dir/README.md` (created when the folder has no card): the results of
    the model's own method (`model_method`, default: the folder's own method, e.g. `"lincir"` or `"searle"`) into its
    model-index; those of the baselines (image, text, sum) into a table of the card's text labelled as baselines.

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
    results = [result for result in results if result.metrics]
    if not results:
        raise ValueError("No metric values to write into the model card (a test split has none: submit the files).")
    if model_method is None:  # the folder's own method (a LinCIR-family folder may be SEARLE or Pic2Word)
        model_method = read_model_folder(model_dir).method
    unknown = sorted({r.method for r in results} - {model_method, *BASELINE_METHODS})
    if unknown:
        raise ValueError(f"Results of {unknown} are neither this {model_method} model's nor a baseline's.")
    own = [entry for r in results if r.method == model_method for entry in _eval_results(r)]
    baselines = [entry for r in results if r.method != model_method for entry in _eval_results(r)]
    path = model_dir / "README.md"
    if path.is_file():
        card = ModelCard.load(path)
    else:
        header = f"---\ntags:\n- {TASK_TYPE}\n---\n"
        card = ModelCard(header + f"\n# {model_dir.name}\n\nEvaluation results written by `hf-cir evaluate`.\n")
    card = update_card_evaluation(card, own, baselines, model_method=model_method, model_name=model_dir.resolve().name)
    return write_model_card(card, model_dir)
