# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""Periodic validation of LinCIR training through an `hf_cir.evaluation` benchmark."""

from __future__ import annotations

import os
from collections.abc import Callable

__all__ = ["benchmark_validation"]


def benchmark_validation(
    benchmark: str,
    data_dir: str | os.PathLike | None = None,
    split: str = "val",
    batch_size: int = 64,
    cache_dir: str | os.PathLike | None = None,
    **benchmark_kwargs,
) -> Callable:
    """A `validation_fn(model, processor, step) -> metrics` for `train_lincir.py` that evaluates the model being
    trained on an `hf_cir.evaluation` benchmark (`cirr`, `circo`, `fashioniq`, `genecis`, `toy`) with the `lincir`
    method. The benchmark is read once; its gallery embeddings are cached (the image tower is frozen, so they are
    computed once per run).

    Example:

    ```python
    >>> from hf_cir.training.validation import benchmark_validation
    >>> validate = benchmark_validation("cirr", "data/CIRR", split="val")  # doctest: +SKIP
    >>> validate(model, processor, step=100)  # doctest: +SKIP
    {'recall_at1': ..., ...}

    ```
    """
    from ..evaluation import evaluate, get_benchmark
    from ..retrieval.adapters.lincir import LinCIRRetrievalModel

    suite = get_benchmark(benchmark, data_dir, split=split, **benchmark_kwargs)

    def validate(model, processor, step: int) -> dict[str, float]:
        retrieval = LinCIRRetrievalModel(model, processor, name_or_path=f"training-step-{step}", device=model.device)
        result = evaluate(
            retrieval,
            suite,
            method="lincir",
            batch_size=batch_size,
            cache_dir=cache_dir,
            use_cache=cache_dir is not None,
            show_progress=False,
        )
        if not result.metrics:
            raise ValueError(
                f"Benchmark {benchmark!r} split {split!r} has no public labels: validate on another split."
            )
        return dict(result.metrics)

    return validate
