# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""
Convert a released CompoDiff checkpoint (navervision/CompoDiff) into a [`CompoDiffPipeline`] folder.

The released format is a transformers-saved folder of the reference `CompoDiffModel` wrapper: `config.json` with
`embed_dim`, `model_depth`, `model_dim` (head size), `model_heads`, `timesteps`, and the weights under `model.net.`
in `pytorch_model.bin` (or `*.safetensors`). A bare state-dict file is accepted too. Every key is mapped
explicitly below; the reference network's key names are written as comments next to ours.

Usage:

```
hf-cir convert compodiff --checkpoint navervision/CompoDiff-Aesthetic \\
    --text-encoder laion/CLIP-ViT-bigG-14-laion2B-39B-b160k --image-encoder openai/clip-vit-large-patch14 \\
    --output-dir compodiff-aesthetic
```
"""

from __future__ import annotations

import json
import math
import os
import re
from functools import partial
from pathlib import Path

import torch

from ..hub import create_compodiff_model_card, save_pretrained
from ..hub import push_to_hub as _push
from ..hub.saving import COMPODIFF_FOLDER
from ..models.compodiff import CompoDiffPriorTransformer
from ..pipelines.compodiff import CompoDiffPipeline
from ..schedulers.scheduling_compodiff import CompoDiffScheduler, cosine_beta_schedule
from ..utils import atomic_directory
from .loading import load_checkpoint_file, load_pretrained_component

__all__ = ["convert_compodiff_checkpoint", "convert_compodiff_state_dict", "load_original_checkpoint"]

NETWORK_PREFIXES = ("model.net.", "net.")
SCHEDULER_PREFIXES = ("model.noise_scheduler.", "noise_scheduler.")
# Buffers of the reference's `NoiseScheduler` that the wrapper saves with the network. They are a function of the
# number of timesteps only: they are checked against CompoDiffScheduler's schedule and dropped.
SCHEDULER_BUFFERS = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "p2_loss_weight",
)


def load_original_checkpoint(checkpoint: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """
    Read a reference checkpoint: a folder (`config.json` + `pytorch_model.bin` or `*.safetensors`), a Hub repository
    id holding such a folder (e.g. `navervision/CompoDiff-Aesthetic`), or a bare state-dict file (`.bin`/`.pt`/`.pth`
    read with `weights_only=True`, or `.safetensors`).

    Returns:
        `(state_dict, config)`, `config` being `{}` for a bare file.
    """
    path = Path(checkpoint)
    config: dict = {}
    if not path.exists() and _looks_like_repo_id(str(checkpoint)):
        path = _download(str(checkpoint))
    if path.is_dir():
        if (path / "config.json").is_file():
            config = json.loads((path / "config.json").read_text())
        safetensors_files = sorted(path.glob("*.safetensors"))
        if (path / "pytorch_model.bin").is_file():
            weights = [path / "pytorch_model.bin"]
        elif safetensors_files:
            weights = safetensors_files
        else:
            raise FileNotFoundError(
                f"`checkpoint` folder {path} has no weights: expected pytorch_model.bin or *.safetensors."
            )
    elif path.is_file():
        weights = [path]
    else:
        raise FileNotFoundError(f"`checkpoint`: no such file or folder: {path}")

    state_dict: dict[str, torch.Tensor] = {}
    for file in weights:
        loaded = load_checkpoint_file(file, "checkpoint", "a CompoDiff state dict (a dict of tensors)")
        if isinstance(loaded, dict) and "state_dict" in loaded and isinstance(loaded["state_dict"], dict):
            loaded = loaded["state_dict"]
        if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
            raise ValueError(f"`checkpoint` {file} does not hold a state dict (a dict of tensors): {type(loaded)}.")
        state_dict.update(loaded)
    return state_dict, config


def _looks_like_repo_id(name: str) -> bool:
    return name.count("/") == 1 and not name.startswith((".", "/", "~")) and " " not in name


def _download(repo_id: str) -> Path:
    """Fetch a released checkpoint folder (config and weights only) from the Hub."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=["config.json", "*.bin", "*.safetensors"]))
    except Exception as error:
        raise FileNotFoundError(
            f"`checkpoint` {repo_id!r} is neither a local file or folder nor a downloadable Hub repository ({error})."
        ) from error


