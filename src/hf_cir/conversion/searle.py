# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""Convert a released SEARLE phi checkpoint (`SEARLE_ViT-B32.pt`, `SEARLE_ViT-L14.pt`) into a LinCIR-family folder.

SEARLE (Baldrati et al., "Zero-Shot Composed Image Retrieval with Textual Inversion", ICCV 2023,
https://arxiv.org/abs/2303.15247; code: miccunifi/SEARLE) releases `{"Phi": state_dict}` torch pickles, read here
with `torch.load(..., weights_only=True)`. Its `Phi` (`src/phi.py`) is the module LinCIR copied, so the keys map as
for LinCIR (`hf_cir.conversion.lincir.PHI_KEY_MAPPING`). The settings that make it SEARLE (`SEARLE_CONFIG`), from
the reference code:

- the image embedding goes into phi unnormalised (`utils.extract_pseudo_tokens_with_phi`);
- the placeholder is `$`, and `encode_with_pseudo_tokens` replaces only the first `$` of each text;
- the prompt is `a photo of $ that {relative caption}` (`validate.py`).

`hubconf.py` pairs ViT-B/32 (512-2048-512) with `openai/clip-vit-base-patch32` and ViT-L/14 (768-3072-768) with
`openai/clip-vit-large-patch14`, the transformers copies of OpenAI's CLIP that SEARLE ran on. SEARLE's own evaluation
preprocesses images with its "targetpad" transform; the converted folder uses the standard CLIP image processor of
`--clip`.

Usage:

```bash
hf-cir convert searle --phi-checkpoint SEARLE_ViT-L14.pt --clip openai/clip-vit-large-patch14 --output-dir searle-xl
```
"""

from __future__ import annotations

import os
from pathlib import Path

from ..hub import method_card_info
from ..models.lincir import LinCIRModel
from .lincir import convert_phi_state_dict, load_reference_phi
from .textual_inversion import build_textual_inversion_folder

# SEARLE's settings of the model family (see the module docstring for where each comes from).
SEARLE_CONFIG = {
    "method_name": "searle",
    "phi_type": "mlp",
    "phi_dropout": 0.5,  # hubconf.py
    "normalize_image_embeds": False,
    "placeholder_token": "$",
    "placeholder_replacement": "first",
    "prompt_template": "a photo of $ that {}",
}

__all__ = ["SEARLE_CONFIG", "convert_searle_checkpoint"]


def convert_searle_checkpoint(
    phi_checkpoint: str | os.PathLike,
    clip_name_or_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    tokenizer_name_or_path: str | os.PathLike | None = None,
    push_to_hub: str | None = None,
) -> LinCIRModel:
    r"""
    Build a SEARLE folder (safetensors weights, config, processor, model card, remote-code files) from a released
    SEARLE checkpoint and the CLIP checkpoint it was trained on.

    Args:
        phi_checkpoint (`str` or `os.PathLike`): The released checkpoint, e.g. `SEARLE_ViT-L14.pt`.
        clip_name_or_path (`str` or `os.PathLike`): The transformers CLIP checkpoint (folder or Hub id), e.g.
            `openai/clip-vit-large-patch14` for `SEARLE_ViT-L14.pt`.
        output_dir (`str` or `os.PathLike`): Where to write the folder; it must not exist or be empty. Written
            atomically.
        tokenizer_name_or_path (`str` or `os.PathLike`, *optional*): Tokenizer folder or Hub id; defaults to the
            one stored with the CLIP checkpoint.
        push_to_hub (`str`, *optional*): Also upload the folder to this Hub repository id.

    Returns:
        The converted [`LinCIRModel`] with SEARLE's config (in eval mode).

    Raises:
        ValueError: the checkpoint is not a SEARLE phi, or its shapes don't fit the CLIP (both shapes named).
        FileExistsError: `output_dir` exists and is not empty.

    Example (a SEARLE-format file made from the shipped toy LinCIR's phi, converted onto the toy CLIP):

    ```python
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> from hf_cir import LinCIRModel
    >>> from hf_cir.conversion.searle import convert_searle_checkpoint
    >>> from hf_cir.toy import toy_checkpoint
    >>> folder = Path(tempfile.mkdtemp())
    >>> phi = LinCIRModel.from_pretrained(toy_checkpoint("lincir")).phi.state_dict()
    >>> torch.save({"Phi": phi}, folder / "SEARLE_toy.pt")  # the layout of SEARLE_ViT-L14.pt
    >>> model = convert_searle_checkpoint(folder / "SEARLE_toy.pt", toy_checkpoint("clip"), folder / "searle")
    >>> model.config.method_name, model.config.placeholder_replacement, model.config.prompt_template
    ('searle', 'first', 'a photo of $ that {}')

    ```
    """
    state_dict = convert_phi_state_dict(load_reference_phi(phi_checkpoint))
    return build_textual_inversion_folder(
        state_dict,
        clip_name_or_path,
        output_dir,
        config={**SEARLE_CONFIG, "phi_hidden_size": state_dict["layers.0.weight"].shape[0]},
        checkpoint_name=str(phi_checkpoint),
        source=f"converted with hf-cir from the miccunifi/SEARLE checkpoint `{Path(phi_checkpoint).name}`.",
        license=method_card_info("searle").license,
        tokenizer_name_or_path=tokenizer_name_or_path,
        push_to_hub=push_to_hub,
    )
