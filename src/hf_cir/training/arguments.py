# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""Command-line arguments shared by hf-cir's training scripts: data, accelerator, optimisation, checkpoints, logging
and the Hub, in the names and meanings of diffusers' training examples. Each script adds its own model arguments
and the defaults that differ (e.g. CompoDiff's warmup and weight decay)."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = [
    "add_accelerator_arguments",
    "add_checkpoint_arguments",
    "add_dataset_arguments",
    "add_hub_arguments",
    "add_logging_arguments",
    "add_optimization_arguments",
    "check_dataset_arguments",
    "check_training_arguments",
]

# The step counts every training script needs to be at least 1.
_POSITIVE_TRAINING_ARGUMENTS = (
    "train_batch_size",
    "max_train_steps",
    "gradient_accumulation_steps",
    "checkpointing_steps",
)


def add_dataset_arguments(
    parser: argparse.ArgumentParser, train_file_help: str = "Local csv/json/jsonl/parquet files."
) -> None:
    """`--dataset_name`/`--dataset_config_name` or `--train_file`, `--dataset_split` and `--cache_dir`: what
    `hf_cir.training.load_training_dataset` reads. Pair with `check_dataset_arguments` after parsing.

    Example:

    ```python
    >>> import argparse
    >>> from hf_cir.training.arguments import add_dataset_arguments
    >>> parser = argparse.ArgumentParser()
    >>> add_dataset_arguments(parser)
    >>> parser.parse_args(["--train_file", "a.csv"]).dataset_split
    'train'

    ```
    """
    parser.add_argument("--dataset_name", type=str, default=None, help="Hub dataset id, or a local dataset folder.")
    parser.add_argument("--dataset_config_name", type=str, default=None)
    parser.add_argument("--train_file", type=str, nargs="+", default=None, help=train_file_help)
    parser.add_argument("--dataset_split", type=str, default="train")
    parser.add_argument("--cache_dir", type=str, default=None, help="The `datasets` cache folder.")