def _split(state_dict: dict[str, torch.Tensor]) -> tuple[dict, dict, list[str], dict[str, str]]:
    """Separate the network's tensors, the noise scheduler's buffers and anything else (with original names)."""
    network, scheduler, other, original_names = {}, {}, [], {}
    for key, value in state_dict.items():
        for prefix in SCHEDULER_PREFIXES:
            if key.startswith(prefix):
                scheduler[key[len(prefix) :]] = value
                break
        else:
            for prefix in NETWORK_PREFIXES:
                if key.startswith(prefix):
                    network[key[len(prefix) :]] = value
                    original_names[key[len(prefix) :]] = key
                    break
            else:
                if key.startswith(("to_text_embeds.", "to_time_embeds.", "to_mask_embeds.", "transformer.")):
                    network[key] = value  # a bare network state dict
                    original_names[key] = key
                else:
                    other.append(key)
    return network, scheduler, other, original_names


def infer_prior_config(network: dict[str, torch.Tensor], original_config: dict | None = None) -> dict:
    """
    The [`CompoDiffPriorTransformer`] config of a reference network state dict. `config.json` gives the embedding
    dim, depth, head size, heads and timesteps; the rest is read from the tensors' shapes (text dim from the text
    projection, mask side from the mask MLP, cross-attention heads, feed-forward size, rotary dim, buckets).
    """
    original_config = original_config or {}
    try:
        text_weight = network["to_text_embeds.0.weight"]  # Linear(text_dim, dim)
        mask_weight = network["to_mask_embeds.1.net.0.0.weight"]  # Linear(side * side, 2 * dim)
        head_dim = network["transformer.layers.0.0.null_kv"].shape[-1]
        self_q = network["transformer.layers.0.0.to_q.weight"]  # [heads * head_dim, dim]
        cross_q = network["transformer.layers.0.1.to_q.weight"]  # [cross_heads * head_dim, dim]
        ff_in = network["transformer.layers.0.2.1.weight"]  # [2 * inner, dim]
        buckets = network["transformer.rel_pos_bias.relative_attention_bias.weight"].shape[0]
    except KeyError as error:
        raise ValueError(f"The checkpoint is not a CompoDiff network: missing {error.args[0]!r}.") from error
    dim = text_weight.shape[0]
    depth = 1 + max(int(m.group(1)) for k in network if (m := re.match(r"transformer\.layers\.(\d+)\.", k)))
    side = math.isqrt(mask_weight.shape[1])
    if side * side != mask_weight.shape[1]:
        raise ValueError(f"The mask MLP takes {mask_weight.shape[1]} inputs, not a square mask.")
    rotary = network.get("transformer.layers.0.0.rotary_emb.freqs")
    inferred = {
        "embedding_dim": dim,
        "num_layers": depth,
        "num_attention_heads": self_q.shape[0] // head_dim,
        "attention_head_dim": head_dim,
        "num_cross_attention_heads": cross_q.shape[0] // head_dim,
        "text_embed_dim": text_weight.shape[1],
        "mask_size": side,
        "ff_mult": ff_in.shape[0] / 2 / dim,
        "rotary_dim": 2 * rotary.shape[0] if rotary is not None else None,
        "num_relative_position_buckets": buckets,
    }
    if float(inferred["ff_mult"]).is_integer():
        inferred["ff_mult"] = float(int(inferred["ff_mult"]))
    # The reference config's names, checked against the tensors.
    for original_name, name in [
        ("embed_dim", "embedding_dim"),
        ("model_depth", "num_layers"),
        ("model_dim", "attention_head_dim"),
        ("model_heads", "num_attention_heads"),
    ]:
        if original_name in original_config and original_config[original_name] != inferred[name]:
            raise ValueError(
                f"config.json says {original_name}={original_config[original_name]} but the weights have "
                f"{name}={inferred[name]}."
            )
    inferred["num_train_timesteps"] = int(original_config.get("timesteps", 1000))
    return inferred


def _embedding_keys() -> list[tuple[str, str]]:
    """(reference key, our key) pairs of the input embeddings."""
    # to_text_embeds.0.{weight,bias}            -> text_proj.{weight,bias}
    pairs = [(f"to_text_embeds.0.{suffix}", f"text_proj.{suffix}") for suffix in ("weight", "bias")]
    # to_time_embeds.0.1.net.{0.0,1.0,2}.*      -> time_proj.linear_{1,2,3}.*   (SinusoidalPosEmb has no weights)
    # to_mask_embeds.1.net.{0.0,1.0,2}.*        -> mask_proj.linear_{1,2,3}.*   (index 0 is the flattening)
    for original, ours in [("to_time_embeds.0.1", "time_proj"), ("to_mask_embeds.1", "mask_proj")]:
        for index, layer in enumerate(("net.0.0", "net.1.0", "net.2"), start=1):
            for suffix in ("weight", "bias"):
                pairs.append((f"{original}.{layer}.{suffix}", f"{ours}.linear_{index}.{suffix}"))
    # transformer.rel_pos_bias.relative_attention_bias.weight -> relative_position_bias.weight
    pairs.append(("transformer.rel_pos_bias.relative_attention_bias.weight", "relative_position_bias.weight"))
    return pairs


