# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""What converting LinCIR, SEARLE and Pic2Word checkpoints shares: reading a released torch pickle safely, checking
a phi state dict against the model's, and writing the LinCIR-family folder (safetensors, config, processor, card).

The three methods are one model family ([`LinCIRModel`], its config selecting phi's architecture, the placeholder
and the prompt), so one function builds every folder; `lincir.py`, `searle.py` and `pic2word.py` only read their
method's checkpoint format and name the method's settings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import AutoImageProcessor, AutoTokenizer

from ..hub import create_lincir_model_card, is_hub_id, save_pretrained
from ..hub.saving import LINCIR_FOLDER
from ..models.lincir import LinCIRModel, LinCIRProcessor
from ..utils import atomic_directory
from .loading import load_checkpoint_file, load_pretrained_component

__all__ = [
    "build_textual_inversion_folder",
    "check_state_dict_keys",
    "describe",
    "load_torch_checkpoint",
    "tensor_dict",
]


def load_torch_checkpoint(
    path: str | os.PathLike, argument: str, expected: str = "a released checkpoint (a dict of tensors)"
) -> Any:
    """Load a released checkpoint (a torch pickle with `torch.load(..., weights_only=True)`, so no arbitrary code
    runs, or a safetensors file) through the converters' one load path, [`load_checkpoint_file`].

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is empty, or neither a readable safetensors file nor a weights-only torch pickle.
    """
    return load_checkpoint_file(path, argument, expected)


def tensor_dict(value: Any) -> dict[str, torch.Tensor] | None:
    """`value` if it is a non-empty dict of parameter names to tensors, else `None`."""
    if (
        isinstance(value, Mapping)
        and value
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())
    ):
        return dict(value)
    return None


def describe(checkpoint: Any) -> str:
    """A short description of what a checkpoint file holds, for error messages."""
    if isinstance(checkpoint, Mapping):
        return f"a dict with keys {sorted(map(str, checkpoint))[:10]}"
    return f"a {type(checkpoint).__name__}"


def check_state_dict_keys(state_dict: Mapping[str, torch.Tensor], expected: set[str], what: str) -> None:
    """Unknown or missing keys are an error that lists them."""
    unexpected = sorted(set(state_dict) - expected)
    missing = sorted(expected - set(state_dict))
    if unexpected or missing:
        raise ValueError(
            f"The {what} state dict does not match: unexpected keys {unexpected}, missing keys {missing}."
        )


def build_textual_inversion_folder(
    phi_state_dict: Mapping[str, torch.Tensor],
    clip_name_or_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    config: Mapping[str, Any],
    checkpoint_name: str,
    source: str,
    license: str | None,
    tokenizer_name_or_path: str | os.PathLike | None = None,
    push_to_hub: str | None = None,
) -> LinCIRModel:
    r"""
    Build a LinCIR-family folder from a phi state dict (already renamed to `LinCIRModel.phi`'s keys) and the CLIP
    checkpoint it was trained with.

    Args:
        phi_state_dict: The phi weights under `LinCIRModel.phi`'s parameter names.
        clip_name_or_path: The transformers CLIP checkpoint (folder or Hub id).
        output_dir: Where to write the folder; it must not exist or be empty. Written atomically.
        config: The method's [`LinCIRConfig`] settings (`phi_type`, `phi_hidden_size`, placeholder, ...).
        checkpoint_name: The checkpoint's file name, for error messages.
        source: The card's "Source" line (where the weights come from).
        license: The license of the weights, for the card.
        tokenizer_name_or_path: Tokenizer folder or Hub id; defaults to the one stored with the CLIP checkpoint.
        push_to_hub: Also upload the folder to this Hub repository id.

    Returns:
        The converted [`LinCIRModel`] (in eval mode).

    Raises:
        ValueError: the state dict's keys or shapes don't fit the CLIP (both shapes named).
        FileExistsError: `output_dir` exists and is not empty.
    """
    output_dir = Path(output_dir)
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise FileExistsError(f"`output_dir` {output_dir} already exists and is not an empty folder.")
    tokenizer_argument = "tokenizer_name_or_path" if tokenizer_name_or_path else "clip_name_or_path"
    tokenizer = load_pretrained_component(
        AutoTokenizer.from_pretrained, tokenizer_name_or_path or clip_name_or_path, tokenizer_argument, "a tokenizer"
    )
    image_processor = load_pretrained_component(
        AutoImageProcessor.from_pretrained, clip_name_or_path, "clip_name_or_path", "a CLIP image processor"
    )
    model = load_pretrained_component(
        lambda name: LinCIRModel.from_clip(name, tokenizer=tokenizer, **config),
        clip_name_or_path,
        "clip_name_or_path",
        "a transformers CLIP checkpoint",
    )

    expected = model.phi.state_dict()
    check_state_dict_keys(phi_state_dict, set(expected), f"phi ({model.config.phi_type})")
    for key, tensor in phi_state_dict.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise ValueError(
                f"Phi weight {key!r} of {checkpoint_name} has shape {tuple(tensor.shape)}, but the CLIP at "
                f"{clip_name_or_path} (projection_dim {model.config.projection_dim}, text hidden size "
                f"{model.config.text_config.hidden_size}) needs {tuple(expected[key].shape)}: was this phi trained "
                "on another CLIP?"
            )
    model.phi.load_state_dict({key: tensor.to(expected[key].dtype) for key, tensor in phi_state_dict.items()})
    model.eval()
    processor = LinCIRProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        placeholder_token=model.config.placeholder_token,
        prompt_template=model.config.prompt_template,
    )
    card = create_lincir_model_card(
        model,
        model_id=push_to_hub,
        base_model=str(clip_name_or_path) if is_hub_id(clip_name_or_path) else None,
        source=source,
        license=license,
    )
    with atomic_directory(output_dir, overwrite=output_dir.exists(), kind=LINCIR_FOLDER) as tmp:
        save_pretrained(model, tmp, processor, model_card=card)

    if push_to_hub:
        from huggingface_hub import HfApi

        api = HfApi()
        repo_id = api.create_repo(push_to_hub, exist_ok=True).repo_id
        api.upload_folder(
            repo_id=repo_id,
            folder_path=str(output_dir),
            commit_message=f"Upload converted {model.config.method_name}",
        )
    return model
