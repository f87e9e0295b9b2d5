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

from ..hub import LINCIR_LICENSE
from ..models.lincir import LinCIRModel
from .textual_inversion import (
    build_textual_inversion_folder,
    check_state_dict_keys,
    describe,
    load_torch_checkpoint,
    tensor_dict,
)

# reference `Phi.layers` index -> `LinCIRModel.phi.layers` index (weights and biases of the three linear layers)
#   layers.0  Linear(projection_dim, hidden)   -> phi.layers.0
#   layers.3  Linear(hidden, hidden)           -> phi.layers.3
#   layers.6  Linear(hidden, text_hidden_size) -> phi.layers.6
# (layers 1, 4 are GELU and 2, 5 Dropout: no weights). SEARLE's `Phi` is the same module (LinCIR's is a copy of it).
PHI_KEY_MAPPING = {
    "layers.0.weight": "layers.0.weight",
    "layers.0.bias": "layers.0.bias",
    "layers.3.weight": "layers.3.weight",
    "layers.3.bias": "layers.3.bias",
    "layers.6.weight": "layers.6.weight",
    "layers.6.bias": "layers.6.bias",
}
REFERENCE_PHI_KEY = "Phi"
# LinCIR's settings of the model family (the others are `LinCIRConfig`'s defaults).
LINCIR_CONFIG = {"method_name": "lincir", "phi_type": "mlp", "placeholder_replacement": "all"}

__all__ = [
    "LINCIR_CONFIG",
    "PHI_KEY_MAPPING",
    "convert_lincir_checkpoint",
    "convert_phi_state_dict",
    "load_reference_phi",
]


def load_reference_phi(phi_checkpoint: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read the phi state dict from a reference checkpoint file (`{"Phi": state_dict}` or a bare state dict): the
    format of navervision/lincir and of miccunifi/SEARLE.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a torch pickle loadable with `weights_only=True`, or holds no phi state dict.
    """
    checkpoint = load_torch_checkpoint(
        phi_checkpoint,
        "phi_checkpoint",
        f"a released phi checkpoint (a dict with key {REFERENCE_PHI_KEY!r} of tensors)",
    )
    if isinstance(checkpoint, dict) and REFERENCE_PHI_KEY in checkpoint:
        state_dict = tensor_dict(checkpoint[REFERENCE_PHI_KEY])
    else:
        state_dict = tensor_dict(checkpoint)
    if state_dict is None:
        raise ValueError(
            f"`phi_checkpoint` {phi_checkpoint} holds {describe(checkpoint)}, not a phi state dict: expected the "
            f"released format, a dict with key {REFERENCE_PHI_KEY!r} mapping parameter names to tensors."
        )
    return state_dict


def convert_phi_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the reference phi keys to `LinCIRModel.phi` keys; unknown or missing keys are an error listing them."""
    check_state_dict_keys(state_dict, set(PHI_KEY_MAPPING), "phi (reference Phi)")
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
    >>> import torch
    >>> from torch import nn
    >>> from hf_cir.conversion.lincir import convert_lincir_checkpoint
    >>> from hf_cir.toy import toy_checkpoint
    >>> folder = tempfile.mkdtemp()
    >>> # A phi in the released format for the toy CLIP (64-d image embeddings, 128-d text tower).
    >>> phi = nn.Sequential(nn.Linear(64, 256), nn.GELU(), nn.Dropout(0.5), nn.Linear(256, 256), nn.GELU(),
    ...                     nn.Dropout(0.5), nn.Linear(256, 128))
    >>> torch.save({"Phi": {f"layers.{k}": v for k, v in phi.state_dict().items()}}, f"{folder}/phi.pt")
    >>> model = convert_lincir_checkpoint(f"{folder}/phi.pt", toy_checkpoint("clip"), f"{folder}/lincir")
    >>> model.config.phi_hidden_size
    256
    ```
    """
    state_dict = convert_phi_state_dict(load_reference_phi(phi_checkpoint))
    return build_textual_inversion_folder(
        state_dict,
        clip_name_or_path,
        output_dir,
        config={**LINCIR_CONFIG, "phi_hidden_size": state_dict["layers.0.weight"].shape[0]},
        checkpoint_name=str(phi_checkpoint),
        source=f"converted with hf-cir from the navervision/lincir checkpoint `{Path(phi_checkpoint).name}`.",
        license=LINCIR_LICENSE,
        tokenizer_name_or_path=tokenizer_name_or_path,
        push_to_hub=push_to_hub,
    )


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
