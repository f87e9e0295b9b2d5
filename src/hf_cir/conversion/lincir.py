# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""Convert a released navervision/lincir phi checkpoint (e.g. `lincir_large.pt`) into a LinCIR folder.

The reference format is a torch pickle of `{"Phi": state_dict}` (plus, for training checkpoints, an `"epoch"` entry),
read here with `torch.load(..., weights_only=True)`. The reference `Phi` is an `nn.Sequential` of
Linear-GELU-Dropout-Linear-GELU-Dropout-Linear under the attribute `layers`, the same layout as `LinCIRModel.phi`, so
the keys map one to one (see `PHI_KEY_MAPPING`). The CLIP towers come from the transformers CLIP checkpoint the phi was
trained with.

Usage:

```bash
hf-cir convert lincir --phi-checkpoint lincir_large.pt --clip openai/clip-vit-large-patch14 --output-dir lincir-large
```
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from transformers import AutoImageProcessor, AutoTokenizer

from ..hub import create_lincir_model_card, is_hub_id, save_pretrained
from ..models.lincir import LinCIRModel, LinCIRProcessor
from ..utils import atomic_directory

# reference `Phi.layers` index -> `LinCIRModel.phi.layers` index (weights and biases of the three linear layers)
#   layers.0  Linear(projection_dim, hidden)   -> phi.layers.0
#   layers.3  Linear(hidden, hidden)           -> phi.layers.3
#   layers.6  Linear(hidden, text_hidden_size) -> phi.layers.6
# (layers 1, 4 are GELU and 2, 5 Dropout: no weights)
PHI_KEY_MAPPING = {
    "layers.0.weight": "layers.0.weight",
    "layers.0.bias": "layers.0.bias",
    "layers.3.weight": "layers.3.weight",
    "layers.3.bias": "layers.3.bias",
    "layers.6.weight": "layers.6.weight",
    "layers.6.bias": "layers.6.bias",
}
REFERENCE_PHI_KEY = "Phi"

__all__ = ["PHI_KEY_MAPPING", "convert_lincir_checkpoint", "convert_phi_state_dict", "load_reference_phi"]


