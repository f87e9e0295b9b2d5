# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""MagicLens folders on the Hub side: the model card (`model_cards/magiclens.md`), the folder writer and the folder
kind that `--overwrite` may replace."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from ..utils.io import ArtefactKind
from .model_cards import PIPELINE_TAG, render_model_card
from .saving import TRANSFORMERS_FOLDER_ENTRIES

__all__ = [
    "MAGICLENS_CITATION",
    "MAGICLENS_FOLDER",
    "MAGICLENS_LICENSE",
    "MAGICLENS_TAGS",
    "create_magiclens_model_card",
    "save_magiclens_folder",
]

MAGICLENS_TAGS = ("composed-image-retrieval", "magiclens", "clip")
# The released MagicLens weights are CC-BY-4.0; the code (google-deepmind/magiclens and hf-cir) is Apache-2.0.
MAGICLENS_LICENSE = "cc-by-4.0"
MAGICLENS_CITATION = """@inproceedings{zhang2024magiclens,
  title     = {{M}agic{L}ens: Self-Supervised Image Retrieval with Open-Ended Instructions},
  author    = {Zhang, Kai and Luan, Yi and Hu, Hexiang and Lee, Kenton and Qiao, Siyuan and Chen, Wenhu and Su, Yu and
               Chang, Ming-Wei},
  booktitle = {Proceedings of the 41st International Conference on Machine Learning},
  pages     = {59403--59420},
  year      = {2024},
  volume    = {235},
  series    = {Proceedings of Machine Learning Research},
  publisher = {PMLR},
  url       = {https://proceedings.mlr.press/v235/zhang24an.html}
}"""

# What a MagicLens folder holds, so that `--overwrite` replaces only such a folder (`hf_cir.utils.io`).
MAGICLENS_FOLDER = ArtefactKind(
    "MagicLens model folder",
    "config.json",
    lambda config: config.get("model_type") == "magiclens",
    entries=TRANSFORMERS_FOLDER_ENTRIES,
)


def create_magiclens_model_card(
    model,
    *,
    model_id: str | None = None,
    source: str | None = None,
    license: str | None = MAGICLENS_LICENSE,
) -> ModelCard:
    r"""
    Render `model_cards/magiclens.md` for a [`MagicLensModel`] (every size comes from its config).

    Args:
        model ([`MagicLensModel`]): The model the card describes.
        model_id (`str`, *optional*): The Hub repository id (title, `model_name`, usage snippet).
        source (`str`, *optional*): Where the weights come from (e.g. the converted release file).
        license (`str`, *optional*, defaults to `"cc-by-4.0"`): The license of the weights (the released ones are
            CC-BY-4.0; the code is Apache-2.0, which the card states too).

    Example:

    ```python
    >>> from types import SimpleNamespace
    >>> from hf_cir import MagicLensConfig
    >>> from hf_cir.hub.magiclens import create_magiclens_model_card
    >>> card = create_magiclens_model_card(SimpleNamespace(config=MagicLensConfig()), source="magic_lens_clip_base.pkl")
    >>> card.data.license, card.data.tags
    ('cc-by-4.0', ['composed-image-retrieval', 'magiclens', 'clip'])

    ```
    """
    config = model.config
    card_data = ModelCardData(
        license=license,
        library_name="transformers",
        pipeline_tag=PIPELINE_TAG,
        tags=list(MAGICLENS_TAGS),
        model_name=model_id or "MagicLens",
    )
    vision, text = config.vision_config, config.text_config
    return render_model_card(
        "magiclens",
        card_data,
        model_id=model_id,
        usage_id=model_id or "path/to/this/folder",
        source=source,
        vision_layers=vision.num_hidden_layers,
        vision_width=vision.hidden_size,
        image_size=vision.image_size,
        patch_size=vision.patch_size,
        text_layers=text.num_hidden_layers,
        text_width=text.hidden_size,
        projection_dim=config.projection_dim,
        fusion_layers=config.fusion_num_hidden_layers,
        fusion_heads=config.fusion_num_attention_heads,
        fusion_intermediate=config.fusion_intermediate_size,
        pooler_heads=config.pooler_num_attention_heads,
        pooler_head_dim=config.pooler_head_dim,
        citation=MAGICLENS_CITATION,
    )


def save_magiclens_folder(model, save_directory: Path, processor=None) -> None:
    """A MagicLens model (and its processor) written by their own `save_pretrained` (safetensors, and the modeling
    files for remote code); no card."""
    if processor is not None:
        image_size = getattr(processor.image_processor, "size", None)
        if image_size != model.config.vision_config.image_size:
            raise ValueError(
                f"The processor resizes images to {image_size} px but the model's vision tower takes "
                f"{model.config.vision_config.image_size} px."
            )
    model.save_pretrained(save_directory)
    if processor is not None:
        processor.save_pretrained(save_directory)