def _attention_keys(original: str, ours: str) -> list[tuple[str, str]]:
    """(reference key, our key) pairs of one `Attention` or `CrossAttention`."""
    return [
        (f"{original}.null_kv", f"{ours}.null_kv"),  # [2, head_dim]: the null key, then the null value
        (f"{original}.norm.g", f"{ours}.norm.weight"),
        (f"{original}.to_q.weight", f"{ours}.to_q.weight"),
        (f"{original}.to_kv.weight", f"{ours}.to_kv.weight"),  # keys then values along the output features
        (f"{original}.to_out.0.weight", f"{ours}.to_out.weight"),
        (f"{original}.to_out.1.g", f"{ours}.norm_out.weight"),
    ]


def _block_keys(index: int) -> list[tuple[str, str]]:
    """(reference key, our key) pairs of transformer block `index`."""
    original, ours = f"transformer.layers.{index}", f"transformer_blocks.{index}"
    # transformer.layers.{i}.0 (Attention)      -> transformer_blocks.{i}.self_attn
    # transformer.layers.{i}.1 (CrossAttention) -> transformer_blocks.{i}.cross_attn
    pairs = _attention_keys(f"{original}.0", f"{ours}.self_attn") + _attention_keys(
        f"{original}.1", f"{ours}.cross_attn"
    )
    # transformer.layers.{i}.2 (FeedForward: LayerNorm, Linear, SwiGLU, Identity, Dropout, Linear)
    #   .2.0.g -> ff.norm.weight,  .2.1.weight -> ff.proj_in.weight,  .2.5.weight -> ff.proj_out.weight
    pairs += [
        (f"{original}.2.0.g", f"{ours}.ff.norm.weight"),
        (f"{original}.2.1.weight", f"{ours}.ff.proj_in.weight"),
        (f"{original}.2.5.weight", f"{ours}.ff.proj_out.weight"),
    ]
    return pairs


def _output_keys() -> list[tuple[str, str]]:
    # transformer.norm.g             -> norm_out.weight   (the "stable" LayerNorm)
    # transformer.project_out.weight -> proj_out.weight
    return [("transformer.norm.g", "norm_out.weight"), ("transformer.project_out.weight", "proj_out.weight")]


def _check_rotary(network: dict, num_layers: int, prior: CompoDiffPriorTransformer) -> None:
    # transformer.layers.{i}.0.rotary_emb.freqs -> dropped. The reference shares one rotary module across layers,
    # so the same parameter is saved once per layer; it is a fixed function of the rotary dim (not learned), which
    # this prior computes as a non-persistent buffer. A checkpoint with other values is refused.
    expected = prior.compute_rotary_frequencies()
    for index in range(num_layers):
        key = f"transformer.layers.{index}.0.rotary_emb.freqs"
        freqs = network.pop(key, None)
        if freqs is not None and (
            freqs.shape != expected.shape or not torch.allclose(freqs.float(), expected, rtol=1e-6, atol=0)
        ):
            raise ValueError(f"`{key}` differs from the standard rotary frequencies (learned ones are not supported).")


