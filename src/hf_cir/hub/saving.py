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

from ..families import ModelFamily, model_families
from ..utils.io import ArtefactKind
from .model_cards import write_model_card

__all__ = [
    "COMPODIFF_FOLDER",
    "LINCIR_FOLDER",
    "family_of_model",
    "push_to_hub",
    "save_compodiff_folder",
    "save_lincir_folder",
    "save_pretrained",
]

# What `save_pretrained` of a transformers model and its processor writes (weights, configs, tokenizer, card, remote
# code): the entries of every transformers-family folder, so that `overwrite` replaces only such a folder.
TRANSFORMERS_FOLDER_ENTRIES = (
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
)

# What the folders written here hold, so that `overwrite` replaces only such a folder (`hf_cir.utils.io`).
LINCIR_FOLDER = ArtefactKind(
    "LinCIR model folder",
    "config.json",
    lambda config: config.get("model_type") == "lincir",
    entries=TRANSFORMERS_FOLDER_ENTRIES + ("training_*.json",),
)
COMPODIFF_FOLDER = ArtefactKind(
    "CompoDiff pipeline folder",
    "model_index.json",
    lambda index: index.get("_class_name") == "CompoDiffPipeline",
    entries=("README.md", "*.py", "training_*.json"),
    named_entries=lambda index: [name for name in index if not name.startswith("_")],
)


def family_of_model(model) -> ModelFamily:
    """The registered family whose `model_classes` `model` is an instance of (`hf_cir.families`)."""
    families = list(model_families().values())
    for family in families:
        if family.is_instance(model):
            return family
    expected = " or ".join(path.rpartition(":")[2] for family in families for path in family.model_classes)
    raise TypeError(f"`model` must be a {expected}, not {type(model).__name__}.")


def _create_card(model, **card_kwargs) -> ModelCard:
    return family_of_model(model).load("model_card")(model, **card_kwargs)


def save_lincir_folder(model, save_directory: Path, processor=None) -> None:
    """A LinCIR-family model (and its processor) written by their own `save_pretrained`; no card."""
    if processor is not None and processor.placeholder_token_id != model.config.placeholder_token_id:
        raise ValueError(
            f"The processor's placeholder id ({processor.placeholder_token_id}) differs from the model's "
            f"({model.config.placeholder_token_id}): they were built with different tokenizers."
        )
    model.save_pretrained(save_directory)
    if processor is not None:
        processor.save_pretrained(save_directory)


def save_compodiff_folder(pipeline, save_directory: Path, processor=None) -> None:
    """A CompoDiff pipeline written by its own `save_pretrained` (safetensors; its components bring their
    processors); no card."""
    if processor is not None:
        raise ValueError("A CompoDiff pipeline holds its own tokenizer and image processor: pass no `processor`.")
    pipeline.save_pretrained(save_directory, safe_serialization=True)


def _save_with_own_methods(model, save_directory: Path, processor=None) -> None:
    model.save_pretrained(save_directory)
    if processor is not None:
        processor.save_pretrained(save_directory)


def save_pretrained(
    model,
    save_directory: str | os.PathLike,
    processor=None,
    model_card: ModelCard | None = None,
    **card_kwargs,
) -> Path:
    r"""
    Write `model` with its own `save_pretrained` (safetensors), `processor` (LinCIR) and hf-cir's model card
    (`README.md`) into `save_directory`, for a model of any registered family (`hf_cir.families`: its `save` and
    `model_card`). `card_kwargs` go to the family's card function ([`create_lincir_model_card`],
    [`create_compodiff_model_card`], ...) when no `model_card` is given.

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
    card = model_card if model_card is not None else _create_card(model, **card_kwargs)
    try:
        save = family_of_model(model).load("save")
    except TypeError:  # a model of no registered family, with its card given: its own `save_pretrained`
        save = _save_with_own_methods
    save(model, save_directory, processor)
    write_model_card(card, save_directory)
    return save_directory


def push_to_hub(
    model,
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
