# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""Convert a released Pic2Word checkpoint (`pic2word_model.pt`, or `pic2word_large.pt` as LinCIR's demo uses it) into a
LinCIR-family folder.

Pic2Word (Saito et al., "Pic2Word: Mapping Pictures to Words for Zero-shot Composed Image Retrieval", CVPR 2023,
https://arxiv.org/abs/2302.03084; code: google-research/composed_image_retrieval) saves training checkpoints as
`{"epoch", "name", "state_dict", "state_dict_img2text", "optimizer"}` (`src/main.py`), the parameter names prefixed
`module.` by DistributedDataParallel. They are read here with `torch.load(..., weights_only=True)`; only
`state_dict_img2text` is used (the CLIP in `state_dict` is OpenAI's, frozen during training: the towers come from the
transformers copy given as `--clip`). The mapping network `IM2TEXT` (`model/model.py`) has the same parameter names as
`LinCIRModel.phi` with `phi_type="im2text"` (see `im2text_key_mapping`). The settings that make it Pic2Word
(`PIC2WORD_CONFIG`), from the reference code:

- the image embedding goes into `img2text` unnormalised (`src/eval_utils.py`);
- the placeholder is `*` (`id_split = tokenize(["*"])[0][1]`), and `encode_text_img_retrieval` replaces only the
  first `*` of each text;
- the prompt is `a photo of * , {caption}` (`src/data.py`, CIRR);
- `IM2TEXT(embed_dim, middle_dim=512, output_dim, n_layer=2, dropout=0.1)` (`src/params.py`); the sizes are read
  from the checkpoint.

Usage:

```bash
hf-cir convert pic2word --checkpoint pic2word_model.pt --clip openai/clip-vit-large-patch14 --output-dir pic2word
```
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from ..hub import method_card_info
from ..models.lincir import LinCIRModel
from .textual_inversion import (
    build_textual_inversion_folder,
    check_state_dict_keys,
    describe,
    load_torch_checkpoint,
    tensor_dict,
)

# Pic2Word's settings of the model family (see the module docstring for where each comes from).
PIC2WORD_CONFIG = {
    "method_name": "pic2word",
    "phi_type": "im2text",
    "phi_dropout": 0.1,
    "normalize_image_embeds": False,
    "placeholder_token": "*",
    "placeholder_replacement": "first",
    "prompt_template": "a photo of * , {}",
}
REFERENCE_IM2TEXT_KEY = "state_dict_img2text"
DDP_PREFIX = "module."

__all__ = [
    "PIC2WORD_CONFIG",
    "convert_im2text_state_dict",
    "convert_pic2word_checkpoint",
    "im2text_key_mapping",
    "load_reference_im2text",
]


def im2text_key_mapping(num_layers: int) -> dict[str, str]:
    """Reference `IM2TEXT` keys -> `LinCIRModel.phi` keys (`phi_type="im2text"`), the same names:

    ```
    layers.{i}.0  Linear (block i: Linear, Dropout, ReLU)  -> phi.layers.{i}.0
    fc_out        Linear(middle_dim, text hidden size)       -> phi.fc_out
    ```
    """
    mapping = {
        f"layers.{i}.0.{kind}": f"layers.{i}.0.{kind}" for i in range(num_layers) for kind in ("weight", "bias")
    }
    mapping.update({f"fc_out.{kind}": f"fc_out.{kind}" for kind in ("weight", "bias")})
    return mapping


def load_reference_im2text(checkpoint_path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read the `IM2TEXT` state dict from a Pic2Word checkpoint (`state_dict_img2text` of a training checkpoint, or a
    bare state dict), without the `module.` prefix.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a torch pickle loadable with `weights_only=True`, or holds no IM2TEXT state dict.
    """
    checkpoint = load_torch_checkpoint(
        checkpoint_path, "checkpoint", f"a Pic2Word checkpoint (a dict with key {REFERENCE_IM2TEXT_KEY!r} of tensors)"
    )
    if isinstance(checkpoint, dict) and REFERENCE_IM2TEXT_KEY in checkpoint:
        state_dict = tensor_dict(checkpoint[REFERENCE_IM2TEXT_KEY])
    else:
        state_dict = tensor_dict(checkpoint)
    if state_dict is None:
        raise ValueError(
            f"`checkpoint` {checkpoint_path} holds {describe(checkpoint)}, not a Pic2Word IM2TEXT state dict: expected "
            f"the released format, a dict with key {REFERENCE_IM2TEXT_KEY!r} mapping parameter names to tensors."
        )
    if all(key.startswith(DDP_PREFIX) for key in state_dict):
        state_dict = {key[len(DDP_PREFIX) :]: tensor for key, tensor in state_dict.items()}
    return state_dict


def convert_im2text_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the reference `IM2TEXT` keys to `LinCIRModel.phi` keys; unknown or missing keys are an error.

    Example (a training checkpoint in the layout `src/main.py` saves, with a 2-block IM2TEXT of width 8):

    ```python
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> from hf_cir.conversion.pic2word import convert_im2text_state_dict, load_reference_im2text
    >>> shapes = {"layers.0.0": (8, 4), "layers.1.0": (8, 8), "fc_out": (3, 8)}
    >>> img2text = {f"module.{name}.{kind}": torch.zeros(shape if kind == "weight" else shape[:1])
    ...             for name, shape in shapes.items() for kind in ("weight", "bias")}
    >>> path = Path(tempfile.mkdtemp()) / "epoch_30.pt"
    >>> torch.save({"epoch": 30, "name": "run", "state_dict_img2text": img2text}, path)
    >>> sorted(convert_im2text_state_dict(load_reference_im2text(path)))[:3]
    ['fc_out.bias', 'fc_out.weight', 'layers.0.0.bias']

    ```
    """
    num_layers = len({match[1] for key in state_dict if (match := re.fullmatch(r"layers\.(\d+)\.0\.weight", key))})
    mapping = im2text_key_mapping(num_layers)
    check_state_dict_keys(state_dict, set(mapping), "Pic2Word IM2TEXT")
    return {mapping[key]: tensor for key, tensor in state_dict.items()}


def convert_pic2word_checkpoint(
    checkpoint: str | os.PathLike,
    clip_name_or_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    tokenizer_name_or_path: str | os.PathLike | None = None,
    push_to_hub: str | None = None,
) -> LinCIRModel:
    r"""
    Build a Pic2Word folder (safetensors weights, config, processor, model card, remote-code files) from a released
    Pic2Word checkpoint and the CLIP checkpoint it was trained on.

    Args:
        checkpoint (`str` or `os.PathLike`): The released checkpoint, e.g. `pic2word_model.pt`.
        clip_name_or_path (`str` or `os.PathLike`): The transformers CLIP checkpoint (folder or Hub id), e.g.
            `openai/clip-vit-large-patch14`.
        output_dir (`str` or `os.PathLike`): Where to write the folder; it must not exist or be empty. Written
            atomically.
        tokenizer_name_or_path (`str` or `os.PathLike`, *optional*): Tokenizer folder or Hub id; defaults to the
            one stored with the CLIP checkpoint.
        push_to_hub (`str`, *optional*): Also upload the folder to this Hub repository id.

    Returns:
        The converted [`LinCIRModel`] with Pic2Word's config (in eval mode).

    Raises:
        ValueError: the checkpoint holds no IM2TEXT, or its shapes don't fit the CLIP (both shapes named).
        FileExistsError: `output_dir` exists and is not empty.

    Example:

    ```python
    >>> from hf_cir.conversion.pic2word import convert_pic2word_checkpoint
    >>> model = convert_pic2word_checkpoint(  # doctest: +SKIP
    ...     "pic2word_model.pt", "openai/clip-vit-large-patch14", "pic2word"
    ... )
    >>> model.config.phi_type, model.config.placeholder_token, model.config.prompt_template  # doctest: +SKIP
    ('im2text', '*', 'a photo of * , {}')

    ```
    """
    state_dict = convert_im2text_state_dict(load_reference_im2text(checkpoint))
    num_layers = sum(1 for key in state_dict if key.startswith("layers.") and key.endswith(".0.weight"))
    return build_textual_inversion_folder(
        state_dict,
        clip_name_or_path,
        output_dir,
        config={
            **PIC2WORD_CONFIG,
            "phi_hidden_size": state_dict["fc_out.weight"].shape[1],
            "phi_num_hidden_layers": num_layers,
        },
        checkpoint_name=str(checkpoint),
        source=(
            "converted with hf-cir from the google-research/composed_image_retrieval (Pic2Word) checkpoint "
            f"`{Path(checkpoint).name}`."
        ),
        license=method_card_info("pic2word").license,
        tokenizer_name_or_path=tokenizer_name_or_path,
        push_to_hub=push_to_hub,
    )
