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
import logging
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration, set_seed
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file, save_file
from transformers import AutoImageProcessor, AutoTokenizer, CLIPTextModel, CLIPVisionModelWithProjection, get_scheduler

from hf_cir import CompoDiffPipeline, CompoDiffPriorTransformer, CompoDiffScheduler
from hf_cir.pipelines.compodiff.model_card import create_compodiff_model_card
from hf_cir.training import (
    check_output_dir,
    load_ema,
    load_training_state,
    push_output_to_hub,
    resolve_resume_checkpoint,
    resolve_seed,
    save_checkpoint,
    save_ema,
    training_arguments,
    training_details_markdown,
)
from hf_cir.training.checkpointing import _debug_kill
from hf_cir.training.embeddings import (
    TASKS,
    CompoDiffBatchSampler,
    build_task_pools,
    load_embedding_dataset,
    load_null_text_embeds,
)

logger = get_logger(__name__, log_level="INFO")

PRIOR_WEIGHTS_NAME = "prior.safetensors"
EMA_WEIGHTS_NAME = "ema_prior.safetensors"
PRIOR_SIZE_ARGUMENTS = (
    "num_layers",
    "num_attention_heads",
    "attention_head_dim",
    "num_cross_attention_heads",
    "mask_size",
    "num_train_timesteps",
)


