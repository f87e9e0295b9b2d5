# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""The model card of a CompoDiffPipeline folder, rendered from `model_cards/compodiff.md`."""

from __future__ import annotations

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ...utils import render_model_card

__all__ = ["create_compodiff_model_card"]

TAGS = ["composed-image-retrieval", "compodiff", "clip", "diffusion-prior", "hf-cir"]


def _name_of(component) -> str:
    name = getattr(getattr(component, "config", None), "_name_or_path", None) or getattr(
        component, "name_or_path", None
    )
    return str(name) if name else type(component).__name__


def create_compodiff_model_card(
    pipeline,
    model_id: str | None = None,
    base_models: list[str] | None = None,
    eval_results: list[EvalResult] | None = None,
    source: str | None = None,
    training_details: str | None = None,
    results_table: str | None = None,
    datasets: list[str] | None = None,
) -> ModelCard:
    """
    Render the card of a [`CompoDiffPipeline`]: license apache-2.0, base models, tags, usage, citation (Gu et al.,
    TMLR 2024), and a model-index block when `eval_results` are given.

    Example:

    ```python
    >>> from hf_cir.pipelines.compodiff.model_card import create_compodiff_model_card
    >>> card = create_compodiff_model_card(pipe, model_id="me/compodiff")  # doctest: +SKIP
    >>> card.save("compodiff/README.md")  # doctest: +SKIP
    ```
    """
    if eval_results and not model_id:
        raise ValueError("`model_id` is required with `eval_results` (the model-index needs a model name).")
    prior_config = pipeline.prior.config
    card_data = ModelCardData(
        license="apache-2.0",
        library_name="diffusers",
        base_model=list(base_models) if base_models else None,
        tags=list(TAGS),
        datasets=datasets,
        model_name=model_id,
        eval_results=eval_results,
    )
    return render_model_card(
        "compodiff",
        card_data,
        model_id=model_id,
        usage_id=model_id or "path/to/compodiff",
        license="apache-2.0",
        text_encoder=_name_of(pipeline.text_encoder) if pipeline.text_encoder is not None else "none",
        image_encoder=_name_of(pipeline.image_encoder) if pipeline.image_encoder is not None else "none",
        embedding_dim=prior_config.embedding_dim,
        num_layers=prior_config.num_layers,
        num_attention_heads=prior_config.num_attention_heads,
        attention_head_dim=prior_config.attention_head_dim,
        text_embed_dim=prior_config.text_embed_dim,
        mask_size=prior_config.mask_size,
        num_train_timesteps=getattr(
            pipeline.scheduler.config, "num_train_timesteps", prior_config.num_train_timesteps
        ),
        source=source,
        training_details=training_details,
        results_table=results_table,
    )
