"""Train the toy CLIP: a tiny CLIP trained contrastively on the toy world, on a CPU, in minutes.

A build tool of `make toy-models` (`training/toy/build_toy_models.py`), not part of the installed package: the
package ships the trained folder (`hf_cir/toy/checkpoints/clip`).

The model is a plain transformers `CLIPModel` with a small config, saved as an ordinary CLIP folder (safetensors,
the toy tokenizer, a 32-pixel `CLIPImageProcessor`), so everything that loads CLIP loads it: `LinCIRModel.from_clip`,
`CLIPTextModel`, `CLIPVisionModelWithProjection`. Training is the symmetric InfoNCE loss of CLIP (Radford et al.,
2021, "Learning Transferable Visual Models From Natural Language Supervision") with a learned temperature, on
images of the training combinations only; each batch holds distinct combinations so that no caption has a second
true image among its negatives.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from huggingface_hub import ModelCardData
from transformers import CLIPConfig, CLIPModel, PreTrainedTokenizerBase
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from hf_cir.hub import render_model_card
from hf_cir.toy.tokenization import build_toy_tokenizer
from hf_cir.toy.world import CAPTION_TEMPLATES, ToyWorld
from hf_cir.utils import atomic_directory
from hf_cir.utils.io import ArtefactKind

logger = logging.getLogger(__name__)

__all__ = [
    "ToyCLIPTrainingArguments",
    "build_toy_clip",
    "build_toy_image_processor",
    "encode_toy_images",
    "encode_toy_texts",
    "evaluate_toy_clip",
    "pixel_values_from_uint8",
    "train_toy_clip",
]


@dataclass
class ToyCLIPTrainingArguments:
    """Settings of `train_toy_clip` (recorded in the model card).

    Args:
        steps: Optimisation steps.
        batch_size: Image-caption pairs per step, each of a different attribute combination.
        learning_rate: Peak AdamW learning rate (linear warm-up, cosine decay to 10% of it).
        warmup_steps: Warm-up steps.
        weight_decay: AdamW weight decay (not applied to biases, norms and embeddings).
        variants: Renderings per training combination (position, size, rotation and color jitter).
        seed: Seeds the weights, the batches and the caption templates.
        hard_negatives: Each batch is made of groups of an anchor combination and this many of its one-attribute
            neighbours (training combinations only, each once per batch), so that every attribute separates
            in-batch pairs; 0 draws batches uniformly.
        hidden_size, intermediate_size, num_layers, num_heads, patch_size, projection_dim: The model's sizes.
        vision_hidden_size, vision_intermediate_size: The vision tower's width when it differs from the text
            tower's (None: the same).
    """

    steps: int = 1000
    batch_size: int = 128
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.05
    variants: int = 8
    seed: int = 0
    hard_negatives: int = 0
    hidden_size: int = 128
    intermediate_size: int = 512
    num_layers: int = 2
    num_heads: int = 4
    patch_size: int = 8
    projection_dim: int = 64
    vision_hidden_size: int | None = None
    vision_intermediate_size: int | None = None


def build_toy_image_processor(image_size: int = 32) -> CLIPImageProcessorPil:
    """The CLIP image processor at `image_size` pixels (bicubic resize of the short side, centre crop, OpenAI
    mean and std), PIL backend: no torchvision needed.

    Example:

    ```python
    >>> from train_toy_clip import build_toy_image_processor
    >>> processor = build_toy_image_processor()
    >>> processor.crop_size.height, processor.crop_size.width
    (32, 32)
    ```
    """
    return CLIPImageProcessorPil(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_mean=list(OPENAI_CLIP_MEAN),
        image_std=list(OPENAI_CLIP_STD),
    )


def build_toy_clip(
    tokenizer: PreTrainedTokenizerBase, args: ToyCLIPTrainingArguments | None = None, image_size: int = 32
) -> CLIPModel:
    """A randomly initialised small `CLIPModel` whose text tower fits `tokenizer` (vocabulary, context, ids).

    Example:

    ```python
    >>> from train_toy_clip import build_toy_clip
    >>> from hf_cir.toy.tokenization import build_toy_tokenizer
    >>> model = build_toy_clip(build_toy_tokenizer())
    >>> model.config.projection_dim, model.config.text_config.eos_token_id != 2
    (64, True)
    ```
    """
    args = args or ToyCLIPTrainingArguments()
    if tokenizer.eos_token_id == 2:
        raise ValueError("The tokenizer's EOS id is 2, which makes CLIP pool at argmax(input_ids); use another id.")
    # The towers' own `projection_dim` matters: `CLIPTextModelWithProjection.from_pretrained(clip_folder)` reads it.
    shared = {
        "projection_dim": args.projection_dim,
        "hidden_size": args.hidden_size,
        "intermediate_size": args.intermediate_size,
        "num_hidden_layers": args.num_layers,
        "num_attention_heads": args.num_heads,
    }
    text_config = {
        **shared,
        "vocab_size": len(tokenizer),
        "max_position_embeddings": tokenizer.model_max_length,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    vision_config = {**shared, "image_size": image_size, "patch_size": args.patch_size}
    if args.vision_hidden_size is not None:
        vision_config["hidden_size"] = args.vision_hidden_size
        vision_config["intermediate_size"] = args.vision_intermediate_size or 4 * args.vision_hidden_size
    config = CLIPConfig(text_config=text_config, vision_config=vision_config, projection_dim=args.projection_dim)
    torch.manual_seed(args.seed)
    return CLIPModel(config)


def pixel_values_from_uint8(images: np.ndarray | torch.Tensor, image_processor: CLIPImageProcessorPil) -> torch.Tensor:
    """Normalise `(n, H, W, 3)` uint8 images already at the processor's size into CLIP `pixel_values`.

    Equal to `image_processor(images)["pixel_values"]` for images whose size is the crop size (the resize and crop
    are then the identity); much faster for the thousands of images of training.
    """
    images = torch.as_tensor(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"Expected uint8 images of shape (n, H, W, 3); got {tuple(images.shape)}.")
    crop = image_processor.crop_size
    if tuple(images.shape[1:3]) != (crop["height"], crop["width"]):
        raise ValueError(f"Images are {tuple(images.shape[1:3])}; the processor crops to {crop}. Use the processor.")
    mean = torch.tensor(image_processor.image_mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(image_processor.image_std, dtype=torch.float32).view(1, 3, 1, 1)
    pixels = images.permute(0, 3, 1, 2).to(torch.float32) * image_processor.rescale_factor
    return (pixels - mean) / std


@torch.no_grad()
def encode_toy_images(model: CLIPModel, pixel_values: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """L2-normalised projected image features, in batches."""
    features = [model.get_image_features(pixel_values=chunk).pooler_output for chunk in pixel_values.split(batch_size)]
    return F.normalize(torch.cat(features), dim=-1)


@torch.no_grad()
def encode_toy_texts(
    model: CLIPModel, tokenizer: PreTrainedTokenizerBase, texts: list[str], batch_size: int = 512
) -> torch.Tensor:
    """L2-normalised projected text features, in batches."""
    features = []
    for start in range(0, len(texts), batch_size):
        tokens = tokenizer(texts[start : start + batch_size], padding=True, truncation=True, return_tensors="pt")
        features.append(model.get_text_features(**tokens).pooler_output)
    return F.normalize(torch.cat(features), dim=-1)


def _recall_at(similarity: torch.Tensor, k: int) -> float:
    # Targets on the diagonal; ties count against the target.
    target = similarity.diagonal().unsqueeze(1)
    ahead = (similarity >= target).sum(dim=1) - 1
    return float((ahead < k).float().mean())


@torch.no_grad()
def evaluate_toy_clip(
    model: CLIPModel,
    tokenizer: PreTrainedTokenizerBase,
    image_processor: CLIPImageProcessorPil,
    world: ToyWorld,
    split: str = "held_out",
) -> dict[str, float]:
    """Text-to-image and image-to-text Recall@1/5 among the images of `split`'s combinations.

    Each combination gets one evaluation-stream image and one caption (templates cycled), so the gallery holds
    each combination once and the nearest distractors differ from the target in a single attribute.

    Example:

    ```python
    >>> from hf_cir.toy import ToyWorld
    >>> from train_toy_clip import build_toy_clip, build_toy_image_processor, evaluate_toy_clip
    >>> from hf_cir.toy.tokenization import build_toy_tokenizer
    >>> tokenizer = build_toy_tokenizer()
    >>> metrics = evaluate_toy_clip(build_toy_clip(tokenizer), tokenizer, build_toy_image_processor(), ToyWorld())
    >>> sorted(metrics)
    ['image_to_text_r1', 'image_to_text_r5', 'text_to_image_r1', 'text_to_image_r5']
    ```
    """
    model.eval()
    combinations = world.split_combinations(split)
    pixels = pixel_values_from_uint8(world.render_batch(combinations, 0, stream="eval"), image_processor)
    captions = [world.caption(c, i) for i, c in enumerate(combinations)]
    similarity = encode_toy_texts(model, tokenizer, captions) @ encode_toy_images(model, pixels).T
    return {
        "text_to_image_r1": _recall_at(similarity, 1),
        "text_to_image_r5": _recall_at(similarity, 5),
        "image_to_text_r1": _recall_at(similarity.T, 1),
        "image_to_text_r5": _recall_at(similarity.T, 5),
    }


def _parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        plain = parameter.ndim < 2 or "embedding" in name or name.endswith("logit_scale")
        (no_decay if plain else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _batch_sampler(world: ToyWorld, args: ToyCLIPTrainingArguments, generator: np.random.Generator):
    """A function returning the next batch (positions in `world.train_combinations`, all distinct)."""
    combinations = world.train_combinations
    num = len(combinations)
    state = {"order": generator.permutation(num), "cursor": 0}

    def anchors(count: int) -> np.ndarray:
        if state["cursor"] + count > num:
            state["order"], state["cursor"] = generator.permutation(num), 0
        chosen = state["order"][state["cursor"] : state["cursor"] + count]
        state["cursor"] += count
        return chosen

    if args.hard_negatives <= 0:
        return lambda: anchors(args.batch_size)
    position = {c: i for i, c in enumerate(combinations)}
    neighbours = [np.array([position[n] for n in c.neighbours() if n in position]) for c in combinations]

    def hard_batch() -> np.ndarray:
        batch: list[int] = []
        seen: set[int] = set()
        while len(batch) < args.batch_size:
            for anchor in anchors(1):
                group = [int(anchor)] + [int(n) for n in generator.permutation(neighbours[anchor])]
                group = [i for i in group if i not in seen][: args.hard_negatives + 1]
                group = group[: args.batch_size - len(batch)]
                batch += group
                seen.update(group)
        return np.array(batch)

    return hard_batch


def train_toy_clip(
    output_dir: str | os.PathLike,
    world: ToyWorld | None = None,
    args: ToyCLIPTrainingArguments | None = None,
    log_every: int = 100,
    eval_every: int = 0,
    overwrite: bool = False,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Train the tiny CLIP on the training combinations of `world` and save it as a CLIP folder.

    The folder holds `model.safetensors`, `config.json`, the toy tokenizer, `preprocessor_config.json` and a
    model card with the held-out retrieval metrics. It is written atomically: an interrupted run leaves nothing
    at `output_dir`.

    Returns:
        The held-out metrics of `evaluate_toy_clip`, plus `train_seconds`.

    Example:

    ```python
    >>> import tempfile
    >>> from train_toy_clip import ToyCLIPTrainingArguments, train_toy_clip
    >>> metrics = train_toy_clip(tempfile.mkdtemp() + "/clip", args=ToyCLIPTrainingArguments(steps=2, batch_size=8))
    >>> 0.0 <= metrics["text_to_image_r1"] <= 1.0
    True
    ```
    """
    world = world or ToyWorld()
    args = args or ToyCLIPTrainingArguments()
    if args.steps < 1 or args.batch_size < 2:
        raise ValueError(f"Need `steps` >= 1 and `batch_size` >= 2; got {args.steps} and {args.batch_size}.")
    if args.batch_size > len(world.train_combinations):
        raise ValueError(
            f"`batch_size` {args.batch_size} exceeds the {len(world.train_combinations)} training combinations."
        )
    tokenizer = build_toy_tokenizer()
    image_processor = build_toy_image_processor(world.image_size)
    model = build_toy_clip(tokenizer, args, world.image_size).to(device)
    generator = np.random.default_rng(args.seed)

    combinations = world.train_combinations
    num = len(combinations)
    started = time.perf_counter()
    images = np.stack(
        [world.render_batch(combinations, variant, stream="train") for variant in range(args.variants)]
    )  # (variants, num, H, W, 3)
    # Every caption of every training combination, tokenised once: (templates, num, length).
    encoded = [
        tokenizer(
            [world.caption(c, t) for c in combinations], padding="max_length", truncation=True, return_tensors="pt"
        )
        for t in range(len(CAPTION_TEMPLATES))
    ]
    input_ids = torch.stack([e.input_ids for e in encoded])
    attention_mask = torch.stack([e.attention_mask for e in encoded])
    length = int(attention_mask.sum(-1).max())
    input_ids, attention_mask = input_ids[..., :length], attention_mask[..., :length]
    logger.info(
        "Rendered %d images and %d captions in %.1fs",
        images.shape[0] * num,
        input_ids.numel() // length,
        time.perf_counter() - started,
    )

    optimizer = torch.optim.AdamW(
        _parameter_groups(model, args.weight_decay), lr=args.learning_rate, betas=(0.9, 0.98)
    )

    def learning_rate(step: int) -> float:
        if step < args.warmup_steps:
            return (step + 1) / args.warmup_steps
        progress = (step - args.warmup_steps) / max(1, args.steps - args.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, learning_rate)
    model.train()
    next_batch = _batch_sampler(world, args, generator)
    started = time.perf_counter()
    for step in range(args.steps):
        batch = next_batch()
        variants = generator.integers(args.variants, size=len(batch))
        templates = torch.as_tensor(generator.integers(len(CAPTION_TEMPLATES), size=len(batch)))
        batch_t = torch.as_tensor(batch)
        pixel_values = pixel_values_from_uint8(images[variants, batch], image_processor)
        outputs = model(
            input_ids=input_ids[templates, batch_t].to(device),
            attention_mask=attention_mask[templates, batch_t].to(device),
            pixel_values=pixel_values.to(device),
        )
        labels = torch.arange(len(batch), device=device)
        loss = (
            F.cross_entropy(outputs.logits_per_text, labels) + F.cross_entropy(outputs.logits_per_image, labels)
        ) / 2
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if log_every and ((step + 1) % log_every == 0 or step + 1 == args.steps):
            logger.info(
                "step %d/%d loss %.4f lr %.2e scale %.1f (%.1fs)",
                step + 1,
                args.steps,
                loss.item(),
                scheduler.get_last_lr()[0],
                model.logit_scale.exp().item(),
                time.perf_counter() - started,
            )
        if eval_every and (step + 1) % eval_every == 0 and step + 1 < args.steps:
            metrics = evaluate_toy_clip(model.cpu(), tokenizer, image_processor, world)
            logger.info("step %d held-out: %s", step + 1, metrics)
            model.to(device).train()
    train_seconds = time.perf_counter() - started

    model = model.cpu()
    metrics = evaluate_toy_clip(model, tokenizer, image_processor, world, split="held_out")
    metrics["train_seconds"] = round(train_seconds, 1)
    logger.info("held-out metrics: %s", metrics)
    save_toy_clip(
        output_dir, model, tokenizer, image_processor, world, args, metrics, overwrite=overwrite, device=str(device)
    )
    return metrics


