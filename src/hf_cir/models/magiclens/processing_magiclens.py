# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""MagicLens image processor and processor: the reference's image preprocessing and its tokenizer's conventions.

Images. The reference model takes `[0, 1]` floats, crops the largest centred square, resizes it with JAX's bilinear
antialiased `jax.image.resize` to the CLIP resolution and applies CLIP's mean and std (`protocol="model"`, the
default). The reference evaluation script (`data_utils.process_img`) first divides each image by its own maximum and
squashes it to 224 x 224 (no crop), then the model crops (a no-op) and resizes (a no-op at 224): that is
`protocol="evaluation"`, the protocol behind the published benchmark numbers. The resize is a port of JAX's
`scale_and_translate` with a triangle kernel (per-axis weight matrices, in float32).

Texts. The reference tokenizer (scenic's wrapper of OpenAI's `SimpleTokenizer`) cleans a text with `ftfy.fix_text` and a
double `html.unescape`, collapses whitespace, lower-cases, adds start / end of text, and pads with id 0 (the bare `!`
token); its attention mask is `input_ids > 0`, so a `!` written as its own token inside a text (`no!;`) is hidden from
attention too. Texts longer than 77 tokens raise in the reference evaluation (`truncate=False`); here they are
truncated as scenic's `truncate=True` does (the first 76 tokens, then end of text), with a warning. Without `ftfy`
installed (`pip install "hf-cir[magiclens]"`), mojibake such as `cafÃ©` is not repaired and tokenizes differently.

