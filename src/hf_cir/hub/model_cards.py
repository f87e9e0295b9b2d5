# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""Model cards of hf-cir folders, rendered from the Jinja templates in `model_cards/` through `huggingface_hub`.

One home for every card hf-cir writes: LinCIR ([`create_lincir_model_card`]), CompoDiff
([`create_compodiff_model_card`]); the training scripts and `hf-cir evaluate --update-model-card` pass their extra
sections and results through these functions.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from huggingface_hub import EvalResult, ModelCard, ModelCardData

if TYPE_CHECKING:
    from ..models.lincir import LinCIRModel

__all__ = [
    "COMPODIFF_TAGS",
    "LINCIR_LICENSE",
    "LINCIR_TAGS",
    "create_compodiff_model_card",
    "create_lincir_model_card",
    "is_hub_id",
    "model_card_template_path",
    "render_model_card",
    "results_table",
]

LINCIR_TAGS = ("composed-image-retrieval", "lincir", "clip")
LINCIR_LICENSE = "cc-by-nc-4.0"
COMPODIFF_TAGS = ("composed-image-retrieval", "compodiff", "clip", "diffusion-prior", "hf-cir")
_EXAMPLE_TEXT = "is red and made of wood"


def is_hub_id(name: str | os.PathLike | None) -> bool:
    """Whether `name` looks like a Hub repository id (`"org/name"` or `"name"`) rather than an existing local path."""
    if name is None or Path(name).exists():
        return False
    parts = str(name).split("/")
    return 1 <= len(parts) <= 2 and all(parts) and not str(name).startswith((".", "~", "/"))


def model_card_template_path(name: str) -> Path:
    """Path of the template `model_cards/{name}.md`.

    Looks in the installed wheel first (`hf_cir/model_card_templates/`), then in the source checkout.
    """
    candidates = [
        Path(__file__).resolve().parent.parent / "model_card_templates" / f"{name}.md",
        Path(__file__).resolve().parents[3] / "model_cards" / f"{name}.md",
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"No model card template named {name!r}; looked in: {', '.join(map(str, candidates))}")


def render_model_card(template: str, card_data: ModelCardData, **template_vars) -> ModelCard:
    """Render `model_cards/{template}.md` with `card_data` as its YAML header and `template_vars` in its body.

    Example:

    ```python
    >>> from huggingface_hub import ModelCardData
    >>> from hf_cir.hub import render_model_card
    >>> card = render_model_card("lincir", ModelCardData(license="cc-by-nc-4.0"), model_id="me/lincir")  # doctest: +SKIP
    ```
    """
    return ModelCard.from_template(card_data, template_path=str(model_card_template_path(template)), **template_vars)


def create_lincir_model_card(
    model: LinCIRModel,
    *,
    model_id: str | None = None,
    base_model: str | None = None,
    license: str = LINCIR_LICENSE,
    eval_results: Iterable[EvalResult | Mapping] | None = None,
    datasets: list[str] | None = None,
    tags: Iterable[str] = (),
    training_details: str | None = None,
    source: str | None = None,
) -> ModelCard:
    r"""
    Render `model_cards/lincir.md` for `model` through `huggingface_hub.ModelCard`.

    Args:
        model ([`LinCIRModel`]): The model the card describes (sizes, placeholder and template come from its config).
        model_id (`str`, *optional*): The Hub repository id, used as the title and in the usage snippet.
        base_model (`str`, *optional*): Hub id of the CLIP checkpoint (metadata `base_model`). Defaults to the name
            the towers were loaded from when it is a Hub id.
        license (`str`, *optional*, defaults to `"cc-by-nc-4.0"`): The license of the weights (the released LinCIR
            weights are CC BY-NC 4.0).
        eval_results (list of `huggingface_hub.EvalResult` or of dicts of its arguments, *optional*):
            Evaluation results; they become the card's `model-index` and a table in the text.
        datasets (`list[str]`, *optional*): Hub ids of the training datasets.
        tags (iterable of `str`, *optional*): Extra tags beside composed-image-retrieval, lincir and clip.
        training_details (`str`, *optional*): Markdown for a "Training" section (e.g. the run's arguments).
        source (`str`, *optional*): Where the weights come from (e.g. the converted reference checkpoint).

    Example:

    ```python
    >>> from hf_cir import LinCIRModel
    >>> from hf_cir.hub import create_lincir_model_card
    >>> model = LinCIRModel.from_clip("tests/fixtures/reference/clip")
    >>> card = create_lincir_model_card(model, model_id="me/lincir-tiny", base_model="openai/clip-vit-large-patch14")
    >>> card.data.license, card.data.tags
    ('cc-by-nc-4.0', ['composed-image-retrieval', 'lincir', 'clip'])
    ```
    """
    config = model.config
    if base_model is None and is_hub_id(config.text_config.name_or_path):
        base_model = config.text_config.name_or_path
    results = []
    for result in eval_results or []:
        results.append(result if isinstance(result, EvalResult) else EvalResult(**result))
    all_tags = list(LINCIR_TAGS) + [tag for tag in tags if tag not in LINCIR_TAGS]
    card_data = ModelCardData(
        license=license,
        base_model=base_model,
        library_name="transformers",
        tags=all_tags,
        datasets=datasets,
        model_name=model_id or "LinCIR",
        eval_results=results or None,
    )
    if config.prompt_template is not None:
        example_text = _EXAMPLE_TEXT
        example_prompt = config.prompt_template.replace("{}", _EXAMPLE_TEXT, 1)
    else:
        example_text = example_prompt = f"a photo of {config.placeholder_token} that {_EXAMPLE_TEXT}"
    return render_model_card(
        "lincir",
        card_data,
        model_id=model_id,
        usage_id=model_id or "path/to/this/folder",
        base_model_md=f"[{base_model}](https://huggingface.co/{base_model})" if base_model else "its CLIP checkpoint",
        placeholder_token=config.placeholder_token,
        placeholder_token_id=config.placeholder_token_id,
        prompt_template=config.prompt_template,
        example_text=example_text,
        example_prompt=example_prompt,
        projection_dim=config.projection_dim,
        phi_hidden_size=config.phi_hidden_size,
        text_hidden_size=config.text_config.hidden_size,
        training_details=training_details,
        source=source,
        results_table=results_table(results),
    )


def results_table(results: list[EvalResult]) -> str | None:
    if not results:
        return None
    rows = ["| Dataset | Split | Metric | Value |", "| --- | --- | --- | --- |"]
    for r in results:
        split = r.dataset_split or ""
        rows.append(f"| {r.dataset_name} | {split} | {r.metric_name or r.metric_type} | {r.metric_value} |")
    return "\n".join(rows)


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
    >>> from hf_cir.hub import create_compodiff_model_card
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
        tags=list(COMPODIFF_TAGS),
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