# A folder `save_toy_clip` writes: `overwrite=True` replaces only such a folder (see `hf_cir.utils.io`).
TOY_CLIP_FOLDER = ArtefactKind(
    "toy CLIP folder",
    "config.json",
    lambda config: config.get("model_type") == "clip",
    entries=("*.safetensors", "*_config.json", "tokenizer.json", "training_args.json", "README.md"),
)


def save_toy_clip(
    output_dir: str | os.PathLike,
    model: CLIPModel,
    tokenizer: PreTrainedTokenizerBase,
    image_processor: CLIPImageProcessorPil,
    world: ToyWorld,
    args: ToyCLIPTrainingArguments,
    metrics: dict[str, float],
    overwrite: bool = False,
    device: str = "cpu",
) -> Path:
    """Write the CLIP folder (weights, tokenizer, image processor, `training_args.json`, model card) atomically."""
    with atomic_directory(output_dir, overwrite=overwrite, kind=TOY_CLIP_FOLDER) as folder:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        image_processor.save_pretrained(folder)
        record = {
            "world": {"seed": world.seed, "held_out_fraction": world.held_out_fraction},
            **asdict(args),
            "device": device,
        }
        (folder / "training_args.json").write_text(json.dumps({"args": record, "metrics": metrics}, indent=2) + "\n")
        card_data = ModelCardData(
            license="apache-2.0",
            library_name="transformers",
            pipeline_tag="zero-shot-image-classification",
            tags=["clip", "toy", "hf-cir", "composed-image-retrieval"],
            model_name="hf-cir toy CLIP",
        )
        num_parameters = sum(p.numel() for p in model.parameters())
        card = render_model_card(
            "toy_clip",
            card_data,
            num_parameters=f"{num_parameters:,}",
            config=model.config,
            args=record,
            metrics={
                key: (f"{value:.3f}" if key != "train_seconds" else f"{value:.0f}") for key, value in metrics.items()
            },
            num_train_combinations=len(world.train_combinations),
            num_held_out_combinations=len(world.held_out_combinations),
        )
        card.save(folder / "README.md")
    return Path(output_dir)


if __name__ == "__main__":  # pragma: no cover - `python training/toy/train_toy_clip.py OUTPUT_DIR [STEPS] [BATCH]`
    import sys

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else ToyCLIPTrainingArguments.steps
    batch_size = int(sys.argv[3]) if len(sys.argv) > 3 else ToyCLIPTrainingArguments.batch_size
    arguments = ToyCLIPTrainingArguments(steps=steps, batch_size=batch_size)
    print(train_toy_clip(sys.argv[1], args=arguments, log_every=50, eval_every=250, overwrite=True))
