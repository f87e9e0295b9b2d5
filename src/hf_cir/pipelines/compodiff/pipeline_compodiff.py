# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
#
# This file imports only torch, numpy, PIL, transformers, diffusers and the standard library: it is also the
# `pipeline_compodiff.py` of the Hub remote-code layout (see pipelines/compodiff/README.md), which must load in a
# process that never imported hf_cir. The prior and the scheduler are used through their public methods only.
"""CompoDiff as a diffusers pipeline: (reference image, text, mask) -> composed CLIP image embedding."""

from __future__ import annotations

import inspect
import os
import warnings
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers.models.modeling_utils import ModelMixin
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput, replace_example_docstring
from diffusers.utils.torch_utils import randn_tensor
from transformers import CLIPTextModel, CLIPVisionModelWithProjection, PreTrainedTokenizerBase
from transformers.image_processing_utils import BaseImageProcessor

__all__ = ["CompoDiffPipeline", "CompoDiffPipelineOutput"]

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> import torch
        >>> from PIL import Image
        >>> from hf_cir import CompoDiffPipeline

        >>> pipe = CompoDiffPipeline.from_pretrained("path/to/compodiff")  # e.g. made by `hf-cir convert compodiff`
        >>> pipe.set_progress_bar_config(disable=True)
        >>> image = Image.open("dog.jpg")
        >>> query = pipe(
        ...     "the same dog on a beach at sunset", image=image, negative_prompt="low quality",
        ...     generator=torch.Generator().manual_seed(0),
        ... ).image_embeds  # [1, projection_dim]; L2-normalise it to search CLIP image embeddings
        >>> gallery = pipe.encode_image([Image.open(p) for p in ["a.jpg", "b.jpg"]])
        >>> scores = torch.nn.functional.normalize(query, dim=-1) @ torch.nn.functional.normalize(gallery, dim=-1).T
        ```
"""

OUTPUT_TYPES = ("pt", "np")
SINGLE_CHANNEL_MODES = ("1", "L", "I", "I;16", "F")


@dataclass
class CompoDiffPipelineOutput(BaseOutput):
    """
    Output of [`CompoDiffPipeline`].

    Args:
        image_embeds (`torch.Tensor` or `np.ndarray` of shape `(batch_size, embedding_dim)`):
            The composed query embedding of each prompt: the mean of its `num_samples_per_prompt` samples, not
            normalised (L2-normalise it before a cosine search).
    """

    image_embeds: torch.Tensor | np.ndarray


class CompoDiffPipeline(DiffusionPipeline):
    r"""
    Composed image retrieval with CompoDiff (Gu et al., "CompoDiff: Versatile Composed Image Retrieval With Latent
    Diffusion", TMLR 2024): a diffusion prior that turns a reference image, a modification text and an optional
    mask into a CLIP image embedding to search with.

    Sampling runs classifier-free guidance with three branches per step, `cond` = (image, prompt), `null_text` =
    (image, negative prompt), `null_all` = (zero image, negative prompt), combined as `null_all + guidance_scale *
    (cond - null_text) + image_guidance_scale * (null_text - null_all)`.

    Speed: by default the step-independent work (the text projection, the mask MLP and every block's
    cross-attention keys/values of each context) is computed once per call with `prior.prepare_context` and shared
    by all steps, by the samples of a prompt, and by the two branches that share the negative prompt; in text-only
    mode the two negative branches have identical inputs and are computed once. Set `pipe.use_context_cache =
    False` to run the plain path instead, which recomputes everything at every step as the reference does (the
    outputs agree to float32 rounding).

    Schedulers: [`CompoDiffScheduler`] reproduces the reference sampler exactly. Diffusers schedulers that accept a
    clean-sample prediction also work, e.g. `DDIMScheduler(prediction_type="sample",
    beta_schedule="squaredcos_cap_v2", clip_sample=False)`; they give different (not reference) results: DDIM's
    grid is `num_inference_steps` evaluations on its own spacing (e.g. 900, 800, ..., 0), its default `eta` is 0
    (deterministic), its final step uses `alphas_cumprod` of the step (not the reference's shifted
    `alphas_cumprod_prev` tables), and `clip_sample=True` (its default) would clamp embeddings to [-1, 1].

    Args:
        prior ([`CompoDiffPriorTransformer`]): The denoiser.
        scheduler ([`CompoDiffScheduler`] or a diffusers scheduler with `prediction_type="sample"`): The sampler.
        text_encoder ([`~transformers.CLIPTextModel`], *optional*): Its last hidden state over all positions (padded
            to the tokenizer's maximum length, with each text's own attention mask) is the text condition.
        tokenizer ([`~transformers.CLIPTokenizer`], *optional*): The text encoder's tokenizer.
        image_encoder ([`~transformers.CLIPVisionModelWithProjection`], *optional*): Its `image_embeds` are the
            image condition (and the space of the output).
        image_processor ([`~transformers.CLIPImageProcessor`], *optional*): Preprocesses images for the encoder.

    The encoders are optional: without them, pass `prompt_embeds`, `negative_prompt_embeds` and `image_embeds`.
    """

    model_cpu_offload_seq = "text_encoder->image_encoder->prior"
    _optional_components = ["text_encoder", "tokenizer", "image_encoder", "image_processor"]

    def __init__(
        self,
        prior: ModelMixin,
        scheduler: SchedulerMixin,
        text_encoder: CLIPTextModel | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        image_encoder: CLIPVisionModelWithProjection | None = None,
        image_processor: BaseImageProcessor | None = None,
    ):
        super().__init__()
        self.register_modules(
            prior=prior,
            scheduler=scheduler,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            image_encoder=image_encoder,
            image_processor=image_processor,
        )
        self.use_context_cache = True
        self._negative_prompt_cache: tuple | None = None

    # ------------------------------------------------------------------------------------------------ encoders

    def _text_encoder_state(self) -> tuple:
        # Changes when the encoder is replaced, moved, cast or its weights are modified in place.
        parameters = list(self.text_encoder.parameters())
        return (
            id(self.text_encoder),
            id(self.tokenizer),
            parameters[0].device,
            parameters[0].dtype,
            sum(p._version for p in parameters),
        )

    def _encode_texts(self, texts: list[str], device: torch.device, argument: str = "prompt_embeds") -> torch.Tensor:
        if self.text_encoder is None or self.tokenizer is None:
            raise ValueError(f"This pipeline has no `text_encoder`/`tokenizer`: pass `{argument}` instead.")
        max_length = self.tokenizer.model_max_length
        tokens = self.tokenizer(
            texts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt"
        )
        for text, ids in zip(texts, self.tokenizer(texts).input_ids):
            if len(ids) > max_length:
                warnings.warn(
                    f"A prompt has {len(ids)} tokens, more than the text encoder's {max_length}: it was truncated "
                    f"(the end-of-text token is kept): {text[:80]!r}",
                    stacklevel=3,
                )
        output = self.text_encoder(
            input_ids=tokens.input_ids.to(device), attention_mask=tokens.attention_mask.to(device)
        )
        return output.last_hidden_state

    def encode_prompt(
        self,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = "",
        device: torch.device | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Encode the prompts and the negative prompt into text conditions.

        Each text is tokenised on its own terms (padded to the tokenizer's maximum length, truncated with a
        warning) and encoded with its own attention mask; the condition is the text encoder's last hidden state
        over all positions. One negative prompt gives a batch of 1, shared by every prompt. The negative prompt's
        embedding is kept and reused by later calls while the text and the text encoder are unchanged.

        Args:
            prompt (`str` or `list[str]`, *optional*): The modification texts; or pass `prompt_embeds`.
            negative_prompt (`str` or `list[str]`, *optional*, defaults to `""`): One text, or one per prompt.
            device (`torch.device`, *optional*): Where to put the embeddings.
            prompt_embeds (`torch.Tensor` of shape `(batch, length, text_dim)`, *optional*): Precomputed.
            negative_prompt_embeds (`torch.Tensor` of shape `(1 or batch, length, text_dim)`, *optional*):
                Precomputed.

        Returns:
            `(prompt_embeds, negative_prompt_embeds)`.
        """
        device = device or self._execution_device
        if prompt_embeds is None:
            if prompt is None:
                raise ValueError("Pass `prompt` or `prompt_embeds`.")
            prompts = [prompt] if isinstance(prompt, str) else list(prompt)
            if not prompts or not all(isinstance(p, str) for p in prompts):
                raise ValueError(f"`prompt` must be a string or a non-empty list of strings, got {prompt!r}.")
            prompt_embeds = self._encode_texts(prompts, device)
        batch = prompt_embeds.shape[0]
        if negative_prompt_embeds is None:
            negatives = [negative_prompt or ""] if isinstance(negative_prompt, str) or negative_prompt is None else []
            if not negatives:
                negatives = list(negative_prompt)
                if len(negatives) != batch or not all(isinstance(n, str) for n in negatives):
                    raise ValueError(
                        f"`negative_prompt` must be a string or a list of {batch} strings (one per prompt), got "
                        f"{negative_prompt!r}."
                    )
            key = (tuple(negatives),) + self._text_encoder_state() if self.text_encoder is not None else None
            if key is not None and self._negative_prompt_cache is not None and self._negative_prompt_cache[0] == key:
                negative_prompt_embeds = self._negative_prompt_cache[1]
            else:
                negative_prompt_embeds = self._encode_texts(negatives, device, "negative_prompt_embeds")
                self._negative_prompt_cache = (key, negative_prompt_embeds)
        if (
            negative_prompt_embeds.shape[0] not in (1, batch)
            or negative_prompt_embeds.shape[1:] != prompt_embeds.shape[1:]
        ):
            raise ValueError(
                f"`negative_prompt_embeds` has shape {tuple(negative_prompt_embeds.shape)}; expected (1 or {batch}, "
                f"{', '.join(map(str, prompt_embeds.shape[1:]))}) to match `prompt_embeds`."
            )
        return prompt_embeds.to(device), negative_prompt_embeds.to(device)

    def _preprocess_images(self, image) -> tuple[torch.Tensor, list[PIL.Image.Image] | None]:
        """`(pixel_values, PIL images or None)` of a PIL image, a path, an array, a list of those, or pixel values."""
        if isinstance(image, torch.Tensor):
            if image.ndim != 4 or image.shape[1] != 3:
                raise ValueError(f"A tensor `image` must be pixel values (batch, 3, H, W), got {tuple(image.shape)}.")
            return image, None
        if self.image_processor is None:
            raise ValueError("This pipeline has no `image_processor`: pass pixel values or `image_embeds`.")
        images = list(image) if isinstance(image, (list, tuple)) else [image]
        opened = []
        for item in images:
            if isinstance(item, (str, os.PathLike)):
                if not os.path.isfile(item):
                    raise FileNotFoundError(f"`image`: no such file: {item}")
                with PIL.Image.open(item) as handle:
                    handle.load()
                    item = handle.copy()
            elif isinstance(item, np.ndarray):
                item = PIL.Image.fromarray(item)
            elif not isinstance(item, PIL.Image.Image):
                raise TypeError(
                    f"`image` must be PIL images, paths, arrays or pixel values, got {type(item).__name__}."
                )
            opened.append(item)
        pixel_values = self.image_processor(images=opened, return_tensors="pt").pixel_values
        return pixel_values, opened

    @torch.no_grad()
    def encode_image(self, image, device: torch.device | None = None) -> torch.Tensor:
        """
        CLIP image embeddings `[batch, embedding_dim]` (the image encoder's `image_embeds`, not normalised): the
        image condition of a query, and the gallery embeddings to search.

        Args:
            image: A PIL image, a path, a uint8 array, a list of those, or preprocessed pixel values.

        Example:

        ```python
        >>> gallery = pipe.encode_image(["a.jpg", "b.jpg"])  # doctest: +SKIP
        ```
        """
        if self.image_encoder is None:
            raise ValueError("This pipeline has no `image_encoder`: pass `image_embeds` instead.")
        device = device or self._execution_device
        pixel_values, _ = self._preprocess_images(image)
        return self._encode_pixels(pixel_values, device)

    def _encode_pixels(self, pixel_values: torch.Tensor, device: torch.device) -> torch.Tensor:
        pixel_values = pixel_values.to(device=device, dtype=self.image_encoder.dtype)
        return self.image_encoder(pixel_values=pixel_values).image_embeds

    # ----------------------------------------------------------------------------------------------------- masks

    def _prepare_mask(self, mask_image, batch: int, images, pixel_size) -> tuple[torch.Tensor | None, torch.Tensor]:
        """
        `(mask at the pixel grid or None, mask at the prior's side)`, both binary, 1 = masked, as the reference
        demo: binarise at 0.5 on the preprocessed grid, zero the masked pixels, resize to the prior's side, binarise.
        """
        side = self.prior.config.mask_size
        if isinstance(mask_image, (PIL.Image.Image, list, tuple)):
            masks = list(mask_image) if isinstance(mask_image, (list, tuple)) else [mask_image]
            if len(masks) not in (1, batch):
                raise ValueError(f"`mask_image` has {len(masks)} masks for {batch} prompts.")
            if images is not None and len(masks) == 1 and len(images) > 1:
                masks = masks * len(images)
            processed = []
            for index, mask in enumerate(masks):
                if not isinstance(mask, PIL.Image.Image):
                    raise TypeError(f"`mask_image` list items must be PIL images, got {type(mask).__name__}.")
                if mask.mode not in SINGLE_CHANNEL_MODES:
                    raise ValueError(
                        f"`mask_image` must have a single channel, got mode {mask.mode!r} with {len(mask.getbands())} "
                        "channels; convert it, e.g. `mask.convert('L')` (white = masked)."
                    )
                if images is not None and mask.size != images[index].size:
                    raise ValueError(
                        f"`mask_image` has size {mask.size} but its image has size {images[index].size}; they must "
                        "match (width, height)."
                    )
                processed.append(mask.convert("L").convert("RGB"))
            if self.image_processor is None:
                raise ValueError("This pipeline has no `image_processor` to preprocess a PIL `mask_image`.")
            grid = self.image_processor(images=processed, do_normalize=False, return_tensors="pt").pixel_values[:, :1]
        else:
            if isinstance(mask_image, np.ndarray):
                mask_image = torch.from_numpy(np.asarray(mask_image, dtype=np.float32))
            if not isinstance(mask_image, torch.Tensor):
                raise TypeError(
                    f"`mask_image` must be a PIL image, an array or a tensor, got {type(mask_image).__name__}."
                )
            grid = mask_image.float()
            if grid.ndim == 2:
                grid = grid[None]
            if grid.ndim == 4:
                if grid.shape[1] != 1:
                    raise ValueError(
                        f"`mask_image` must have a single channel, got shape {tuple(mask_image.shape)} "
                        f"({grid.shape[1]} channels)."
                    )
                grid = grid[:, 0]
            if grid.ndim != 3:
                raise ValueError(
                    f"`mask_image` tensor must be (H, W), (batch, H, W) or (batch, 1, H, W), got {tuple(mask_image.shape)}."
                )
            grid = grid[:, None]
            allowed = [(side, side)] + ([tuple(pixel_size)] if pixel_size is not None else [])
            if tuple(grid.shape[-2:]) not in allowed:
                raise ValueError(
                    f"`mask_image` has size {tuple(grid.shape[-2:])}; a tensor mask must be at the prior's mask side "
                    f"{(side, side)}"
                    + (f" or the preprocessed image size {tuple(pixel_size)}" if pixel_size else "")
                    + " (or pass a PIL mask the size of the image)."
                )
        if grid.shape[0] not in (1, batch):
            raise ValueError(f"`mask_image` has batch {grid.shape[0]} for {batch} prompts.")
        grid = (grid > 0.5).float().expand(batch, -1, -1, -1)
        if tuple(grid.shape[-2:]) == (side, side):
            prior_mask = grid
            pixel_mask = F.interpolate(grid, size=tuple(pixel_size), mode="nearest") if pixel_size else None
        else:
            pixel_mask = grid
            # A bilinear, antialiased resize (as torchvision's Resize on tensors in the reference demo).
            prior_mask = F.interpolate(grid, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
            prior_mask = (prior_mask > 0.5).float()
        return pixel_mask, prior_mask[:, 0]

    # ---------------------------------------------------------------------------------------------------- checks

    def check_inputs(
        self,
        prompt,
        image,
        num_inference_steps,
        guidance_scale,
        image_guidance_scale,
        num_samples_per_prompt,
        source_weight,
        prompt_embeds,
        image_embeds,
        output_type,
    ):
        if (prompt is None) == (prompt_embeds is None):
            raise ValueError("Pass exactly one of `prompt` and `prompt_embeds`.")
        if image is not None and image_embeds is not None:
            raise ValueError("Pass at most one of `image` and `image_embeds`.")
        for name, value in [("guidance_scale", guidance_scale), ("image_guidance_scale", image_guidance_scale)]:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
                raise ValueError(f"`{name}` must be a finite number >= 0, got {value!r}.")
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int):
            raise ValueError(f"`num_inference_steps` must be an integer, got {num_inference_steps!r}.")
        total = getattr(self.scheduler.config, "num_train_timesteps", None)
        if num_inference_steps < 1 or (total is not None and num_inference_steps > total):
            raise ValueError(
                f"`num_inference_steps` must be between 1 and the scheduler's training timesteps ({total}), got "
                f"{num_inference_steps}."
            )
        if (
            isinstance(num_samples_per_prompt, bool)
            or not isinstance(num_samples_per_prompt, int)
            or num_samples_per_prompt < 1
        ):
            raise ValueError(f"`num_samples_per_prompt` must be a positive integer, got {num_samples_per_prompt!r}.")
        if not isinstance(source_weight, (int, float)) or not np.isfinite(source_weight):
            raise ValueError(f"`source_weight` must be a finite number, got {source_weight!r}.")
        if source_weight != 0 and image is None and image_embeds is None:
            raise ValueError(
                "`source_weight` mixes in the reference image embedding: it needs `image` or `image_embeds`."
            )
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}.")

    # ------------------------------------------------------------------------------------------------- sampling

    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        image=None,
        negative_prompt: str | list[str] | None = "",
        mask_image=None,
        num_inference_steps: int = 10,
        guidance_scale: float = 7.5,
        image_guidance_scale: float = 1.5,
        num_samples_per_prompt: int = 2,
        source_weight: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        image_embeds: torch.Tensor | None = None,
        output_type: str = "pt",
        return_dict: bool = True,
    ) -> CompoDiffPipelineOutput | tuple:
        """
        Compose a query embedding from a reference image, a modification text and an optional mask.

        Args:
            prompt (`str` or `list[str]`): The modification text(s); one query per prompt.
            image (PIL image, path, array, list of those, or pixel values `(batch, 3, H, W)`, *optional*):
                The reference image(s), one per prompt. Without `image` and `image_embeds` the pipeline maps text to
                an image embedding (zero image condition).
            negative_prompt (`str` or `list[str]`, *optional*, defaults to `""`): Guides away from this text.
            mask_image (*optional*): 1 (white) marks the region the text may change. A single-channel PIL image
                the size of `image` (or a list, one per image) is preprocessed like the image, binarised at 0.5, and
                its region is zeroed in the preprocessed image before encoding; it is then resized to the prior's
                mask side and binarised again. A tensor/array `(H, W)`, `(batch, H, W)` or `(batch, 1, H, W)` at the
                prior's mask side is used as is (binarised), and one at the preprocessed image size is treated like
                a preprocessed PIL mask. Without a mask the mask condition is zero.
            num_inference_steps (`int`, *optional*, defaults to 10): With [`CompoDiffScheduler`], the reference's
                `timesteps` argument (10 gives 9 prior evaluations).
            guidance_scale (`float`, *optional*, defaults to 7.5): Text guidance, >= 0.
            image_guidance_scale (`float`, *optional*, defaults to 1.5): Image guidance, >= 0.
            num_samples_per_prompt (`int`, *optional*, defaults to 2): Samples averaged into each query.
            source_weight (`float`, *optional*, defaults to 0.0): Returns `(1 - w) * out + w * image_embeds`.
            generator (`torch.Generator`, *optional*): Makes sampling deterministic; the initial noise and each
                step's noise are drawn from it in order.
            prompt_embeds (`torch.Tensor` of shape `(batch, length, text_dim)`, *optional*): Precomputed text
                conditions (the text encoder's last hidden state); skips the text encoder.
            negative_prompt_embeds (`torch.Tensor` of shape `(1 or batch, length, text_dim)`, *optional*).
            image_embeds (`torch.Tensor` of shape `(batch, embedding_dim)`, *optional*): Precomputed image
                conditions; skips the image encoder.
            output_type (`str`, *optional*, defaults to `"pt"`): `"pt"` (torch) or `"np"` (numpy).
            return_dict (`bool`, *optional*, defaults to `True`): Return a [`CompoDiffPipelineOutput`], else a tuple.

        Examples:

        Returns:
            [`CompoDiffPipelineOutput`] or `(image_embeds,)`: `(batch, embedding_dim)`, not normalised.
        """
        # 1. Check inputs.
        self.check_inputs(
            prompt,
            image,
            num_inference_steps,
            guidance_scale,
            image_guidance_scale,
            num_samples_per_prompt,
            source_weight,
            prompt_embeds,
            image_embeds,
            output_type,
        )
        device = self._execution_device
        dtype = self.prior.dtype
        embedding_dim = self.prior.config.embedding_dim
        batch = (
            prompt_embeds.shape[0] if prompt_embeds is not None else (1 if isinstance(prompt, str) else len(prompt))
        )
        if image is not None:
            image_batch = (
                image.shape[0]
                if isinstance(image, torch.Tensor)
                else (len(image) if isinstance(image, (list, tuple)) else 1)
            )
            if image_batch != batch:
                raise ValueError(f"Got {batch} prompt(s) but {image_batch} image(s): pass one image per prompt.")
        if image_embeds is not None and (image_embeds.ndim != 2 or image_embeds.shape != (batch, embedding_dim)):
            raise ValueError(
                f"`image_embeds` must have shape ({batch}, {embedding_dim}) (one per prompt), got "
                f"{tuple(image_embeds.shape)}."
            )

        # 2. Encode the texts, the mask and the image.
        prompt_embeds, negative_prompt_embeds = self.encode_prompt(
            prompt, negative_prompt, device, prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds
        )
        pixel_values = images = None
        if image is not None:
            if self.image_encoder is None:
                raise ValueError("This pipeline has no `image_encoder`: pass `image_embeds` instead of `image`.")
            pixel_values, images = self._preprocess_images(image)
        mask = None
        if mask_image is not None:
            pixel_size = tuple(pixel_values.shape[-2:]) if pixel_values is not None else self._processor_size()
            pixel_mask, mask = self._prepare_mask(mask_image, batch, images, pixel_size)
            if pixel_values is not None:
                pixel_values = pixel_values * (1 - pixel_mask.to(pixel_values.dtype))
        if pixel_values is not None:
            image_embeds = self._encode_pixels(pixel_values, device)
        text_only = image_embeds is None
        zeros = torch.zeros(batch, embedding_dim, device=device, dtype=dtype)
        image_embeds = zeros if text_only else image_embeds.to(device=device, dtype=dtype)
        mask = (
            torch.zeros(batch, self.prior.config.mask_size, self.prior.config.mask_size, device=device, dtype=dtype)
            if mask is None
            else mask.to(device=device, dtype=dtype)
        )
        prompt_embeds = prompt_embeds.to(dtype)
        negative_prompt_embeds = negative_prompt_embeds.to(dtype)

        # 3. Timesteps and initial noise: rows ordered (prompt, sample), row b * R + r.
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        samples = num_samples_per_prompt
        latents = randn_tensor((batch * samples, embedding_dim), generator=generator, device=device, dtype=dtype)
        latents = latents * self.scheduler.init_noise_sigma
        step_kwargs = {}
        if "generator" in inspect.signature(self.scheduler.step).parameters:
            step_kwargs["generator"] = generator

        # 4. The conditions of the guidance branches (cond, null_text, null_all).
        if self.use_context_cache:
            cond = self.prior.prepare_context(prompt_embeds, image_embeds, mask)
            if text_only:  # null_text and null_all have identical inputs: one branch serves both
                null = self.prior.prepare_context(negative_prompt_embeds, zeros, mask)
            else:  # the negative prompt is projected once for both of its branches
                null = self.prior.prepare_context(
                    negative_prompt_embeds, torch.cat([image_embeds, zeros]), torch.cat([mask, mask])
                )
            context = type(cond).cat([cond, null])
            num_branches = 2 if text_only else 3
            conditions = {"context_cache": context}
        else:
            num_branches = 3

            def per_sample(tensor):
                return tensor.expand(batch, *tensor.shape[1:]).repeat_interleave(samples, dim=0)

            image_rows, mask_rows = per_sample(image_embeds), per_sample(mask)
            text_rows, negative_rows = per_sample(prompt_embeds), per_sample(negative_prompt_embeds)
            conditions = {
                "image_embeds": torch.cat([image_rows, image_rows, torch.zeros_like(image_rows)]),
                "text_hidden_states": torch.cat([text_rows, negative_rows, negative_rows]),
                "mask": torch.cat([mask_rows, mask_rows, mask_rows]),
            }

        # 5. Denoise.
        for t in self.progress_bar(timesteps):
            model_input = self.scheduler.scale_model_input(latents, t)
            if self.use_context_cache:  # one timestep for every row: embedded once
                timestep = torch.tensor([int(t)], device=device, dtype=torch.long)
            else:  # as the reference: one per row
                timestep = torch.full((num_branches * latents.shape[0],), int(t), device=device, dtype=torch.long)
            predicted = self.prior(
                model_input.repeat(num_branches, 1), timestep, **conditions
            ).predicted_image_embedding
            if num_branches == 3:
                cond_pred, null_text_pred, null_all_pred = predicted.chunk(3)
            else:
                cond_pred, null_text_pred = predicted.chunk(2)
                null_all_pred = null_text_pred
            guided = (
                null_all_pred
                + (cond_pred - null_text_pred) * guidance_scale
                + (null_text_pred - null_all_pred) * image_guidance_scale
            )
            latents = self.scheduler.step(guided, t, latents, **step_kwargs).prev_sample

        # 6. Average the samples of each prompt; optionally mix in the reference image embedding.
        output = latents.view(batch, samples, embedding_dim).mean(dim=1)
        if source_weight != 0:
            output = (1 - source_weight) * output + source_weight * image_embeds

        self.maybe_free_model_hooks()
        if output_type == "np":
            output = output.float().cpu().numpy()
        if not return_dict:
            return (output,)
        return CompoDiffPipelineOutput(image_embeds=output)

    def _processor_size(self) -> tuple[int, int] | None:
        crop = getattr(self.image_processor, "crop_size", None) if self.image_processor is not None else None
        if isinstance(crop, dict) and "height" in crop:
            return (crop["height"], crop["width"])
        if crop is not None and hasattr(crop, "height"):
            return (crop.height, crop.width)
        return None