def check_scheduler_buffers(buffers: dict[str, torch.Tensor], scheduler) -> None:
    """Check the reference wrapper's `noise_scheduler.*` buffers against `scheduler`'s schedule."""
    unknown = sorted(set(buffers) - set(SCHEDULER_BUFFERS))
    if unknown:
        raise ValueError(f"Unexpected noise-scheduler keys in the checkpoint: {', '.join(unknown)}.")
    # The reference's derived tables, from the same float64 betas the scheduler uses.
    betas = _float64_betas(scheduler)
    alphas_cumprod = torch.cumprod(1 - betas, 0)
    alphas_cumprod_prev = torch.cat((torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]))
    posterior_variance = betas * (1 - alphas_cumprod_prev) / (1 - alphas_cumprod)
    expected = {
        "betas": scheduler.betas,
        "alphas_cumprod": scheduler.alphas_cumprod,
        "alphas_cumprod_prev": scheduler.alphas_cumprod_prev,
        "sqrt_alphas_cumprod": scheduler.sqrt_alphas_cumprod,
        "sqrt_one_minus_alphas_cumprod": scheduler.sqrt_one_minus_alphas_cumprod,
        "log_one_minus_alphas_cumprod": torch.log(1 - alphas_cumprod).float(),
        "sqrt_recip_alphas_cumprod": scheduler.sqrt_recip_alphas_cumprod,
        "sqrt_recipm1_alphas_cumprod": scheduler.sqrt_recipm1_alphas_cumprod,
        "posterior_variance": posterior_variance.float(),
        "posterior_log_variance_clipped": torch.log(posterior_variance.clamp(min=1e-20)).float(),
        "posterior_mean_coef1": (betas * alphas_cumprod_prev.sqrt() / (1 - alphas_cumprod)).float(),
        "posterior_mean_coef2": ((1 - alphas_cumprod_prev) * (1 - betas).sqrt() / (1 - alphas_cumprod)).float(),
        "p2_loss_weight": torch.ones_like(betas).float(),  # no p2 reweighting (gamma = 0) in the release
    }
    mismatched = [
        name
        for name, value in buffers.items()
        if value.shape != expected[name].shape
        or not torch.allclose(value.float(), expected[name], rtol=1e-5, atol=1e-7)
    ]
    if mismatched:
        raise ValueError(
            "The checkpoint's noise schedule differs from CompoDiffScheduler's cosine schedule over "
            f"{scheduler.config.num_train_timesteps} steps in: {', '.join(mismatched)}."
        )


def _float64_betas(scheduler) -> torch.Tensor:
    config = scheduler.config
    return cosine_beta_schedule(config.num_train_timesteps, config.cosine_s, config.max_beta)


def convert_compodiff_state_dict(
    state_dict: dict[str, torch.Tensor], original_config: dict | None = None
) -> tuple[CompoDiffPriorTransformer, object]:
    """
    Build a [`CompoDiffPriorTransformer`] and a [`CompoDiffScheduler`] from a reference state dict.

    Raises:
        ValueError: keys that are neither mapped nor known reference buffers, missing keys (both listed), rotary
            frequencies or a noise schedule that differ from the standard ones.
    """
    network, scheduler_buffers, other, original_names = _split(state_dict)
    if other:
        raise ValueError(f"Unexpected keys in the checkpoint: {', '.join(sorted(other))}.")
    config = infer_prior_config(network, original_config)
    prior = CompoDiffPriorTransformer(**config)
    scheduler = CompoDiffScheduler(num_train_timesteps=config["num_train_timesteps"])
    if scheduler_buffers:
        check_scheduler_buffers(scheduler_buffers, scheduler)

    remaining = dict(network)
    _check_rotary(remaining, config["num_layers"], prior)
    pairs = _embedding_keys() + [p for i in range(config["num_layers"]) for p in _block_keys(i)] + _output_keys()
    prefix = next((name[: len(name) - len(key)] for key, name in original_names.items()), "")
    missing = [prefix + original for original, _ in pairs if original not in remaining]
    if missing:
        raise ValueError(f"The checkpoint is missing keys: {', '.join(missing)}.")
    new = {ours: remaining.pop(original) for original, ours in pairs}
    if remaining:
        names = sorted(original_names.get(key, key) for key in remaining)
        raise ValueError(f"Unexpected keys in the checkpoint: {', '.join(names)}.")
    expected_keys = set(prior.state_dict())
    missing = sorted(expected_keys - set(new))
    unexpected = sorted(set(new) - expected_keys)
    if missing or unexpected:
        raise ValueError(f"Converted keys do not fit the prior: missing {missing}, unexpected {unexpected}.")
    for key, value in prior.state_dict().items():
        if new[key].shape != value.shape:
            raise ValueError(f"`{key}` has shape {tuple(new[key].shape)}, expected {tuple(value.shape)}.")
    prior.load_state_dict({key: value.float() for key, value in new.items()}, strict=True)
    return prior.eval(), scheduler