This file is self-contained (it imports only `transformers`, `PIL`, `numpy` and the standard library).
"""

from __future__ import annotations

import html
import os
import re

import numpy as np
from PIL import Image
from transformers import BatchFeature, ProcessorMixin
from transformers.image_processing_utils import BaseImageProcessor
from transformers.utils import logging

try:  # the reference cleans texts with ftfy; optional (see the module docstring)
    import ftfy
except ImportError:
    ftfy = None

logger = logging.get_logger(__name__)

OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
PROTOCOLS = ("model", "evaluation")


def clean_text(text: str) -> str:
    """The reference tokenizer's cleaning: `ftfy.fix_text` (when installed), `html.unescape` twice, whitespace runs
    collapsed to one space, stripped. (Lower-casing is the tokenizer's.)

    Example:

    ```python
    >>> from hf_cir.models.magiclens.processing_magiclens import clean_text
    >>> clean_text("  a &amp;amp; b\\n c ")
    'a & b c'
    ```
    """
    if ftfy is not None:
        text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


def _resize_weights(input_size: int, output_size: int) -> np.ndarray:
    """JAX's bilinear antialiased resize weights along one axis, shape `(input_size, output_size)`, float32."""
    inv_scale = np.float32(input_size / output_size)
    kernel_scale = max(inv_scale, np.float32(1.0))
    sample = (np.arange(output_size, dtype=np.float32) + np.float32(0.5)) * inv_scale - np.float32(0.5)
    distance = np.abs(sample[None, :] - np.arange(input_size, dtype=np.float32)[:, None]) / kernel_scale
    weights = np.maximum(np.float32(0.0), np.float32(1.0) - distance)
    total = weights.sum(axis=0, keepdims=True)
    weights = np.where(np.abs(total) > 1000.0 * np.finfo(np.float32).eps, weights / np.where(total != 0, total, 1), 0)
    inside = (sample >= -0.5) & (sample <= input_size - 0.5)
    return np.where(inside[None, :], weights, 0).astype(np.float32)


def resize_bilinear_antialiased(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize an `(H, W, C)` float32 image as `jax.image.resize(..., method="bilinear", antialias=True)` does (an axis
    whose size does not change is left untouched)."""
    if image.shape[0] != height:
        image = np.einsum("hwc,hy->ywc", image, _resize_weights(image.shape[0], height))
    if image.shape[1] != width:
        image = np.einsum("hwc,wx->hxc", image, _resize_weights(image.shape[1], width))
    return image.astype(np.float32)


def largest_square_crop(image: np.ndarray) -> np.ndarray:
    """The largest centred square of an `(H, W, C)` image (the reference's `largest_square_crop`)."""
    height, width = image.shape[:2]
    size = min(height, width)
    top, left = (height - size) // 2, (width - size) // 2
    return image[top : top + size, left : left + size]


class MagicLensImageProcessor(BaseImageProcessor):
    r"""
    MagicLens's image preprocessing: RGB, `[0, 1]`, the largest centred square, a bilinear antialiased resize (JAX's) to
    `size`, then CLIP's mean and std. Returns `pixel_values` of shape `(batch_size, 3, size, size)`.

    Args:
        size (`int`, *optional*, defaults to 224):
            The model's input resolution (the CLIP vision tower's `image_size`).
        protocol (`str`, *optional*, defaults to `"model"`):
            `"model"`: the model's own preprocessing (pixels / 255). `"evaluation"`: the reference evaluation script's,
            which gives the published numbers: pixels divided by the image's own maximum and squashed to
            `evaluation_size` x `evaluation_size` without cropping, then the model's crop and resize.
        evaluation_size (`int`, *optional*, defaults to 224):
            The square size the evaluation protocol squashes images to first (224 in the reference script).
        image_mean (`list[float]`, *optional*): Defaults to OpenAI CLIP's mean.
        image_std (`list[float]`, *optional*): Defaults to OpenAI CLIP's std.

    Example:

    ```python
    >>> from PIL import Image
    >>> from hf_cir.models.magiclens import MagicLensImageProcessor
    >>> MagicLensImageProcessor()(Image.new("RGB", (640, 480)))["pixel_values"].shape
    torch.Size([1, 3, 224, 224])
    >>> MagicLensImageProcessor(protocol="evaluation").protocol
    'evaluation'
    ```"""

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        size: int = 224,
        protocol: str = "model",
        evaluation_size: int = 224,
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if protocol not in PROTOCOLS:
            raise ValueError(f"`protocol` must be one of {PROTOCOLS}, got {protocol!r}.")
        for name, value in (("size", size), ("evaluation_size", evaluation_size)):
            if isinstance(value, dict):  # a saved `{"height": s, "width": s}` or `{"shortest_edge": s}`
                value = next(iter(value.values()))
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
            setattr(self, name, value)
        self.protocol = protocol
        self.image_mean = list(image_mean) if image_mean is not None else list(OPENAI_CLIP_MEAN)
        self.image_std = list(image_std) if image_std is not None else list(OPENAI_CLIP_STD)

    def _to_rgb_array(self, image, index: int) -> np.ndarray:
        if isinstance(image, (str, os.PathLike)):
            try:
                with Image.open(image) as opened:
                    image = opened.convert("RGB")
            except (OSError, ValueError) as error:
                raise ValueError(f"images[{index}]: cannot read {image} as an image ({error}).") from None
        if isinstance(image, Image.Image):
            image = image.convert("RGB")  # the reference's conversion (alpha is dropped, not composited)
        array = np.asarray(image)
        if array.ndim == 2:
            array = np.repeat(array[..., None], 3, axis=-1)
        if array.ndim != 3 or array.shape[-1] != 3 or array.shape[0] == 0 or array.shape[1] == 0:
            raise ValueError(
                f"images[{index}] must be a PIL image, a path or an RGB array of shape (height, width, 3), got an "
                f"array of shape {array.shape}."
            )
        return array

    def preprocess_one(self, image, index: int = 0) -> np.ndarray:
        """One image to a `(3, size, size)` float32 array."""
        pixels = self._to_rgb_array(image, index)
        if self.protocol == "evaluation":
            # `data_utils.process_img`: `ima / (ima.max() + 1e-12)`, then resize (no crop) to the evaluation size
            scaled = pixels.astype(np.float32) / (np.float32(pixels.max()) + np.float32(1e-12))
            scaled = resize_bilinear_antialiased(scaled, self.evaluation_size, self.evaluation_size)
        else:
            scaled = pixels.astype(np.float32) / np.float32(255.0) if pixels.dtype == np.uint8 else pixels
            scaled = scaled.astype(np.float32)
        square = largest_square_crop(scaled)
        resized = resize_bilinear_antialiased(square, self.size, self.size)
        mean, std = np.asarray(self.image_mean, np.float32), np.asarray(self.image_std, np.float32)
        return ((resized - mean) / std).transpose(2, 0, 1)

    def preprocess(self, images, return_tensors: str | None = "pt", **kwargs) -> BatchFeature:
        """Preprocess one image or a list of images (PIL images, paths, `(H, W[, 3])` uint8 or `[0, 1]` float arrays)."""
        if kwargs:
            raise TypeError(f"MagicLensImageProcessor got unexpected argument(s) {sorted(kwargs)}.")
        if not isinstance(images, (list, tuple)):
            images = [images]
        if not images:
            raise ValueError("`images` is an empty list.")
        pixel_values = np.stack([self.preprocess_one(image, i) for i, image in enumerate(images)])
        return BatchFeature(data={"pixel_values": pixel_values}, tensor_type=return_tensors)


class MagicLensProcessor(ProcessorMixin):
    r"""
    Constructs a MagicLens processor from a [`MagicLensImageProcessor`] and a CLIP tokenizer, with the reference
    tokenizer's conventions: texts cleaned like `SimpleTokenizer` (see [`clean_text`]), padded with id 0 to the
    tokenizer's context (77), truncated to it with the end-of-text token kept, and the attention mask `input_ids > 0`.
    The empty text `""` (start and end of text only) is what the reference pairs with a gallery image.

    Args:
        image_processor ([`MagicLensImageProcessor`]): The image processor.
        tokenizer ([`CLIPTokenizer`]): The OpenAI CLIP tokenizer.

    Example:

    ```python
    >>> from PIL import Image
    >>> from hf_cir.models.magiclens import MagicLensImageProcessor, MagicLensProcessor
    >>> from hf_cir.utils import build_clip_tokenizer
    >>> processor = MagicLensProcessor(MagicLensImageProcessor(), build_clip_tokenizer())
    >>> inputs = processor(images=Image.new("RGB", (300, 200)), text="no!; make it red")
    >>> inputs["input_ids"][0, :8].tolist(), inputs["attention_mask"][0, :8].tolist()
    ([49406, 871, 0, 282, 1078, 585, 736, 49407], [1, 1, 0, 1, 1, 1, 1, 1])
    >>> inputs["pixel_values"].shape
    torch.Size([1, 3, 224, 224])
    ```"""

    def __init__(self, image_processor=None, tokenizer=None, **kwargs):
        if image_processor is None:
            raise ValueError("MagicLensProcessor needs an `image_processor` (a MagicLensImageProcessor).")
        if tokenizer is None:
            raise ValueError("MagicLensProcessor needs a `tokenizer` (a CLIP tokenizer).")
        super().__init__(image_processor, tokenizer, **kwargs)

    def tokenize(self, texts: list[str], return_tensors: str | None = "pt") -> BatchFeature:
        """Token ids padded with 0 and the reference's attention mask (`input_ids > 0`)."""
        max_length = self.tokenizer.model_max_length
        encoded = self.tokenizer([clean_text(t) for t in texts], truncation=False, padding=False, verbose=False)
        encoded = encoded["input_ids"]
        rows = np.zeros((len(texts), max_length), dtype=np.int64)
        truncated = []
        for i, ids in enumerate(encoded):
            if len(ids) > max_length:
                truncated.append(i)
                ids = ids[: max_length - 1] + [ids[-1]]  # scenic's truncate=True keeps the end-of-text token
            rows[i, : len(ids)] = ids
        if truncated:
            logger.warning(f"Texts {truncated} are longer than the {max_length}-token context and were truncated.")
        data = {"input_ids": rows, "attention_mask": (rows > 0).astype(np.int64)}
        return BatchFeature(data=data, tensor_type=return_tensors)

    def __call__(self, images=None, text: str | list[str] | None = None, return_tensors: str | None = "pt", **kwargs):
        r"""
        Prepare images and texts for [`MagicLensModel`]: `model(**processor(images=..., text=...))`. Images alone give
        `pixel_values` (the model then embeds them with the empty text, as a gallery); texts alone give `input_ids`
        and `attention_mask`.

        Raises:
            ValueError: nothing to process, or image and text batches of different sizes.
        """
        if kwargs:
            raise TypeError(f"MagicLensProcessor got unexpected argument(s) {sorted(kwargs)}.")
        if images is None and text is None:
            raise ValueError("MagicLensProcessor needs `images`, `text` or both.")
        data = {}
        if text is not None:
            texts = [text] if isinstance(text, str) else list(text) if isinstance(text, (list, tuple)) else None
            if texts is None or not all(isinstance(t, str) for t in texts):
                raise TypeError(f"`text` must be a string or a list of strings, got {type(text).__name__}.")
            data.update(self.tokenize(texts, return_tensors=None))
        if images is not None:
            images = list(images) if isinstance(images, (list, tuple)) else [images]
            if text is not None and len(images) != len(data["input_ids"]):
                raise ValueError(
                    f"Got {len(images)} images and {len(data['input_ids'])} texts: MagicLens pairs each image with "
                    "one text (use '' for an image alone)."
                )
            data.update(self.image_processor(images, return_tensors=None))
        return BatchFeature(data=data, tensor_type=return_tensors)


__all__ = [
    "PROTOCOLS",
    "MagicLensImageProcessor",
    "MagicLensProcessor",
    "clean_text",
    "largest_square_crop",
    "resize_bilinear_antialiased",
]
