# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""The steps every hf-cir training run takes around its own loop: build the `Accelerator`, start (resume checkpoint
-> output folder check -> seed), create the optimizer and schedule, step and log, resume, and finish (training log,
Hub push). They read the arguments of `hf_cir.training.arguments`."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration, set_seed
from transformers import get_scheduler

from ..utils import atomic_file
from ..utils.errors import one_line
from ..utils.progress import disable_progress_bars
from .card import push_output_to_hub, training_arguments
from .checkpointing import check_output_dir, load_training_state, resolve_resume_checkpoint
from .outputs import claim_outputs
from .utils import resolve_seed

__all__ = [
    "build_accelerator",
    "create_optimizer_and_scheduler",
    "disable_progress_bars",
    "finish_run",
    "init_trackers",
    "log_training_step",
    "optimizer_step",
    "resume_training",
    "start_run",
    "train_results",
    "training_progress_bar",
]

logger = get_logger(__name__, log_level="INFO")

TRAINING_LOG_NAME = "training_log.json"


def build_accelerator(args, *, tracking: bool = True) -> Accelerator:
    """The run's `Accelerator` from `--mixed_precision` and `--cpu`; with `tracking`, also from `--report_to`,
    `--output_dir`, `--logging_dir` and `--checkpoints_total_limit` (the project folder accelerate saves states and
    tracker logs in). Sets up logging, logs the distributed state of every process, and with `--disable_tqdm` turns
    off the libraries' progress bars (`disable_progress_bars`).

    Example:

    ```python
    >>> import argparse
    >>> from hf_cir.training import build_accelerator
    >>> accelerator = build_accelerator(argparse.Namespace(mixed_precision=None, cpu=True), tracking=False)
    >>> accelerator.device.type
    'cpu'

    ```
    """
    kwargs = {}
    if tracking:
        output_dir = Path(args.output_dir)
        kwargs["log_with"] = None if args.report_to == "none" else args.report_to
        kwargs["project_config"] = ProjectConfiguration(
            project_dir=str(output_dir),
            logging_dir=str(output_dir / args.logging_dir),
            total_limit=args.checkpoints_total_limit,
        )
    if getattr(args, "disable_tqdm", False):
        disable_progress_bars()
    accelerator = Accelerator(mixed_precision=args.mixed_precision, cpu=args.cpu, **kwargs)
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    logger.info(accelerator.state, main_process_only=False)
    return accelerator


def training_progress_bar(accelerator: Accelerator, args, global_step: int = 0):
    """A tqdm bar over the optimizer steps, with the rate and the time left, starting at `global_step` (a resumed
    run); `log_training_step` advances it and shows the loss. Shown on the local main process unless
    `--disable_tqdm`.

    Example:

    ```python
    >>> import argparse
    >>> from hf_cir.training import build_accelerator, training_progress_bar
    >>> accelerator = build_accelerator(argparse.Namespace(mixed_precision=None, cpu=True), tracking=False)
    >>> bar = training_progress_bar(accelerator, argparse.Namespace(max_train_steps=10, disable_tqdm=True), 4)
    >>> bar.n, bar.total, bar.disable
    (4, 10, True)

    ```
    """
    from tqdm.auto import tqdm

    return tqdm(
        total=args.max_train_steps,
        initial=global_step,
        desc="Steps",
        unit="step",
        disable=getattr(args, "disable_tqdm", False) or not accelerator.is_local_main_process,
    )


def start_run(accelerator: Accelerator, args, run_identity: dict, may_write=None) -> tuple[Path | None, dict, int]:
    """Start or resume a run in `--output_dir`, in the order that makes resumption exact: resolve
    `--resume_from_checkpoint` before anything random happens, check the output folder against `run_identity` (what
    must not change between a run and its resumption) and against what the run may write there (`may_write`, see
    `hf_cir.training.outputs.output_entry_matcher`: nothing hf-cir did not write is ever replaced; main process),
    then seed every process with the checkpoint's seed, `--seed`, or one drawn at random.

    Returns `(resume_dir, state, seed)`: the checkpoint folder to load (or `None`) and its training state (or `{}`).

    Example:

    ```python
    >>> import argparse, tempfile
    >>> from hf_cir.training import build_accelerator, start_run
    >>> args = argparse.Namespace(output_dir=tempfile.mkdtemp(), resume_from_checkpoint=None,
    ...                           overwrite_output_dir=False, seed=0)
    >>> accelerator = build_accelerator(argparse.Namespace(mixed_precision=None, cpu=True), tracking=False)
    >>> start_run(accelerator, args, {"script": "doc"})
    (None, {}, 0)

    ```
    """
    output_dir = Path(args.output_dir)
    resume_dir = resolve_resume_checkpoint(output_dir, args.resume_from_checkpoint)
    if accelerator.is_main_process:
        check_output_dir(
            output_dir, run_identity, args.resume_from_checkpoint, args.overwrite_output_dir, may_write=may_write
        )
    accelerator.wait_for_everyone()
    state = load_training_state(resume_dir) if resume_dir is not None else {}
    seed = state.get("seed", resolve_seed(accelerator, args.seed))
    set_seed(seed, device_specific=True)
    return resume_dir, state, seed