def parse_args(input_args=None):
    parser = argparse.ArgumentParser(description="Train CompoDiff's prior (stage 1 or 2) on precomputed embeddings.")
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
    # Optimisation
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--train_batch_size", type=int, default=256, help="Batch size per device.")
    parser.add_argument("--max_train_steps", type=int, default=100_000)
    parser.add_argument("--gradient_accumulation_steps", type=int, default=1)
    parser.add_argument("--learning_rate", type=float, default=1e-4)
    parser.add_argument("--lr_scheduler", type=str, default="constant_with_warmup")
    parser.add_argument("--lr_warmup_steps", type=int, default=1000)
    parser.add_argument("--adam_beta1", type=float, default=0.9)
    parser.add_argument("--adam_beta2", type=float, default=0.999)
    parser.add_argument("--adam_weight_decay", type=float, default=6e-2, help="6e-2 in the paper.")
    parser.add_argument("--adam_epsilon", type=float, default=1e-8)
    parser.add_argument("--max_grad_norm", type=float, default=1.0)
    parser.add_argument("--mixed_precision", type=str, default=None, choices=["no", "fp16", "bf16"])
    parser.add_argument("--use_ema", action=argparse.BooleanOptionalAction, default=True, help="EMA of the prior.")
    parser.add_argument("--ema_decay", type=float, default=0.9999, help="0.9999 in the paper.")
    parser.add_argument("--cpu", action="store_true")
    # Checkpoints, logging, Hub
    parser.add_argument("--output_dir", type=str, required=True)
    parser.add_argument("--overwrite_output_dir", action="store_true")
    parser.add_argument("--checkpointing_steps", type=int, default=1000)
    parser.add_argument("--checkpoints_total_limit", type=int, default=None)
    parser.add_argument("--resume_from_checkpoint", type=str, default=None, help="'latest' or a checkpoint folder.")
    parser.add_argument("--report_to", type=str, default="none")
    parser.add_argument("--logging_dir", type=str, default="logs")
    parser.add_argument("--logging_steps", type=int, default=1)
    parser.add_argument("--push_to_hub", action="store_true")
    parser.add_argument("--hub_model_id", type=str, default=None)
    parser.add_argument("--hub_token", type=str, default=None)
    parser.add_argument("--hub_private_repo", action="store_true")

    args = parser.parse_args(input_args)
    for name in (
        "train_batch_size",
        "max_train_steps",
        "gradient_accumulation_steps",
        "checkpointing_steps",
        "logging_steps",
    ):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}.")
    for name in ("triplet_ratio", "t2i_ratio", "masked_ratio"):
        if getattr(args, name) < 0:
            parser.error(f"--{name} must be >= 0, got {getattr(args, name)}.")
    if args.stage == 2 and args.stage1_model_name_or_path is None:
        parser.error("--stage 2 starts from stage 1: pass --stage1_model_name_or_path (the stage-1 output folder).")
    if args.stage == 1 and args.stage1_model_name_or_path is not None:
        parser.error(
            "--stage1_model_name_or_path is for --stage 2; stage 1 can start from --pretrained_prior_name_or_path."
        )
    if args.push_to_hub and args.hub_model_id is None:
        args.hub_model_id = Path(args.output_dir).name
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

    def load(cls, src, **kwargs):
        name, subfolder = src
        return (
            cls.from_pretrained(name, subfolder=subfolder, **kwargs)
            if subfolder
            else cls.from_pretrained(name, **kwargs)
        )

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
        "text_encoder": load(CLIPTextModel, text, dtype=torch.float32),
        "tokenizer": load(AutoTokenizer, tokenizer),
        "image_encoder": load(CLIPVisionModelWithProjection, image, dtype=torch.float32),
        "image_processor": load(AutoImageProcessor, processor),
    }


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

    resume_dir = resolve_resume_checkpoint(output_dir, args.resume_from_checkpoint)
    if args.stage == 2:
        _stage1_prior_folder(args.stage1_model_name_or_path)  # fail before any work
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

    optimizer = torch.optim.AdamW(
        prior.parameters(),
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
    prior.train()
    prior, optimizer, lr_scheduler = accelerator.prepare(prior, optimizer, lr_scheduler)
    unwrapped = accelerator.unwrap_model(prior)
    names = [name for name, _ in unwrapped.named_parameters()]
    ema = EMAModel(unwrapped.parameters(), decay=args.ema_decay) if args.use_ema else None
    if ema is not None:
        ema.to(accelerator.device)

    def save_model_hook(models, weights, directory):
        if accelerator.is_main_process:
            for saved in models:
                save_file(accelerator.unwrap_model(saved).state_dict(), os.path.join(directory, PRIOR_WEIGHTS_NAME))
            if ema is not None:
                save_ema(ema, names, directory, EMA_WEIGHTS_NAME)
        while weights:
            weights.pop()

    def load_model_hook(models, directory):
        while models:
            accelerator.unwrap_model(models.pop()).load_state_dict(
                load_file(os.path.join(directory, PRIOR_WEIGHTS_NAME))
            )
        if ema is not None:
            load_ema(ema, names, directory, EMA_WEIGHTS_NAME)

    accelerator.register_save_state_pre_hook(save_model_hook)
    accelerator.register_load_state_pre_hook(load_model_hook)
    if accelerator.is_main_process:
        config = {k: v for k, v in training_arguments(args).items() if isinstance(v, (int, float, str, bool))}
        accelerator.init_trackers(f"train_compodiff_stage{args.stage}", config=config)

    global_step, log_history = 0, []
    if resume_dir is not None:
        logger.info(f"Resuming from {resume_dir}")
        accelerator.load_state(str(resume_dir))
        global_step, log_history = state["global_step"], state.get("log_history", [])

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
        "train_data": ", ".join(args.train_data),
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
        if args.max_grad_norm is not None and args.max_grad_norm > 0:
            accelerator.clip_grad_norm_(prior.parameters(), args.max_grad_norm)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        global_step += 1
        if ema is not None:
            ema.step(unwrapped.parameters())
        step_loss = accelerator.reduce(step_loss, reduction="mean").item()
        if global_step % args.logging_steps == 0 or global_step == args.max_train_steps:
            logs = {"train/loss": step_loss, "train/lr": lr_scheduler.get_last_lr()[0]}
            accelerator.log(logs, step=global_step)
            log_history.append({"step": global_step, **logs})
            logger.info(f"step {global_step}: loss {step_loss:.6f}")
        _debug_kill("step", global_step)
        if global_step % args.checkpointing_steps == 0 and global_step < args.max_train_steps:
            training_state = {"seed": seed, "log_history": log_history, "sampler_positions": sampler.state()}
            save_checkpoint(accelerator, output_dir, global_step, training_state, args.checkpoints_total_limit)

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if ema is not None:
            ema.copy_to(unwrapped.parameters())
        components = encoder_components(args, info)
        pipeline = CompoDiffPipeline(prior=unwrapped, scheduler=noise_scheduler, **components)
        pipeline.save_pretrained(output_dir, safe_serialization=True)
        losses = [h["train/loss"] for h in log_history if "train/loss" in h]
        details = training_details_markdown(
            "train_compodiff.py",
            {**training_arguments(args), "seed": seed},
            data_summary,
            {"final_train_loss": losses[-1]} if losses else None,
        )
        card = create_compodiff_model_card(pipeline, model_id=args.hub_model_id, training_details=details)
        card.save(str(output_dir / "README.md"))
        with open(output_dir / "training_log.json", "w", encoding="utf-8") as handle:
            json.dump(log_history, handle, indent=1)
        if args.push_to_hub:
            push_output_to_hub(
                output_dir, args.hub_model_id, token=args.hub_token, private=args.hub_private_repo or None
            )
    accelerator.end_training()


if __name__ == "__main__":
    sys.exit(main(parse_args()))
