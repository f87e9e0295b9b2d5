#!/usr/bin/env python
# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""Train CompoDiff's denoising prior (Gu et al., "CompoDiff: Versatile Composed Image Retrieval With Latent
Diffusion", TMLR 2024) in its two stages, with Accelerate, on precomputed CLIP embeddings.

Stage 1 learns text -> image embedding (image condition and mask zero):

    accelerate launch training/train_compodiff.py --stage 1 --train_data embeddings/t2i --output_dir compodiff-stage1

Stage 2 starts from stage 1 and trains the multi-task mix (default 40% triplets, 30% text-to-image, 30% masked):

    accelerate launch training/train_compodiff.py --stage 2 --stage1_model_name_or_path compodiff-stage1 \\
        --train_data embeddings/triplets embeddings/t2i embeddings/masked --output_dir compodiff

The loss is the MSE between the predicted and the true clean image embedding at uniformly drawn timesteps, noised
with `CompoDiffScheduler.add_noise`. Embeddings come from training/precompute_embeddings.py (format in
training/README.md); the output is a complete `CompoDiffPipeline` folder.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate.logging import get_logger
from transformers import AutoImageProcessor, AutoTokenizer, CLIPTextModel, CLIPVisionModelWithProjection

from hf_cir import CompoDiffPipeline, CompoDiffPriorTransformer, CompoDiffScheduler
from hf_cir.hub import create_compodiff_model_card, portable_path, save_pretrained
from hf_cir.hub.saving import COMPODIFF_FOLDER
from hf_cir.training import (
    TrainingArgumentParser,
    add_accelerator_arguments,
    add_checkpoint_arguments,
    add_hub_arguments,
    add_logging_arguments,
    add_optimization_arguments,
    build_accelerator,
    check_training_arguments,
    create_ema,
    create_optimizer_and_scheduler,
    finish_run,
    init_trackers,
    load_pretrained,
    log_training_step,
    optimizer_step,
    output_entry_matcher,
    publish_outputs,
    register_checkpoint_hooks,
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
from hf_cir.training.embeddings import (
    TASKS,
    CompoDiffBatchSampler,
    build_task_pools,
    load_embedding_dataset,
    load_null_text_embeds,
)

logger = get_logger(__name__, log_level="INFO")

PRIOR_WEIGHTS_NAME = "prior.safetensors"
EMA_WEIGHTS_NAME = "prior_ema"  # an EMAModel.save_pretrained folder
LEGACY_EMA_WEIGHTS_NAMES = ("ema_prior.safetensors",)  # the safetensors file of checkpoints before that folder
PRIOR_SIZE_ARGUMENTS = (
    "num_layers",
    "num_attention_heads",
    "attention_head_dim",
    "num_cross_attention_heads",
    "mask_size",
    "num_train_timesteps",
)


def build_parser() -> argparse.ArgumentParser:
    parser = TrainingArgumentParser(
        prog="train_compodiff.py", description="Train CompoDiff's prior (stage 1 or 2) on precomputed embeddings."
    )
    parser.add_argument("--stage", type=int, required=True, choices=[1, 2])
    parser.add_argument(
        "--train_data", type=str, nargs="+", required=True, help="Embedding datasets (folders or Hub ids)."
    )
    parser.add_argument("--dataset_split", type=str, default="train")
    parser.add_argument("--cache_dir", type=str, default=None)
    # Model
    parser.add_argument(
        "--stage1_model_name_or_path", type=str, default=None, help="Stage 2: the stage-1 pipeline folder."
    )
    parser.add_argument("--prior_config", type=str, default=None, help="Stage 1: a JSON config of the prior.")
    parser.add_argument(
        "--pretrained_prior_name_or_path", type=str, default=None, help="Stage 1: start from this prior."
    )
    parser.add_argument("--num_layers", type=int, default=None, help="Stage 1 prior size (default: the model's 12).")
    parser.add_argument("--num_attention_heads", type=int, default=None)
    parser.add_argument("--attention_head_dim", type=int, default=None)
    parser.add_argument("--num_cross_attention_heads", type=int, default=None)
    parser.add_argument("--mask_size", type=int, default=None)
    parser.add_argument("--num_train_timesteps", type=int, default=None)
    parser.add_argument(
        "--text_encoder_name_or_path", type=str, default=None, help="Default: from the embeddings' info."
    )
    parser.add_argument(
        "--image_encoder_name_or_path", type=str, default=None, help="Default: from the embeddings' info."
    )
    parser.add_argument("--tokenizer_name_or_path", type=str, default=None)
    parser.add_argument("--image_processor_name_or_path", type=str, default=None)
    parser.add_argument(
        "--null_text_embeds", type=str, default=None, help="Encoded empty prompt (default: from the data)."
    )
    # Task mix and guidance
    parser.add_argument("--triplet_ratio", type=float, default=0.4, help="Stage 2 share of triplets.")
    parser.add_argument("--t2i_ratio", type=float, default=0.3, help="Stage 2 share of text-to-image examples.")
    parser.add_argument("--masked_ratio", type=float, default=0.3, help="Stage 2 share of masked examples.")
    parser.add_argument("--swap_probability", type=float, default=0.5, help="Swap reference/target of a triplet.")
    parser.add_argument("--text_drop_probability", type=float, default=0.1, help="Classifier-free guidance text drop.")
    parser.add_argument(
        "--image_drop_probability", type=float, default=0.1, help="Classifier-free guidance image drop."
    )
    # Optimisation, checkpoints, logging, Hub
    add_optimization_arguments(
        parser,
        max_train_steps=100_000,
        lr_scheduler="constant_with_warmup",
        lr_warmup_steps=1000,
        adam_weight_decay=6e-2,  # the paper's
        max_grad_norm=1.0,
        use_ema=True,
        trained="the prior",
    )
    add_accelerator_arguments(parser)
    add_checkpoint_arguments(parser, checkpointing_steps=1000)
    add_logging_arguments(parser)
    add_hub_arguments(parser)
    return parser


def parse_args(input_args=None):
    parser = build_parser()
    args = parser.parse_args(input_args)
    check_training_arguments(parser, args, positive=("logging_steps",))
    for name in ("triplet_ratio", "t2i_ratio", "masked_ratio"):
        if getattr(args, name) < 0:
            parser.error(f"--{name} must be >= 0, got {getattr(args, name)}.")
    if args.stage == 2 and args.stage1_model_name_or_path is None:
        parser.error("--stage 2 starts from stage 1: pass --stage1_model_name_or_path (the stage-1 output folder).")
    if args.stage == 1 and args.stage1_model_name_or_path is not None:
        parser.error(
            "--stage1_model_name_or_path is for --stage 2; stage 1 can start from --pretrained_prior_name_or_path."
        )
    return args


def task_mix(args) -> dict[str, float]:
    if args.stage == 1:
        return {"t2i": 1.0}
    mix = {"triplet": args.triplet_ratio, "t2i": args.t2i_ratio, "masked": args.masked_ratio}
    if sum(mix.values()) <= 0:
        raise ValueError("--triplet_ratio, --t2i_ratio and --masked_ratio are all 0.")
    return mix


def run_identity(args, num_processes: int) -> dict:
    return {
        "script": "train_compodiff.py",
        "stage": args.stage,
        "train_data": list(args.train_data),
        "stage1_model_name_or_path": args.stage1_model_name_or_path,
        "task_mix": task_mix(args),
        "global_batch_size": args.train_batch_size * num_processes * args.gradient_accumulation_steps,
    }


# The folders of the output pipeline (its model_index.json entries).
PIPELINE_COMPONENTS = ("prior", "scheduler", "text_encoder", "tokenizer", "image_encoder", "image_processor")


def output_entries(args) -> list[str]:
    """What this run may write at the top of `--output_dir` besides the pipeline's files and the checkpoints."""
    logging_dir = Path(args.logging_dir)
    logs = [] if logging_dir.is_absolute() or not logging_dir.parts else [logging_dir.parts[0]]
    return [*PIPELINE_COMPONENTS, *logs]


def _stage1_prior_folder(path: str) -> tuple[str, str | None]:
    root = Path(path)
    if root.is_dir():
        if (root / "prior" / "config.json").is_file():
            return str(root), "prior"
        if (root / "config.json").is_file():
            return str(root), None
        raise FileNotFoundError(
            f"--stage1_model_name_or_path {path} holds no stage-1 prior (neither prior/config.json nor config.json); "
            "pass the output folder of a `--stage 1` run."
        )
    if len(str(path).split("/")) == 2:  # a Hub id of a pipeline
        return str(path), "prior"
    raise FileNotFoundError(
        f"--stage1_model_name_or_path {path} does not exist; pass the output folder of a `--stage 1` run."
    )


def build_prior(args, info: dict, embedding_dim: int, text_embed_dim: int) -> CompoDiffPriorTransformer:
    if args.stage == 2:
        name, subfolder = _stage1_prior_folder(args.stage1_model_name_or_path)
        return CompoDiffPriorTransformer.from_pretrained(name, subfolder=subfolder, dtype=torch.float32)
    if args.pretrained_prior_name_or_path is not None:
        name, subfolder = _stage1_prior_folder(args.pretrained_prior_name_or_path)
        return CompoDiffPriorTransformer.from_pretrained(name, subfolder=subfolder, dtype=torch.float32)
    config = {}
    if args.prior_config is not None:
        if not os.path.isfile(args.prior_config):
            raise FileNotFoundError(f"--prior_config {args.prior_config} does not exist.")
        config = {k: v for k, v in json.loads(Path(args.prior_config).read_text()).items() if not k.startswith("_")}
    config.update({k: getattr(args, k) for k in PRIOR_SIZE_ARGUMENTS if getattr(args, k) is not None})
    if info.get("mask_size") and "mask_size" not in config:
        config["mask_size"] = info["mask_size"]
    for key, value in (("embedding_dim", embedding_dim), ("text_embed_dim", text_embed_dim)):
        if config.setdefault(key, value) != value:
            raise ValueError(f"The prior config has {key}={config[key]} but the training embeddings have {value}.")
    return CompoDiffPriorTransformer(**config)


def encoder_components(args, info: dict) -> dict:
    """The pipeline's CLIP components: from the stage-1 pipeline (stage 2), the arguments, or the embeddings' info."""
    if args.stage == 2 and Path(args.stage1_model_name_or_path, "model_index.json").is_file():
        pipeline = CompoDiffPipeline.from_pretrained(args.stage1_model_name_or_path, dtype=torch.float32)
        return {
            name: getattr(pipeline, name) for name in ("text_encoder", "tokenizer", "image_encoder", "image_processor")
        }

    def source(argument, key, fallback=None):
        value = getattr(args, argument)
        if value is not None:
            return value, None
        entry = info.get(key) or (info.get(fallback) if fallback else None)
        if entry is None:
            raise ValueError(
                f"Cannot build the output pipeline: pass --{argument} (the embeddings carry no {key} in their info)."
            )
        return entry["name_or_path"], entry.get("subfolder")

    text = source("text_encoder_name_or_path", "text_encoder")
    image = source("image_encoder_name_or_path", "image_encoder")
    tokenizer = (
        (args.tokenizer_name_or_path, None)
        if args.tokenizer_name_or_path
        else (info.get("tokenizer") and source("tokenizer_name_or_path", "tokenizer")) or text
    )
    processor = (
        (args.image_processor_name_or_path, None)
        if args.image_processor_name_or_path
        else (info.get("image_processor") and source("image_processor_name_or_path", "image_processor")) or image
    )
    return {
        "text_encoder": load_pretrained(CLIPTextModel, text, dtype=torch.float32),
        "tokenizer": load_pretrained(AutoTokenizer, tokenizer),
        "image_encoder": load_pretrained(CLIPVisionModelWithProjection, image, dtype=torch.float32),
        "image_processor": load_pretrained(AutoImageProcessor, processor),
    }


def main(args):
    output_dir = Path(args.output_dir)
    accelerator = build_accelerator(args)
    if args.stage == 2:
        _stage1_prior_folder(args.stage1_model_name_or_path)  # fail before any work
    may_write = output_entry_matcher(COMPODIFF_FOLDER, output_entries(args))
    resume_dir, state, seed = start_run(accelerator, args, run_identity(args, accelerator.num_processes), may_write)

    # Data: precomputed embeddings only.
    with accelerator.main_process_first():
        loaded = [load_embedding_dataset(path, args.dataset_split, args.cache_dir) for path in args.train_data]
    sources, infos = [d for d, _ in loaded], [i for _, i in loaded]
    info = next((i for i in infos if i), {})
    pools = build_task_pools(sources)
    mix = task_mix(args)
    micro_batch = args.train_batch_size * accelerator.num_processes
    counts = {task: sum(len(p.indices) for p in pools[task]) for task in TASKS}
    for task, share in mix.items():
        if share > 0 and 0 < counts[task] < micro_batch * share:
            logger.warning(f"Only {counts[task]} {task!r} rows for an expected {micro_batch * share:.0f} per batch.")
    used = sum(counts[t] for t, share in mix.items() if share > 0)
    if used < micro_batch:
        raise ValueError(
            f"The training data has {used} usable rows ({counts}), fewer than one batch: --train_batch_size "
            f"{args.train_batch_size} x {accelerator.num_processes} process(es) = {micro_batch}."
        )
    first = next(pools[t][0] for t in TASKS if pools[t])
    sample = first.rows([0])
    embedding_dim = len(sample["target_image_embeds"][0])
    text_shape = (
        tuple(sample["text_embeds"][0].shape)
        if hasattr(sample["text_embeds"][0], "shape")
        else (len(sample["text_embeds"][0]), len(sample["text_embeds"][0][0]))
    )

    prior = build_prior(args, info, embedding_dim, text_shape[-1])
    if prior.config.embedding_dim != embedding_dim or prior.config.text_embed_dim != text_shape[-1]:
        raise ValueError(
            f"The prior has embedding_dim={prior.config.embedding_dim}, text_embed_dim={prior.config.text_embed_dim}; "
            f"the training embeddings have {embedding_dim} and {text_shape[-1]}."
        )
    noise_scheduler = CompoDiffScheduler(num_train_timesteps=prior.config.num_train_timesteps)

    if args.null_text_embeds is not None:
        null_text = load_null_text_embeds(args.null_text_embeds)
    elif info.get("null_text_embeds"):
        null_text = load_null_text_embeds(Path(info["path"]) / info["null_text_embeds"])
    elif args.text_drop_probability > 0:
        raise ValueError(
            "Text dropout for classifier-free guidance needs the encoded empty prompt: pass --null_text_embeds (a "
            "safetensors file with `null_text_embeds`), use embeddings from precompute_embeddings.py, or set "
            "--text_drop_probability 0."
        )
    else:
        null_text = torch.zeros(text_shape)
    if tuple(null_text.shape) != text_shape:
        raise ValueError(
            f"The null text embedding has shape {tuple(null_text.shape)}, the training texts {text_shape}."
        )

    optimizer, lr_scheduler = create_optimizer_and_scheduler(prior.parameters(), args, accelerator)
    prior.train()
    prior, optimizer, lr_scheduler = accelerator.prepare(prior, optimizer, lr_scheduler)
    unwrapped = accelerator.unwrap_model(prior)
    ema = create_ema(unwrapped, args.use_ema, args.ema_decay, accelerator.device)
    register_checkpoint_hooks(
        accelerator,
        PRIOR_WEIGHTS_NAME,
        ema=ema,
        ema_weights_name=EMA_WEIGHTS_NAME,
        legacy_ema_weights_names=LEGACY_EMA_WEIGHTS_NAMES,
    )
    init_trackers(accelerator, args, f"train_compodiff_stage{args.stage}")
    global_step, log_history = resume_training(accelerator, args, resume_dir, state)

    sampler = CompoDiffBatchSampler(
        pools,
        mix,
        embedding_dim=embedding_dim,
        mask_size=unwrapped.config.mask_size,
        num_train_timesteps=unwrapped.config.num_train_timesteps,
        null_text_embeds=null_text,
        seed=seed,
        text_drop_probability=args.text_drop_probability,
        image_drop_probability=args.image_drop_probability,
        swap_probability=args.swap_probability,
        positions=state.get("sampler_positions", {}),
    )
    data_summary = {
        "train_data": ", ".join(map(portable_path, args.train_data)),
        "rows_per_task": json.dumps(counts),
        "task_mix": json.dumps(mix),
        "embedding_dim": embedding_dim,
        "text_embeds_shape": list(text_shape),
    }
    logger.info(
        f"***** Training the prior, stage {args.stage}: {counts} rows, {args.max_train_steps} steps of "
        f"{micro_batch * args.gradient_accumulation_steps} *****"
    )
    rank, device = accelerator.process_index, accelerator.device
    prior_parameters = list(unwrapped.parameters())
    progress_bar = training_progress_bar(accelerator, args, global_step)
    while global_step < args.max_train_steps:
        step_loss = torch.zeros((), device=device)
        for micro_step in range(args.gradient_accumulation_steps):
            batch = sampler.batch(
                global_step * args.gradient_accumulation_steps + micro_step,
                micro_batch,
                rank,
                accelerator.num_processes,
            )
            target = batch["target_image_embeds"].to(device)
            noisy = noise_scheduler.add_noise(target, batch["noise"].to(device), batch["timesteps"].to(device))
            last = micro_step == args.gradient_accumulation_steps - 1
            with contextlib.nullcontext() if last else accelerator.no_sync(prior):
                predicted = prior(
                    noisy,
                    batch["timesteps"].to(device),
                    image_embeds=batch["reference_image_embeds"].to(device),
                    text_hidden_states=batch["text_embeds"].to(device),
                    mask=batch["mask"].to(device),
                ).predicted_image_embedding
                loss = F.mse_loss(predicted.float(), target.float())
                accelerator.backward(loss / args.gradient_accumulation_steps)
            step_loss += loss.detach() / args.gradient_accumulation_steps
        optimizer_step(accelerator, optimizer, lr_scheduler, prior_parameters, args.max_grad_norm, ema=ema)
        global_step += 1
        log_training_step(accelerator, args, global_step, step_loss, lr_scheduler, log_history, progress_bar)
        if global_step % args.checkpointing_steps == 0 and global_step < args.max_train_steps:
            training_state = {"seed": seed, "log_history": log_history, "sampler_positions": sampler.state()}
            save_checkpoint(accelerator, output_dir, global_step, training_state, args.checkpoints_total_limit)

    progress_bar.close()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if ema is not None:
            ema.copy_to(unwrapped.parameters())
        components = encoder_components(args, info)
        pipeline = CompoDiffPipeline(prior=unwrapped, scheduler=noise_scheduler, **components)
        details = training_details_markdown(
            "train_compodiff.py",
            {**training_arguments(args), "seed": seed},
            data_summary,
            train_results(log_history),
            parser=build_parser(),
        )
        starting_points = [args.stage1_model_name_or_path, args.pretrained_prior_name_or_path]
        starting_points += [pipeline.text_encoder.name_or_path, pipeline.image_encoder.name_or_path]
        card = create_compodiff_model_card(
            pipeline,
            model_id=args.hub_model_id,
            training_details=details,
            license=resolve_training_license(args.license, [point for point in starting_points if point]),
        )

        def write(folder):
            save_pretrained(pipeline, folder, model_card=card)  # the one save path of every model with its card

        publish_outputs(output_dir, write)
        finish_run(args, log_history)
    accelerator.end_training()


if __name__ == "__main__":
    sys.exit(run_training_script(main, parse_args, prog="train_compodiff.py"))
