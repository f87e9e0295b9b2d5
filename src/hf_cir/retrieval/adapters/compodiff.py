"""The CompoDiff family behind the retrieval interface."""

from __future__ import annotations

import inspect
import os
from functools import partial
from typing import Any

import torch
from PIL import Image

from ...utils import load_image
from ..models import BASELINE_METHODS, RetrievalModel, fingerprint_modules, pixel_values

__all__ = ["SETTING_KEYS", "CompoDiffRetrievalModel"]

# The per-query settings of a CompoDiff query (keyword arguments of the pipeline's `__call__`), and the seed.
SETTING_KEYS = ("num_inference_steps", "guidance_scale", "image_guidance_scale", "source_weight")


class CompoDiffRetrievalModel(RetrievalModel):
    """A [`CompoDiffPipeline`] behind the retrieval interface.

    Sampling settings (`num_inference_steps`, guidance scales, samples per prompt, seed) are fixed per instance so
    that queries are reproducible: every call draws its noise from a generator seeded with `seed`. The noise of a
    query therefore depends on its position in the batch; the same batch gives the same embeddings.

    Speed settings, applied to the pipeline once: `preset` (a name of `SAMPLING_PRESETS`, e.g. `"interactive"`),
    `scheduler` (a class name among the scheduler's own and its `compatibles`), `precision` of the text encoder and
    the prior (`"float16"`, `"bfloat16"`, `"int8"`; see `CompoDiffPipeline.set_precision`) and `text_cache_size`
    (texts kept by the pipeline's text-encoding cache; 0: no cache). Explicit settings override the preset's.

    Example:

    ```python
    >>> from hf_cir.retrieval import CompoDiffRetrievalModel
    >>> model = CompoDiffRetrievalModel.from_pretrained("path/to/compodiff-pipeline")  # doctest: +SKIP
    >>> CompoDiffRetrievalModel.methods
    ('compodiff', 'image', 'text', 'sum')
    ```
    """

    model_type = "compodiff"
    methods = ("compodiff",) + BASELINE_METHODS
    default_method = "compodiff"

    def __init__(
        self,
        pipeline,
        name_or_path: str = "",
        device: torch.device | str | None = None,
        seed: int = 0,
        preset: str | None = None,
        scheduler: str | None = None,
        precision: str | None = None,
        text_cache_size: int = 0,
        **sampling_kwargs,
    ):
        super().__init__(name_or_path or getattr(pipeline, "name_or_path", ""), device)
        self.pipeline = pipeline.to(self.device)
        self.pipeline.set_progress_bar_config(disable=True)
        if preset is not None:
            self.pipeline.apply_preset(preset)
        if scheduler is not None:
            self.pipeline.set_scheduler(scheduler)
        if precision is not None:
            self.pipeline.set_precision(precision)
        if text_cache_size:
            self.pipeline.enable_text_encoding_cache(text_cache_size)
        self.seed = seed
        self.sampling_kwargs = sampling_kwargs

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        **kwargs,
    ) -> CompoDiffRetrievalModel:
        from ...pipelines.compodiff import CompoDiffPipeline

        pipeline = CompoDiffPipeline.from_pretrained(name_or_path, dtype=dtype)
        return cls(pipeline, str(name_or_path), device, **kwargs)

    @property
    def embedding_dim(self) -> int:
        return int(self.pipeline.image_encoder.config.projection_dim)

    def _generator(self) -> torch.Generator:
        return torch.Generator(device="cpu").manual_seed(self.seed)

    def _encode_images(self, images):
        return self.pipeline.encode_image(images)

    def image_preprocessor(self):
        return partial(pixel_values, self.pipeline.image_processor)

    @torch.no_grad()
    def encode_pixel_values(self, pixel_values):
        self.encode_image_calls += 1
        return self.pipeline.encode_image(pixel_values).float().cpu()

    def _sample(self, texts, images=None, image_embeds=None, negative_texts=None, mask_images=None):
        kwargs = dict(self.sampling_kwargs)
        if negative_texts is not None:
            kwargs["negative_prompt"] = negative_texts
        if mask_images is not None:
            masks = [_open_mask(mask, index) for index, mask in enumerate(mask_images)]
            kwargs["mask_image"] = masks if len(masks) > 1 else masks[0]
        if images is not None:
            kwargs["image"] = images
        if image_embeds is not None:
            kwargs["image_embeds"] = image_embeds
        return self.pipeline(texts, generator=self._generator(), output_type="pt", **kwargs).image_embeds

    def _encode_texts(self, texts):
        return self._sample(texts)

    def _compose(self, texts, images, image_embeds, negative_texts, mask_images):
        return self._sample(texts, images, image_embeds, negative_texts, mask_images)

    @property
    def tokenizer(self):
        return self.pipeline.tokenizer

    def enable_text_cache(self, size: int) -> None:
        if getattr(self.pipeline, "text_encoding_cache", None) is None:
            self.pipeline.enable_text_encoding_cache(size)

    def settings(self) -> dict[str, Any]:
        """The sampling settings a query uses: the pipeline's defaults, overridden by this model's, and the seed."""
        parameters = inspect.signature(self.pipeline.__call__).parameters
        settings = {key: parameters[key].default for key in SETTING_KEYS if key in parameters}
        for key, value in settings.items():
            if value is None:  # "the pipeline's current default", e.g. `pipeline.default_num_inference_steps`
                settings[key] = getattr(self.pipeline, f"default_{key}", None)
        settings.update({key: value for key, value in self.sampling_kwargs.items() if key in SETTING_KEYS})
        settings["seed"] = self.seed
        return settings

    def with_settings(self, settings: dict[str, Any]) -> CompoDiffRetrievalModel:
        """A model sharing this one's pipeline with other sampling settings (no state of this model changes)."""
        settings = {key: value for key, value in settings.items() if value is not None}
        if not settings:
            return self
        unknown = sorted(set(settings) - set(SETTING_KEYS) - {"seed"})
        if unknown:
            raise ValueError(f"Unknown CompoDiff setting(s) {unknown}; expected some of {[*SETTING_KEYS, 'seed']}.")
        sampling = {**self.sampling_kwargs, **{k: v for k, v in settings.items() if k != "seed"}}
        steps = sampling.get("num_inference_steps")
        if steps is not None and (isinstance(steps, bool) or int(steps) != steps or steps < 1):
            raise ValueError(f"`num_inference_steps` must be a positive integer, got {steps!r}.")
        if steps is not None:
            sampling["num_inference_steps"] = int(steps)
        for key in ("guidance_scale", "image_guidance_scale"):
            if sampling.get(key) is not None and sampling[key] < 0:
                raise ValueError(f"`{key}` must be >= 0, got {sampling[key]!r}.")
        weight = sampling.get("source_weight")
        if weight is not None and not 0.0 <= weight <= 1.0:
            raise ValueError(f"`source_weight` must be in [0, 1], got {weight!r}.")
        seed = int(settings.get("seed", self.seed))
        return CompoDiffRetrievalModel(self.pipeline, self.name_or_path, self.device, seed=seed, **sampling)

    def gallery_fingerprint(self) -> str:
        processor = self.pipeline.image_processor
        settings = processor.to_dict() if hasattr(processor, "to_dict") else repr(processor)
        return fingerprint_modules("compodiff", self.pipeline.image_encoder, settings, str(self.pipeline.dtype))


def _open_mask(mask: Any, index: int) -> Any:
    """Mask files are opened as single-channel images (white = the region the text may change)."""
    if isinstance(mask, (str, os.PathLike)):
        return load_image(mask, name=f"mask_images[{index}]").convert("L")
    if isinstance(mask, Image.Image) and mask.mode not in ("L", "1"):
        return load_image(mask).convert("L")
    return mask