def load_reference_phi(phi_checkpoint: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read the phi state dict from a reference checkpoint file (`{"Phi": state_dict}` or a bare state dict).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a torch pickle loadable with `weights_only=True`, or holds no phi state dict.
    """
    path = Path(phi_checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"`phi_checkpoint`: no such file: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a corrupt or foreign file fails anywhere inside the unpickler
        raise ValueError(
            f"`phi_checkpoint` {path} is not a torch checkpoint that loads with `weights_only=True` ({error})."
        ) from error
    if isinstance(checkpoint, dict) and REFERENCE_PHI_KEY in checkpoint:
        state_dict = checkpoint[REFERENCE_PHI_KEY]
    else:
        state_dict = checkpoint
    if not (
        isinstance(state_dict, dict)
        and state_dict
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items())
    ):
        found = (
            f"a dict with keys {sorted(map(str, checkpoint))[:10]}"
            if isinstance(checkpoint, dict)
            else (f"a {type(checkpoint).__name__}")
        )
        raise ValueError(
            f"`phi_checkpoint` {path} holds {found}, not a phi state dict: expected the navervision/lincir format, "
            f"a dict with key {REFERENCE_PHI_KEY!r} mapping parameter names to tensors."
        )
    return state_dict


def convert_phi_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the reference phi keys to `LinCIRModel.phi` keys; unknown or missing keys are an error listing them."""
    unexpected = sorted(set(state_dict) - set(PHI_KEY_MAPPING))
    missing = sorted(set(PHI_KEY_MAPPING) - set(state_dict))
    if unexpected or missing:
        raise ValueError(
            f"The phi state dict does not match the reference Phi: unexpected keys {unexpected}, missing keys {missing}."
        )
    return {PHI_KEY_MAPPING[key]: tensor for key, tensor in state_dict.items()}


def convert_lincir_checkpoint(
    phi_checkpoint: str | os.PathLike,
    clip_name_or_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    tokenizer_name_or_path: str | os.PathLike | None = None,
    push_to_hub: str | None = None,
) -> LinCIRModel:
    r"""
    Build a LinCIR folder (safetensors weights, config, processor, model card, remote-code files) from a released
    phi checkpoint and the CLIP checkpoint it was trained on.

    Args:
        phi_checkpoint (`str` or `os.PathLike`): The reference checkpoint, e.g. `lincir_large.pt`.
        clip_name_or_path (`str` or `os.PathLike`): The transformers CLIP checkpoint (folder or Hub id).
        output_dir (`str` or `os.PathLike`): Where to write the folder; it must not exist or be empty. Written
            atomically: an interrupted conversion leaves nothing behind.
        tokenizer_name_or_path (`str` or `os.PathLike`, *optional*): Tokenizer folder or Hub id; defaults to the
            one stored with the CLIP checkpoint.
        push_to_hub (`str`, *optional*): Also upload the folder to this Hub repository id.

    Returns:
        The converted [`LinCIRModel`] (in eval mode).

    Raises:
        ValueError: the checkpoint is not a phi state dict, or its shapes don't fit the CLIP (both shapes named).
        FileExistsError: `output_dir` exists and is not empty.

    Example:

    ```python
    >>> import tempfile
    >>> from hf_cir.conversion.lincir import convert_lincir_checkpoint
    >>> model = convert_lincir_checkpoint(
    ...     "tests/fixtures/reference/lincir/phi.pt", "tests/fixtures/reference/clip", tempfile.mkdtemp() + "/out"
    ... )
    >>> model.config.phi_hidden_size
    256
    ```
    """
    output_dir = Path(output_dir)
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise FileExistsError(f"`output_dir` {output_dir} already exists and is not an empty folder.")
    state_dict = convert_phi_state_dict(load_reference_phi(phi_checkpoint))

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_name_or_path or clip_name_or_path)
    image_processor = AutoImageProcessor.from_pretrained(clip_name_or_path)
    phi_hidden_size = state_dict["layers.0.weight"].shape[0]
    model = LinCIRModel.from_clip(clip_name_or_path, tokenizer=tokenizer, phi_hidden_size=phi_hidden_size)
    expected = model.phi.state_dict()
    for key, tensor in state_dict.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise ValueError(
                f"Phi weight {key!r} of {phi_checkpoint} has shape {tuple(tensor.shape)}, but the CLIP at "
                f"{clip_name_or_path} (projection_dim {model.config.projection_dim}, text hidden size "
                f"{model.config.text_config.hidden_size}) needs {tuple(expected[key].shape)}: was this phi trained "
                "on another CLIP?"
            )
    model.phi.load_state_dict({key: tensor.to(expected[key].dtype) for key, tensor in state_dict.items()})
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
        source=f"converted with hf-cir from the navervision/lincir checkpoint `{Path(phi_checkpoint).name}`.",
    )
    with atomic_directory(output_dir, overwrite=output_dir.exists()) as tmp:
        save_pretrained(model, tmp, processor, model_card=card)

    if push_to_hub:
        from huggingface_hub import HfApi

        api = HfApi()
        repo_id = api.create_repo(push_to_hub, exist_ok=True).repo_id
        api.upload_folder(repo_id=repo_id, folder_path=str(output_dir), commit_message="Upload converted LinCIR")
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phi-checkpoint", required=True)
    parser.add_argument("--clip", required=True)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--tokenizer", default=None)
    parser.add_argument("--push-to-hub", default=None, metavar="REPO_ID")
    args = parser.parse_args(argv)
    convert_lincir_checkpoint(args.phi_checkpoint, args.clip, args.output_dir, args.tokenizer, args.push_to_hub)


if __name__ == "__main__":
    main()