def init_trackers(accelerator: Accelerator, args, project_name: str) -> None:
    """Start the `--report_to` trackers (main process) with the run's scalar arguments as their config.

    Example:

    ```python
    >>> import argparse
    >>> from hf_cir.training import build_accelerator, init_trackers
    >>> accelerator = build_accelerator(argparse.Namespace(mixed_precision=None, cpu=True), tracking=False)
    >>> init_trackers(accelerator, argparse.Namespace(learning_rate=1e-4), "doc")

    ```
    """
    if accelerator.is_main_process:
        config = {k: v for k, v in training_arguments(args).items() if isinstance(v, (int, float, str, bool))}
        accelerator.init_trackers(project_name, config=config)


def create_optimizer_and_scheduler(
    parameters: Iterable[torch.nn.Parameter], args, accelerator: Accelerator
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW over `parameters` and the `--lr_scheduler` schedule. The accelerate-prepared scheduler steps once per
    process per optimizer step, so warmup and length are counted in process steps.

    Example:

    ```python
    >>> import argparse, torch
    >>> from hf_cir.training import build_accelerator, create_optimizer_and_scheduler
    >>> args = argparse.Namespace(learning_rate=1e-3, adam_beta1=0.9, adam_beta2=0.999, adam_weight_decay=0.0,
    ...                           adam_epsilon=1e-8, lr_scheduler="constant", lr_warmup_steps=0, max_train_steps=10)
    >>> accelerator = build_accelerator(argparse.Namespace(mixed_precision=None, cpu=True), tracking=False)
    >>> optimizer, lr_scheduler = create_optimizer_and_scheduler(torch.nn.Linear(2, 2).parameters(), args, accelerator)
    >>> lr_scheduler.get_last_lr()
    [0.001]

    ```
    """
    optimizer = torch.optim.AdamW(
        parameters,
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.adam_weight_decay,
        eps=args.adam_epsilon,
    )
    lr_scheduler = get_scheduler(
        args.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=args.max_train_steps * accelerator.num_processes,
    )
    return optimizer, lr_scheduler


def resume_training(accelerator: Accelerator, args, resume_dir: Path | None, state: dict) -> tuple[int, list]:
    """Load the checkpoint `start_run` resolved (call it last before the loop: it restores the random states the
    loop continues from). Returns `(global_step, log_history)`, `(0, [])` for a new run.

    Example:

    ```python
    >>> import argparse, tempfile
    >>> from hf_cir.training import build_accelerator, resume_training
    >>> args = argparse.Namespace(output_dir=tempfile.mkdtemp(), resume_from_checkpoint=None)
    >>> accelerator = build_accelerator(argparse.Namespace(mixed_precision=None, cpu=True), tracking=False)
    >>> resume_training(accelerator, args, None, {})
    (0, [])

    ```
    """
    if resume_dir is None:
        if args.resume_from_checkpoint == "latest":
            logger.info(f"No checkpoint in {args.output_dir}; starting a new run.")
        return 0, []
    logger.info(f"Resuming from {resume_dir}")
    try:
        accelerator.load_state(str(resume_dir))
    except Exception as error:  # e.g. weights of another model size: the checkpoint does not fit this run
        raise ValueError(f"Cannot resume from {resume_dir}: {one_line(error)}") from error
    return state["global_step"], state.get("log_history", [])


def optimizer_step(
    accelerator: Accelerator,
    optimizer: torch.optim.Optimizer,
    lr_scheduler,
    parameters: list[torch.nn.Parameter],
    max_grad_norm: float | None = None,
    ema=None,
) -> None:
    """One optimizer step after the accumulated backward passes: clip the gradients of `parameters` to
    `max_grad_norm` (when > 0), step the optimizer and schedule, clear the gradients, and update the EMA of
    `parameters` (a `diffusers.training_utils.EMAModel`, when kept).

    Example:

    ```python
    >>> import argparse, torch
    >>> from hf_cir.training import build_accelerator, create_optimizer_and_scheduler, optimizer_step
    >>> args = argparse.Namespace(learning_rate=1e-3, adam_beta1=0.9, adam_beta2=0.999, adam_weight_decay=0.0,
    ...                           adam_epsilon=1e-8, lr_scheduler="constant", lr_warmup_steps=0, max_train_steps=10)
    >>> accelerator = build_accelerator(argparse.Namespace(mixed_precision=None, cpu=True), tracking=False)
    >>> layer = torch.nn.Linear(2, 1)
    >>> optimizer, lr_scheduler = create_optimizer_and_scheduler(layer.parameters(), args, accelerator)
    >>> accelerator.backward(layer(torch.ones(1, 2)).sum())
    >>> optimizer_step(accelerator, optimizer, lr_scheduler, list(layer.parameters()), max_grad_norm=1.0)
    >>> layer.weight.grad is None
    True

    ```
    """
    if max_grad_norm is not None and max_grad_norm > 0:
        accelerator.clip_grad_norm_(parameters, max_grad_norm)
    optimizer.step()
    lr_scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    if ema is not None:
        ema.step(parameters)


def log_training_step(
    accelerator: Accelerator,
    args,
    global_step: int,
    step_loss: torch.Tensor,
    lr_scheduler,
    log_history: list,
    progress_bar=None,
) -> float:
    """End of an optimizer step: average `step_loss` over processes; every `--logging_steps` steps and at the last
    step, log it with the learning rate to the trackers and `log_history`. The `training_progress_bar` advances and
    shows the loss; without a bar shown, the logged steps go to the console. Returns the averaged loss.

    Example:

    ```python
    >>> import argparse, torch
    >>> from hf_cir.training import build_accelerator, create_optimizer_and_scheduler, log_training_step
    >>> args = argparse.Namespace(learning_rate=1e-3, adam_beta1=0.9, adam_beta2=0.999, adam_weight_decay=0.0,
    ...                           adam_epsilon=1e-8, lr_scheduler="constant", lr_warmup_steps=0, max_train_steps=10,
    ...                           logging_steps=1)
    >>> accelerator = build_accelerator(argparse.Namespace(mixed_precision=None, cpu=True), tracking=False)
    >>> _, lr_scheduler = create_optimizer_and_scheduler(torch.nn.Linear(2, 1).parameters(), args, accelerator)
    >>> history = []
    >>> log_training_step(accelerator, args, 1, torch.tensor(0.5), lr_scheduler, history)
    0.5
    >>> history
    [{'step': 1, 'train/loss': 0.5, 'train/lr': 0.001}]

    ```
    """
    step_loss = accelerator.reduce(step_loss, reduction="mean").item()
    showing_bar = progress_bar is not None and not progress_bar.disable
    if showing_bar:
        progress_bar.set_postfix(loss=f"{step_loss:.4g}", lr=f"{lr_scheduler.get_last_lr()[0]:.3g}", refresh=False)
        progress_bar.update(1)
    if global_step % args.logging_steps == 0 or global_step == args.max_train_steps:
        logs = {"train/loss": step_loss, "train/lr": lr_scheduler.get_last_lr()[0]}
        accelerator.log(logs, step=global_step)
        log_history.append({"step": global_step, **logs})
        if not showing_bar:
            logger.info(f"step {global_step}: loss {step_loss:.6f}")
    return step_loss


def train_results(log_history: list) -> dict:
    """The results a model card records from the training log: the last logged training loss.

    Example:

    ```python
    >>> from hf_cir.training import train_results
    >>> train_results([{"step": 1, "train/loss": 0.5}, {"step": 2, "train/loss": 0.25}])
    {'final_train_loss': 0.25}

    ```
    """
    losses = [entry["train/loss"] for entry in log_history if "train/loss" in entry]
    return {"final_train_loss": losses[-1]} if losses else {}


def finish_run(args, log_history: list) -> None:
    """After the output is saved (main process): write `training_log.json` to `--output_dir` and, with
    `--push_to_hub`, upload the folder (without checkpoints) to `--hub_model_id`.

    Example:

    ```python
    >>> import argparse, tempfile
    >>> from hf_cir.training import finish_run
    >>> finish_run(argparse.Namespace(output_dir=tempfile.mkdtemp(), push_to_hub=False), [{"step": 1}])

    ```
    """
    output_dir = Path(args.output_dir)
    claim_outputs(output_dir, [TRAINING_LOG_NAME])
    with atomic_file(output_dir / TRAINING_LOG_NAME, "w") as handle:
        json.dump(log_history, handle, indent=1)
    if args.push_to_hub:
        push_output_to_hub(output_dir, args.hub_model_id, token=args.hub_token, private=args.hub_private_repo or None)
