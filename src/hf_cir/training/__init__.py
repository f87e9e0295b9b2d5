# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""Reusable pieces of hf-cir's training scripts (`training/train_lincir.py`, `training/train_compodiff.py`):
shared arguments, the run's start/step/finish around its loop, keyword masking, training data, crash-safe checkpoints,
EMA in safetensors, and model cards of training runs.
"""

from .arguments import (
    add_accelerator_arguments,
    add_checkpoint_arguments,
    add_dataset_arguments,
    add_hub_arguments,
    add_logging_arguments,
    add_optimization_arguments,
    check_dataset_arguments,
    check_training_arguments,
)
from .card import push_output_to_hub, training_arguments, training_details_markdown, write_training_model_card
from .checkpointing import (
    check_output_dir,
    create_ema,
    find_latest_checkpoint,
    list_checkpoints,
    load_ema,
    load_training_state,
    register_checkpoint_hooks,
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
from .run import (
    build_accelerator,
    create_optimizer_and_scheduler,
    finish_run,
    init_trackers,
    log_training_step,
    optimizer_step,
    resume_training,
    start_run,
    train_results,
)
from .utils import import_callable, isolated_rng, load_pretrained, mixed_precision_dtype, resolve_seed

__all__ = [
    "BuiltinKeywordExtractor",
    "CaptionMasker",
    "IndexStream",
    "SpacyKeywordExtractor",
    "add_accelerator_arguments",
    "add_checkpoint_arguments",
    "add_dataset_arguments",
    "add_hub_arguments",
    "add_logging_arguments",
    "add_optimization_arguments",
    "build_accelerator",
    "check_dataset_arguments",
    "check_output_dir",
    "check_training_arguments",
    "clean_caption",
    "create_ema",
    "create_optimizer_and_scheduler",
    "filter_captions",
    "find_latest_checkpoint",
    "finish_run",
    "get_keyword_extractor",
    "import_callable",
    "init_trackers",
    "isolated_rng",
    "list_checkpoints",
    "load_ema",
    "load_pretrained",
    "load_training_dataset",
    "load_training_state",
    "log_training_step",
    "mask_caption_dataset",
    "mixed_precision_dtype",
    "optimizer_step",
    "push_output_to_hub",
    "register_checkpoint_hooks",
    "require_columns",
    "resolve_resume_checkpoint",
    "resolve_seed",
    "resume_training",
    "save_checkpoint",
    "save_ema",
    "start_run",
    "train_results",
    "training_arguments",
    "training_details_markdown",
    "write_training_model_card",
]
