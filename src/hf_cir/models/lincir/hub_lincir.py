# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""Writing LinCIR folders with their model card, and uploading them to the Hugging Face Hub.

Not part of the remote code (it needs hf-cir's card templates): `LinCIRModel.push_to_hub` calls it when hf-cir is
installed.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData

from hf_cir.utils import render_model_card

from .modeling_lincir import LinCIRModel
from .processing_lincir import LinCIRProcessor

LINCIR_TAGS = ("composed-image-retrieval", "lincir", "clip")
LINCIR_LICENSE = "cc-by-nc-4.0"
_EXAMPLE_TEXT = "is red and made of wood"

__all__ = ["LINCIR_TAGS", "create_lincir_model_card", "push_lincir_to_hub", "save_lincir_pretrained"]


def _is_hub_id(name: str | os.PathLike | None) -> bool:
    if name is None or Path(name).exists():
        return False
    parts = str(name).split("/")
    return 1 <= len(parts) <= 2 and all(parts) and not str(name).startswith((".", "~"))


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
    >>> from hf_cir.models.lincir.hub_lincir import create_lincir_model_card
    >>> model = LinCIRModel.from_clip("tests/fixtures/reference/clip")
    >>> card = create_lincir_model_card(model, model_id="me/lincir-tiny", base_model="openai/clip-vit-large-patch14")
    >>> card.data.license, card.data.tags
    ('cc-by-nc-4.0', ['composed-image-retrieval', 'lincir', 'clip'])
    ```
    """
    config = model.config
    if base_model is None and _is_hub_id(config.text_config.name_or_path):
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
        results_table=_results_table(results),
    )


def _results_table(results: list[EvalResult]) -> str | None:
    if not results:
        return None
    rows = ["| Dataset | Split | Metric | Value |", "| --- | --- | --- | --- |"]
    for r in results:
        split = r.dataset_split or ""
        rows.append(f"| {r.dataset_name} | {split} | {r.metric_name or r.metric_type} | {r.metric_value} |")
    return "\n".join(rows)


def save_lincir_pretrained(
    model: LinCIRModel,
    save_directory: str | os.PathLike,
    processor: LinCIRProcessor | None = None,
    model_card: ModelCard | None = None,
    max_shard_size: int | str = "50GB",
    **card_kwargs,
) -> Path:
    r"""
    Write `model` (safetensors, config and remote-code files), `processor` and a LinCIR `README.md` into
    `save_directory`. `card_kwargs` go to [`create_lincir_model_card`] when no `model_card` is given.

    Example:

    ```python
    >>> import tempfile
    >>> from hf_cir import LinCIRModel, LinCIRProcessor
    >>> from hf_cir.models.lincir.hub_lincir import save_lincir_pretrained
    >>> model = LinCIRModel.from_clip("tests/fixtures/reference/clip")
    >>> processor = LinCIRProcessor.from_pretrained("tests/fixtures/reference/clip")
    >>> folder = save_lincir_pretrained(model, tempfile.mkdtemp(), processor)
    >>> sorted(p.name for p in folder.glob("*.safetensors")), (folder / "README.md").is_file()
    (['model.safetensors'], True)
    ```
    """
    save_directory = Path(save_directory)
    model.save_pretrained(save_directory, max_shard_size=max_shard_size)
    if processor is not None:
        if processor.placeholder_token_id != model.config.placeholder_token_id:
            raise ValueError(
                f"The processor's placeholder id ({processor.placeholder_token_id}) differs from the model's "
                f"({model.config.placeholder_token_id}): they were built with different tokenizers."
            )
        processor.save_pretrained(save_directory)
    card = model_card if model_card is not None else create_lincir_model_card(model, **card_kwargs)
    card.save(save_directory / "README.md")
    return save_directory


def push_lincir_to_hub(
    model: LinCIRModel,
    repo_id: str,
    processor: LinCIRProcessor | None = None,
    model_card: ModelCard | None = None,
    *,
    commit_message: str | None = None,
    commit_description: str | None = None,
    private: bool | None = None,
    token: bool | str | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    max_shard_size: int | str = "50GB",
    tags: list[str] | None = None,
    **card_kwargs,
):
    r"""
    Upload `model`, `processor` and a LinCIR model card to the Hub repository `repo_id` (created if needed).

    The folder is written by [`save_lincir_pretrained`] into a temporary directory and uploaded in one commit.
    `card_kwargs` go to [`create_lincir_model_card`]; the card's `model_id` is the repository id.

    Returns:
        The `huggingface_hub.CommitInfo` of the upload.
    """
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    if model_card is None:
        card_kwargs.setdefault("model_id", repo_id)
        if tags:
            card_kwargs["tags"] = list(card_kwargs.get("tags", ())) + list(tags)
        model_card = create_lincir_model_card(model, **card_kwargs)
    with tempfile.TemporaryDirectory() as folder:
        save_lincir_pretrained(model, folder, processor, model_card=model_card, max_shard_size=max_shard_size)
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            commit_message=commit_message or "Upload LinCIR model",
            commit_description=commit_description,
            revision=revision,
            create_pr=create_pr,
        )