def convert_compodiff_checkpoint(
    checkpoint: str | os.PathLike,
    text_encoder,
    image_encoder,
    output_dir: str | os.PathLike | None = None,
    tokenizer=None,
    image_processor=None,
    push_to_hub: str | None = None,
    overwrite: bool = False,
):
    """
    Convert a released CompoDiff checkpoint into a [`CompoDiffPipeline`] and save it as a safetensors folder with
    a model card.

    Args:
        checkpoint (`str` or `os.PathLike`): The reference `CompoDiffModel` folder or a state-dict file.
        text_encoder (`str` or `CLIPTextModel`): The text encoder (folder or Hub id), e.g.
            `laion/CLIP-ViT-bigG-14-laion2B-39B-b160k` for the released models.
        image_encoder (`str` or `CLIPVisionModelWithProjection`): The image encoder, e.g.
            `openai/clip-vit-large-patch14`.
        output_dir (`str`, *optional*): Where to write the pipeline folder (written atomically).
        tokenizer (`str` or tokenizer, *optional*): Defaults to the one found with `text_encoder`.
        image_processor (`str` or image processor, *optional*): Defaults to the one found with `image_encoder`.
        push_to_hub (`str`, *optional*): A Hub repo id to upload the pipeline to.
        overwrite (`bool`, *optional*, defaults to `False`): Replace an existing `output_dir`.

    Returns:
        The [`CompoDiffPipeline`].

    Example:

    ```python
    >>> from hf_cir.conversion.compodiff import convert_compodiff_checkpoint
    >>> pipe = convert_compodiff_checkpoint(  # doctest: +SKIP
    ...     "CompoDiff-Aesthetic", "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k", "openai/clip-vit-large-patch14",
    ...     output_dir="compodiff-aesthetic",
    ... )
    ```
    """
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPTextModel, CLIPVisionModelWithProjection

    state_dict, original_config = load_original_checkpoint(checkpoint)
    prior, scheduler = convert_compodiff_state_dict(state_dict, original_config)

    text_encoder_name = text_encoder if isinstance(text_encoder, (str, os.PathLike)) else None
    image_encoder_name = image_encoder if isinstance(image_encoder, (str, os.PathLike)) else None
    if text_encoder_name is not None:
        text_encoder = load_pretrained_component(
            partial(CLIPTextModel.from_pretrained, dtype=torch.float32),
            text_encoder_name,
            "text_encoder",
            "a CLIPTextModel",
        )
    if image_encoder_name is not None:
        image_encoder = load_pretrained_component(
            partial(CLIPVisionModelWithProjection.from_pretrained, dtype=torch.float32),
            image_encoder_name,
            "image_encoder",
            "a CLIPVisionModelWithProjection",
        )
    if tokenizer is None or isinstance(tokenizer, (str, os.PathLike)):
        argument = "tokenizer" if tokenizer is not None else "text_encoder"
        source = tokenizer if tokenizer is not None else text_encoder_name
        if source is None:
            raise ValueError("Pass `tokenizer` when `text_encoder` is a model object.")
        tokenizer = load_pretrained_component(AutoTokenizer.from_pretrained, source, argument, "a tokenizer")
    if image_processor is None or isinstance(image_processor, (str, os.PathLike)):
        argument = "image_processor" if image_processor is not None else "image_encoder"
        source = image_processor if image_processor is not None else image_encoder_name
        if source is None:
            raise ValueError("Pass `image_processor` when `image_encoder` is a model object.")
        image_processor = load_pretrained_component(
            AutoImageProcessor.from_pretrained, source, argument, "a CLIP image processor"
        )
    if prior.config.text_embed_dim != text_encoder.config.hidden_size:
        raise ValueError(
            f"The prior's text projection takes {prior.config.text_embed_dim} features but the text encoder's "
            f"hidden size is {text_encoder.config.hidden_size}."
        )
    image_dim = getattr(image_encoder.config, "projection_dim", None)
    if image_dim != prior.config.embedding_dim:
        raise ValueError(
            f"The prior's embedding dim is {prior.config.embedding_dim} but the image encoder projects to {image_dim}."
        )

    pipeline = CompoDiffPipeline(
        prior=prior,
        scheduler=scheduler,
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        image_encoder=image_encoder.eval(),
        image_processor=image_processor,
    )
    base_models = [str(name) for name in (text_encoder_name, image_encoder_name) if name is not None]
    if output_dir is not None:
        with atomic_directory(output_dir, overwrite=overwrite, kind=COMPODIFF_FOLDER) as tmp:
            card = create_compodiff_model_card(
                pipeline, model_id=push_to_hub or Path(output_dir).name, base_models=base_models
            )
            save_pretrained(pipeline, tmp, model_card=card)
    if push_to_hub is not None:
        _push(pipeline, push_to_hub, base_models=base_models)
    return pipeline
