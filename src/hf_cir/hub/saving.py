# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""Writing LinCIR and CompoDiff folders with their model card, and uploading them to the Hugging Face Hub.

The models themselves keep the `save_pretrained` / `push_to_hub` they inherit from transformers and diffusers (which
write a generic card). These two functions do the same for both models with hf-cir's own card: the folder is written
by the model's own `save_pretrained`, the card by [`hf_cir.hub.model_cards`], and the upload is one
`huggingface_hub.upload_folder` commit.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from huggingface_hub import HfApi, ModelCard

from ..models.lincir import LinCIRModel
from ..pipelines.compodiff import CompoDiffPipeline
from ..utils.io import ArtefactKind
from .model_cards import create_compodiff_model_card, create_lincir_model_card

__all__ = ["COMPODIFF_FOLDER", "LINCIR_FOLDER", "push_to_hub", "save_pretrained"]

# What the folders written here hold, so that `overwrite` replaces only such a folder (`hf_cir.utils.io`).
LINCIR_FOLDER = ArtefactKind(
    "LinCIR model folder",
    "config.json",
    lambda config: config.get("model_type") == "lincir",
    entries=(
        "*.safetensors",
        "*.safetensors.index.json",
        "*_config.json",
        "tokenizer.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "vocab.json",
        "merges.txt",
        "chat_template.*",
        "README.md",
        "*.py",
        "training_*.json",
    ),
)
COMPODIFF_FOLDER = ArtefactKind(
    "CompoDiff pipeline folder",
    "model_index.json",
    lambda index: index.get("_class_name") == "CompoDiffPipeline",
    entries=("README.md", "*.py", "training_*.json"),
    named_entries=lambda index: [name for name in index if not name.startswith("_")],
)


def _create_card(model, **card_kwargs) -> ModelCard:
    if isinstance(model, LinCIRModel):
        return create_lincir_model_card(model, **card_kwargs)
    if isinstance(model, CompoDiffPipeline):
        return create_compodiff_model_card(model, **card_kwargs)
    raise TypeError(f"`model` must be a LinCIRModel or a CompoDiffPipeline, not {type(model).__name__}.")


def save_pretrained(
    model: LinCIRModel | CompoDiffPipeline,
    save_directory: str | os.PathLike,
    processor=None,
    model_card: ModelCard | None = None,
    **card_kwargs,
) -> Path:
    r"""
    Write `model` with its own `save_pretrained` (safetensors), `processor` (LinCIR) and hf-cir's model card
    (`README.md`) into `save_directory`. `card_kwargs` go to [`create_lincir_model_card`] or
    [`create_compodiff_model_card`] when no `model_card` is given.

    Example:

    ```python
    >>> import tempfile
    >>> from hf_cir import LinCIRModel, LinCIRProcessor
    >>> from hf_cir.hub import save_pretrained
    >>> from hf_cir.toy import toy_checkpoint
    >>> model = LinCIRModel.from_pretrained(toy_checkpoint("lincir"))
    >>> processor = LinCIRProcessor.from_pretrained(toy_checkpoint("lincir"))
    >>> folder = save_pretrained(model, tempfile.mkdtemp(), processor, license="apache-2.0")
    >>> sorted(p.name for p in folder.glob("*.safetensors")), (folder / "README.md").is_file()
    (['model.safetensors'], True)
    ```
    """
    save_directory = Path(save_directory)
    if isinstance(model, LinCIRModel) and processor is not None:
        if processor.placeholder_token_id != model.config.placeholder_token_id:
            raise ValueError(
                f"The processor's placeholder id ({processor.placeholder_token_id}) differs from the model's "
                f"({model.config.placeholder_token_id}): they were built with different tokenizers."
            )
    card = model_card if model_card is not None else _create_card(model, **card_kwargs)
    if isinstance(model, CompoDiffPipeline):
        model.save_pretrained(save_directory, safe_serialization=True)
    else:
        model.save_pretrained(save_directory)
        if processor is not None:
            processor.save_pretrained(save_directory)
    card.save(str(save_directory / "README.md"))
    return save_directory


def push_to_hub(
    model: LinCIRModel | CompoDiffPipeline,
    repo_id: str,
    processor=None,
    model_card: ModelCard | None = None,
    *,
    commit_message: str | None = None,
    commit_description: str | None = None,
    private: bool | None = None,
    token: bool | str | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    **card_kwargs,
):
    r"""
    Upload `model` (and a LinCIR `processor`) with hf-cir's model card to the Hub repository `repo_id` (created if
    needed), in one commit. The folder is written by [`save_pretrained`] into a temporary directory; the card's
    `model_id` defaults to the repository id.

    Returns:
        The `huggingface_hub.CommitInfo` of the upload.
    """
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    if model_card is None:
        card_kwargs.setdefault("model_id", repo_id)
        model_card = _create_card(model, **card_kwargs)
    with tempfile.TemporaryDirectory() as folder:
        save_pretrained(model, folder, processor, model_card=model_card)
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            commit_message=commit_message or f"Upload {type(model).__name__}",
            commit_description=commit_description,
            revision=revision,
            create_pr=create_pr,
        )