def check_dataset_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit with a usage error unless exactly one of `--dataset_name` and `--train_file` was given.

    Example:

    ```python
    >>> import argparse
    >>> from hf_cir.training.arguments import add_dataset_arguments, check_dataset_arguments
    >>> parser = argparse.ArgumentParser()
    >>> add_dataset_arguments(parser)
    >>> check_dataset_arguments(parser, parser.parse_args(["--dataset_name", "my/captions"]))

    ```
    """
    if (args.dataset_name is None) == (args.train_file is None):
        parser.error("pass exactly one of --dataset_name and --train_file.")


def add_accelerator_arguments(parser: argparse.ArgumentParser) -> None:
    """`--mixed_precision` and `--cpu`, read by `hf_cir.training.build_accelerator`.

    Example:

    ```python
    >>> import argparse
    >>> from hf_cir.training.arguments import add_accelerator_arguments
    >>> parser = argparse.ArgumentParser()
    >>> add_accelerator_arguments(parser)
    >>> parser.parse_args(["--cpu"]).cpu
    True

    ```
    """
    parser.add_argument("--mixed_precision", type=str, default=None, choices=["no", "fp16", "bf16"])
    parser.add_argument("--cpu", action="store_true", help="Run on CPU even if an accelerator is present.")


def add_optimization_arguments(
    parser: argparse.ArgumentParser,
    *,
    max_train_steps: int,
    lr_scheduler: str,
    lr_warmup_steps: int,
    adam_weight_decay: float,
    max_grad_norm: float | None,
    use_ema: bool,
    trained: str = "the trained weights",
) -> None:
    """Seed, batch size, steps, AdamW, learning-rate schedule, gradient clipping and EMA; the defaults that differ
    between scripts are keyword arguments. With `use_ema=True` EMA is on by default and `--no-use_ema` turns it off;
    otherwise `--use_ema` turns it on. `trained` names what trains, for the help texts.

    Example:

    ```python
    >>> import argparse
    >>> from hf_cir.training.arguments import add_optimization_arguments
    >>> parser = argparse.ArgumentParser()
    >>> add_optimization_arguments(parser, max_train_steps=10, lr_scheduler="constant", lr_warmup_steps=0,
    ...                            adam_weight_decay=1e-2, max_grad_norm=None, use_ema=False)
    >>> args = parser.parse_args(["--use_ema"])
    >>> args.use_ema, args.max_train_steps
    (True, 10)

    ```
    """
    parser.add_argument("--seed", type=int, default=None, help="Seed (drawn at random and recorded when not given).")
    parser.add_argument("--train_batch_size", type=int, default=256, help="Batch size per device.")
    parser.add_argument("--max_train_steps", type=int, default=max_train_steps, help="Optimizer steps.")
    parser.add_argument("--gradient_accumulation_steps", type=int, default=1)
    parser.add_argument("--learning_rate", type=float, default=1e-4)
    parser.add_argument(
        "--lr_scheduler",
        type=str,
        default=lr_scheduler,
        help="A transformers scheduler: linear, cosine, cosine_with_restarts, polynomial, constant, constant_with_warmup.",
    )
    parser.add_argument("--lr_warmup_steps", type=int, default=lr_warmup_steps)
    parser.add_argument("--adam_beta1", type=float, default=0.9)
    parser.add_argument("--adam_beta2", type=float, default=0.999)
    parser.add_argument("--adam_weight_decay", type=float, default=adam_weight_decay)
    parser.add_argument("--adam_epsilon", type=float, default=1e-8)
    parser.add_argument("--max_grad_norm", type=float, default=max_grad_norm, help="Clip gradients to this norm.")
    ema_help = f"Keep an EMA of {trained}; the output holds the EMA weights."
    if use_ema:
        parser.add_argument("--use_ema", action=argparse.BooleanOptionalAction, default=True, help=ema_help)
    else:
        parser.add_argument("--use_ema", action="store_true", help=ema_help)
    parser.add_argument("--ema_decay", type=float, default=0.9999, help="EMA decay (0.9999 in both papers).")


def add_checkpoint_arguments(parser: argparse.ArgumentParser, *, checkpointing_steps: int) -> None:
    """`--output_dir` and the crash-safe checkpoints of `hf_cir.training.checkpointing`.

    Example:

    ```python
    >>> import argparse
    >>> from hf_cir.training.arguments import add_checkpoint_arguments
    >>> parser = argparse.ArgumentParser()
    >>> add_checkpoint_arguments(parser, checkpointing_steps=500)
    >>> parser.parse_args(["--output_dir", "out", "--resume_from_checkpoint", "latest"]).resume_from_checkpoint
    'latest'

    ```
    """
    parser.add_argument("--output_dir", type=str, required=True)
    parser.add_argument("--overwrite_output_dir", action="store_true", help="Delete checkpoints of an earlier run.")
    parser.add_argument(
        "--checkpointing_steps",
        type=int,
        default=checkpointing_steps,
        help="Save the training state every N steps.",
    )
    parser.add_argument("--checkpoints_total_limit", type=int, default=None, help="Keep at most N checkpoints.")
    parser.add_argument(
        "--resume_from_checkpoint", type=str, default=None, help="'latest' or a checkpoint folder: resume exactly."
    )


def add_logging_arguments(parser: argparse.ArgumentParser) -> None:
    """`--report_to` (accelerate trackers), `--logging_dir` (under `--output_dir`), `--logging_steps` and
    `--disable_tqdm` (alias `--no-progress`: no progress bars).

    Example:

    ```python
    >>> import argparse
    >>> from hf_cir.training.arguments import add_logging_arguments
    >>> parser = argparse.ArgumentParser()
    >>> add_logging_arguments(parser)
    >>> parser.parse_args([]).report_to
    'none'
    >>> parser.parse_args(["--no-progress"]).disable_tqdm
    True

    ```
    """
    parser.add_argument(
        "--report_to", type=str, default="none", help="accelerate trackers: tensorboard, wandb, all, none."
    )
    parser.add_argument("--logging_dir", type=str, default="logs")
    parser.add_argument("--logging_steps", type=int, default=1)
    parser.add_argument(
        "--disable_tqdm",
        "--no-progress",
        dest="disable_tqdm",
        action="store_true",
        help="No progress bars: neither the training step bar nor the loading bars of transformers, diffusers, "
        "datasets and huggingface_hub.",
    )


def add_hub_arguments(parser: argparse.ArgumentParser) -> None:
    """`--push_to_hub`, `--hub_model_id` (default: the output folder's name), `--hub_token`, `--hub_private_repo`,
    and `--license` (the model card's; see `hf_cir.training.resolve_training_license`).

    Example:

    ```python
    >>> import argparse
    >>> from hf_cir.training.arguments import add_hub_arguments
    >>> parser = argparse.ArgumentParser()
    >>> add_hub_arguments(parser)
    >>> parser.parse_args(["--push_to_hub"]).push_to_hub
    True

    ```
    """
    parser.add_argument("--push_to_hub", action="store_true")
    parser.add_argument("--hub_model_id", type=str, default=None)
    parser.add_argument("--hub_token", type=str, default=None)
    parser.add_argument("--hub_private_repo", action="store_true")
    parser.add_argument(
        "--license",
        type=str,
        default=None,
        help="License of the trained weights in the model card (a Hub license id, e.g. apache-2.0 or mit). Default: "
        "the license the starting checkpoint's card declares (a model trained from a converted LinCIR release keeps "
        "its cc-by-nc-4.0; one trained from CLIP takes CLIP's); none stated when it declares none.",
    )


def check_training_arguments(
    parser: argparse.ArgumentParser, args: argparse.Namespace, positive: tuple[str, ...] = ()
) -> None:
    """Exit with a usage error when a step count (the shared ones and `positive`) is below 1; default
    `--hub_model_id` to the output folder's name when pushing.

    Example:

    ```python
    >>> import argparse
    >>> from hf_cir.training.arguments import add_checkpoint_arguments, add_hub_arguments, add_optimization_arguments
    >>> from hf_cir.training.arguments import check_training_arguments
    >>> parser = argparse.ArgumentParser()
    >>> add_optimization_arguments(parser, max_train_steps=10, lr_scheduler="constant", lr_warmup_steps=0,
    ...                            adam_weight_decay=1e-2, max_grad_norm=None, use_ema=False)
    >>> add_checkpoint_arguments(parser, checkpointing_steps=5)
    >>> add_hub_arguments(parser)
    >>> args = parser.parse_args(["--output_dir", "runs/my-model", "--push_to_hub"])
    >>> check_training_arguments(parser, args)
    >>> args.hub_model_id
    'my-model'

    ```
    """
    for name in (*_POSITIVE_TRAINING_ARGUMENTS, *positive):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}.")
    if args.push_to_hub and args.hub_model_id is None:
        args.hub_model_id = Path(args.output_dir).name
