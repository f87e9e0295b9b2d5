# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""Reusable pieces of hf-cir's training scripts (`training/train_lincir.py`, `training/train_compodiff.py`):
keyword masking, training data, crash-safe checkpoints, EMA in safetensors, and model cards of training runs.
"""

from .card import push_output_to_hub, training_arguments, training_details_markdown, write_training_model_card
from .checkpointing import (
    check_output_dir,
    find_latest_checkpoint,
    list_checkpoints,
    load_ema,
    load_training_state,
    resolve_resume_checkpoint,
    save_checkpoint,
    save_ema,
)
from .data import IndexStream, filter_captions, load_training_dataset, mask_caption_dataset, require_columns
from .keywords import (
    BuiltinKeywordExtractor,
    CaptionMasker,
    SpacyKeywordExtractor,
    clean_caption,
    get_keyword_extractor,
)
from .utils import import_callable, isolated_rng, mixed_precision_dtype, resolve_seed

__all__ = [
    "BuiltinKeywordExtractor",
    "CaptionMasker",
    "IndexStream",
    "SpacyKeywordExtractor",
    "check_output_dir",
    "clean_caption",
    "filter_captions",
    "find_latest_checkpoint",
    "get_keyword_extractor",
    "import_callable",
    "isolated_rng",
    "list_checkpoints",
    "load_ema",
    "load_training_dataset",
    "load_training_state",
    "mask_caption_dataset",
    "mixed_precision_dtype",
    "push_output_to_hub",
    "require_columns",
    "resolve_resume_checkpoint",
    "resolve_seed",
    "save_checkpoint",
    "save_ema",
    "training_arguments",
    "training_details_markdown",
    "write_training_model_card",
]
