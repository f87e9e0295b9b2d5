# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""PyTorch LinCIR model: CLIP text and vision towers plus phi, the image-embedding-to-pseudo-word network.

LinCIR ([Gu et al., CVPR 2024](https://arxiv.org/abs/2312.01998)) answers a composed query (reference image +
modification text) with one CLIP text forward: phi turns the image embedding into a word embedding that takes the place
of every placeholder token (`$`) in the text. It is trained from text alone with the self-masking-projection loss.

This file is self-contained (it imports only `torch`, `transformers` and its sibling files): `save_pretrained` copies it
next to the weights so that `AutoModel.from_pretrained(folder, trust_remote_code=True)` works without hf-cir installed.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPTextModelWithProjection, CLIPVisionModelWithProjection, PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_lincir import PLACEHOLDER_TOKEN, LinCIRConfig

# Keyword arguments of `from_clip` that change the LinCIR config; the rest of the config comes from the CLIP checkpoint
# and the tokenizer.
_FROM_CLIP_CONFIG_KEYS = ("phi_hidden_size", "phi_dropout", "placeholder_token", "prompt_template")


@dataclass
class LinCIROutput(ModelOutput):
    """
    Output of [`LinCIRModel.forward`], the self-masking-projection training step.

    Args:
        loss (`torch.FloatTensor` of shape `()`):
            Mean squared error between `composed_embeds` and `text_embeds`.
        composed_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`):
            Projected text features of `masked_input_ids` with phi's pseudo word in every placeholder slot.
        text_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`):
            Projected text features of the caption (`input_ids`), the detached regression target.
        pseudo_tokens (`torch.FloatTensor` of shape `(batch_size, text_hidden_size)`):
            Phi's output for the noisy caption features.
    """

    loss: torch.FloatTensor | None = None
    composed_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    pseudo_tokens: torch.FloatTensor | None = None


class _DropLoadReport(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in record.getMessage()


def _load_clip_tower(tower_class: type[PreTrainedModel], clip_name_or_path, **kwargs) -> PreTrainedModel:
    """Load one tower of a CLIP checkpoint; the other tower's weights are expected leftovers, missing ones an error."""
    # transformers' load report would list every weight of the other tower as unexpected: drop that one message.
    loading_logger = logging.getLogger("transformers.modeling_utils")
    drop_load_report = _DropLoadReport()
    loading_logger.addFilter(drop_load_report)
    try:
        tower, info = tower_class.from_pretrained(clip_name_or_path, output_loading_info=True, **kwargs)
    finally:
        loading_logger.removeFilter(drop_load_report)
    if info["missing_keys"]:
        raise ValueError(
            f"{clip_name_or_path} is not a complete CLIP checkpoint for {tower_class.__name__}: missing weights "
            f"{sorted(info['missing_keys'])}."
        )
    return tower


class LinCIRPhi(nn.Module):
    """Phi: projection_dim -> phi_hidden_size -> phi_hidden_size -> text hidden size, GELU and dropout between layers.

    The image embedding goes in as it is (no normalisation), as in the reference implementation.
    """

    def __init__(self, config: LinCIRConfig):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(config.projection_dim, config.phi_hidden_size),
            nn.GELU(),
            nn.Dropout(config.phi_dropout),
            nn.Linear(config.phi_hidden_size, config.phi_hidden_size),
            nn.GELU(),
            nn.Dropout(config.phi_dropout),
            nn.Linear(config.phi_hidden_size, config.text_config.hidden_size),
        )

    def forward(self, image_embeds: torch.Tensor) -> torch.Tensor:
        return self.layers(image_embeds)


class LinCIRPreTrainedModel(PreTrainedModel):
    config_class = LinCIRConfig
    base_model_prefix = "lincir"
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    _no_split_modules = ["CLIPTextEmbeddings", "CLIPEncoderLayer", "CLIPVisionEmbeddings"]
    _supports_sdpa = True

    def _init_weights(self, module: nn.Module) -> None:
        # Only phi's layers reach this method: the CLIP towers are pre-trained models with their own initialisation.
        # Phi starts from PyTorch's default `nn.Linear` initialisation, like the reference training script.
        if isinstance(module, nn.Linear):
            nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                bound = 1.0 / math.sqrt(module.in_features)
                nn.init.uniform_(module.bias, -bound, bound)


class LinCIRModel(LinCIRPreTrainedModel):
    r"""
    LinCIR: a CLIP text tower and a CLIP vision tower (both with projection, frozen by default) and phi, which maps a
    projected image embedding to a pseudo-word embedding of the text tower.

    Args:
        config ([`LinCIRConfig`]): The model configuration.
        text_model ([`CLIPTextModelWithProjection`], *optional*): A ready text tower (e.g. loaded weights) to use
            instead of a randomly initialised one; its config must equal `config.text_config`.
        vision_model ([`CLIPVisionModelWithProjection`], *optional*): The same for the vision tower.

    Example:

    ```python
    >>> import torch
    >>> from hf_cir import LinCIRModel, LinCIRProcessor
    >>> from PIL import Image

    >>> model = LinCIRModel.from_clip("tests/fixtures/reference/clip")  # or "openai/clip-vit-large-patch14"
    >>> processor = LinCIRProcessor.from_pretrained("tests/fixtures/reference/clip")
    >>> inputs = processor(images=Image.new("RGB", (64, 64)), text="is made of wood", return_tensors="pt")
    >>> processor.batch_decode(inputs["input_ids"], skip_special_tokens=True)
    ['a photo of $ that is made of wood']
    >>> with torch.inference_mode():
    ...     query = model.get_composed_features(**inputs)
    >>> query.shape
    torch.Size([1, 64])
    ```"""

    def __init__(
        self,
        config: LinCIRConfig,
        text_model: CLIPTextModelWithProjection | None = None,
        vision_model: CLIPVisionModelWithProjection | None = None,
    ):
        super().__init__(config)
        if text_model is None:
            text_model = CLIPTextModelWithProjection._from_config(config.text_config)
        if vision_model is None:
            vision_model = CLIPVisionModelWithProjection._from_config(config.vision_config)
        for name, tower, expected in (
            ("text_model", text_model, config.text_config),
            ("vision_model", vision_model, config.vision_config),
        ):
            if tower.config.to_dict() != expected.to_dict():
                raise ValueError(f"`{name}`'s config differs from `config.{name.split('_')[0]}_config`.")
        self.text_model = text_model
        self.vision_model = vision_model
        self.phi = LinCIRPhi(config)

        self._freeze_clip_towers()
        self.post_init()

    def _freeze_clip_towers(self) -> None:
        # Only phi trains (LinCIR, Sec. 3): unfreeze a tower explicitly with `model.text_model.requires_grad_(True)`.
        self.text_model.requires_grad_(False)
        self.vision_model.requires_grad_(False)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        # Loading replaces every parameter with a new (trainable) one: freeze the towers again.
        loaded = super().from_pretrained(*args, **kwargs)
        (loaded[0] if isinstance(loaded, tuple) else loaded)._freeze_clip_towers()
        return loaded

    def get_input_embeddings(self) -> nn.Module:
        return self.text_model.get_input_embeddings()

    @classmethod
    def from_clip(
        cls,
        clip_name_or_path: str | os.PathLike,
        tokenizer=None,
        *,
        dtype: torch.dtype | str = torch.float32,
        attn_implementation: str | None = None,
        **config_overrides,
    ) -> LinCIRModel:
        r"""
        Build a LinCIR with an untrained phi around a transformers CLIP checkpoint.

        Args:
            clip_name_or_path (`str` or `os.PathLike`):
                A `CLIPModel` folder or Hub id (e.g. `"openai/clip-vit-large-patch14"`).
            tokenizer ([`PreTrainedTokenizerBase`], `str` or `os.PathLike`, *optional*):
                The tokenizer (or where to load it from) that defines `placeholder_token_id`. Defaults to the
                tokenizer stored with the CLIP checkpoint.
            dtype (`torch.dtype` or `str`, *optional*, defaults to `torch.float32`):
                Dtype of the whole model; float32 keeps phi trainable. `"auto"` takes the checkpoint's dtype.
            attn_implementation (`str`, *optional*):
                `"sdpa"` (the default) or `"eager"`.
            config_overrides:
                `phi_hidden_size`, `phi_dropout`, `placeholder_token` or `prompt_template` (see [`LinCIRConfig`]).

        Raises:
            ValueError: the tokenizer has no single token for the placeholder, an unknown override was given, or the
                placeholder's id would break the legacy CLIP pooling.

        Example:

        ```python
        >>> from hf_cir import LinCIRModel
        >>> model = LinCIRModel.from_clip("tests/fixtures/reference/clip", phi_dropout=0.0)
        >>> model.config.placeholder_token_id, model.config.phi_hidden_size
        (259, 256)
        ```
        """
        from transformers import AutoTokenizer

        from .processing_lincir import get_placeholder_token_id

        unknown = sorted(set(config_overrides) - set(_FROM_CLIP_CONFIG_KEYS))
        if unknown:
            raise ValueError(
                f"Unknown `from_clip` argument(s) {unknown}; the LinCIR settings it accepts are {list(_FROM_CLIP_CONFIG_KEYS)}."
            )
        if tokenizer is None or isinstance(tokenizer, (str, os.PathLike)):
            tokenizer = AutoTokenizer.from_pretrained(tokenizer if tokenizer is not None else clip_name_or_path)
        placeholder_token = config_overrides.get("placeholder_token", PLACEHOLDER_TOKEN)
        placeholder_token_id = get_placeholder_token_id(tokenizer, placeholder_token)

        tower_kwargs = {"dtype": dtype}
        if attn_implementation is not None:
            tower_kwargs["attn_implementation"] = attn_implementation
        text_model = _load_clip_tower(CLIPTextModelWithProjection, clip_name_or_path, **tower_kwargs)
        vision_model = _load_clip_tower(CLIPVisionModelWithProjection, clip_name_or_path, **tower_kwargs)
        if text_model.config.eos_token_id == 2 and placeholder_token_id >= tokenizer.eos_token_id:
            raise ValueError(
                f"The placeholder {placeholder_token!r} has id {placeholder_token_id}, above the EOS id "
                f"{tokenizer.eos_token_id}: the legacy CLIP pooling (`eos_token_id == 2` in the text config) takes the "
                "largest id of each text, so it would pool at the placeholder. Use a placeholder from the base vocabulary."
            )
        config = LinCIRConfig(
            text_config=text_model.config,
            vision_config=vision_model.config,
            projection_dim=text_model.config.projection_dim,
            placeholder_token_id=placeholder_token_id,
            attn_implementation=text_model.config._attn_implementation,
            **config_overrides,
        )
        model = cls(config, text_model=text_model, vision_model=vision_model)
        return model.to(text_model.dtype)

    def get_text_features(
        self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None
    ) -> torch.FloatTensor:
        r"""
        Projected CLIP text features, exactly as `CLIPTextModelWithProjection(...).text_embeds` (unnormalised).

        Returns:
            `torch.FloatTensor` of shape `(batch_size, projection_dim)`.
        """
        return self.text_model(input_ids=input_ids, attention_mask=attention_mask).text_embeds

    def get_image_features(self, pixel_values: torch.FloatTensor) -> torch.FloatTensor:
        r"""
        Projected CLIP image features, exactly as `CLIPVisionModelWithProjection(...).image_embeds` (unnormalised).

        Returns:
            `torch.FloatTensor` of shape `(batch_size, projection_dim)`.
        """
        return self.vision_model(pixel_values=pixel_values.to(self.vision_model.dtype)).image_embeds

    def get_pseudo_tokens(self, image_embeds: torch.FloatTensor) -> torch.FloatTensor:
        r"""
        Phi's pseudo-word embeddings for projected image embeddings.

        Args:
            image_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`): unnormalised image features.

        Returns:
            `torch.FloatTensor` of shape `(batch_size, text_hidden_size)`.
        """
        if image_embeds.dim() != 2 or image_embeds.shape[-1] != self.config.projection_dim:
            raise ValueError(
                f"`image_embeds` must have shape (batch_size, {self.config.projection_dim}), "
                f"got {tuple(image_embeds.shape)}."
            )
        return self.phi(image_embeds.to(self.phi.layers[0].weight.dtype))

    def get_composed_features(
        self,
        input_ids: torch.LongTensor,
        pixel_values: torch.FloatTensor | None = None,
        image_embeds: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.FloatTensor:
        r"""
        The composed query embedding: the text tower's projected features of `input_ids` with phi(image embedding) in
        every placeholder position. One causal text forward, pooled at the EOS token exactly as CLIP pools.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`):
                Token ids; every row must hold the placeholder at least once (the processor takes care of it).
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`, *optional*):
                The reference images, preprocessed. Give either these or `image_embeds`.
            image_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`, *optional*):
                Precomputed projected image features ([`~LinCIRModel.get_image_features`]).
            attention_mask (`torch.Tensor` of shape `(batch_size, sequence_length)`, *optional*):
                Padding mask. It never changes the result of the causal tower; accepted for convenience.

        Returns:
            `torch.FloatTensor` of shape `(batch_size, projection_dim)`, unnormalised like CLIP's projected features.
        """
        if pixel_values is None and image_embeds is None:
            raise ValueError(
                "`get_composed_features` needs the reference image (`pixel_values` or `image_embeds`): the placeholder "
                f"{self.config.placeholder_token!r} stands for an image. For text alone use `get_text_features`."
            )
        if pixel_values is not None and image_embeds is not None:
            raise ValueError("Pass either `pixel_values` or `image_embeds` to `get_composed_features`, not both.")
        placeholder_token_id = self._placeholder_token_id()
        if input_ids.dim() != 2:
            raise ValueError(
                f"`input_ids` must have shape (batch_size, sequence_length), got {tuple(input_ids.shape)}."
            )
        missing = (~(input_ids == placeholder_token_id).any(dim=-1)).nonzero().flatten().tolist()
        if missing:
            raise ValueError(
                f"`input_ids` rows {missing} have no placeholder token {self.config.placeholder_token!r} "
                f"(id {placeholder_token_id}), so the image would be ignored. Put the placeholder in the text or let "
                "LinCIRProcessor apply its prompt template."
            )
        if image_embeds is None:
            image_embeds = self.get_image_features(pixel_values)
        if image_embeds.shape[0] != input_ids.shape[0]:
            raise ValueError(
                f"Got {image_embeds.shape[0]} reference images for {input_ids.shape[0]} texts; the batch sizes must match."
            )
        pseudo_tokens = self.get_pseudo_tokens(image_embeds)
        return self._encode_with_pseudo_tokens(input_ids, pseudo_tokens, attention_mask)

    def forward(
        self,
        input_ids: torch.LongTensor,
        masked_input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        masked_attention_mask: torch.Tensor | None = None,
        noise_std: float | None = None,
        return_dict: bool | None = None,
    ) -> LinCIROutput | tuple:
        r"""
        The self-masking-projection (SMP) loss of LinCIR (Gu et al., CVPR 2024, Sec. 3): phi must turn the noisy text
        embedding of a caption into a pseudo word that, put in place of the caption's keywords, gives back the
        caption's own embedding.

        1. `e = text features of input_ids` (the target; computed without gradients).
        2. `x = e + noise`. By default `noise = u * n` with `u ~ U(0, 1)` per caption and `n ~ N(0, I)`, as the
           reference `train_phi.py` draws it (`torch.rand` then `torch.randn`). With `noise_std=s`,
           `noise ~ N(0, (s * ||e|| / sqrt(d))^2 I)` per caption, so that `s` is the expected noise-to-signal norm
           ratio. Noise comes from torch's global RNG, so a restored RNG state resumes training exactly.
        3. `composed = text features of masked_input_ids with phi(x) in every placeholder slot`.
        4. `loss = MSE(composed, e)`.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`): the captions.
            masked_input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`): the same captions with
                their keywords replaced by the placeholder.
            attention_mask, masked_attention_mask (`torch.Tensor`, *optional*): their padding masks.
            noise_std (`float`, *optional*): noise-to-signal ratio; `None` uses the paper's noise.
            return_dict (`bool`, *optional*): return a [`LinCIROutput`] (default) or a tuple.

        Example:

        ```python
        >>> from hf_cir import LinCIRModel
        >>> from transformers import AutoTokenizer
        >>> model = LinCIRModel.from_clip("tests/fixtures/reference/clip")
        >>> tokenizer = AutoTokenizer.from_pretrained("tests/fixtures/reference/clip")
        >>> captions = tokenizer(["a red car on a road"], padding="max_length", return_tensors="pt")
        >>> masked = tokenizer(["$ on $"], padding="max_length", return_tensors="pt")
        >>> loss = model(captions.input_ids, masked.input_ids).loss
        >>> loss.backward()
        ```
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if input_ids.shape[0] != masked_input_ids.shape[0]:
            raise ValueError(
                f"`input_ids` has {input_ids.shape[0]} captions but `masked_input_ids` has {masked_input_ids.shape[0]}."
            )
        if noise_std is not None and noise_std < 0:
            raise ValueError(f"`noise_std` must be >= 0, got {noise_std}.")

        with torch.no_grad():
            text_embeds = self.get_text_features(input_ids, attention_mask)

        batch_size, dim = text_embeds.shape
        if noise_std is None:
            scale = torch.rand(batch_size, 1, device=text_embeds.device, dtype=text_embeds.dtype)
        else:
            scale = noise_std * text_embeds.norm(dim=-1, keepdim=True) / math.sqrt(dim)
        noisy_embeds = text_embeds + scale * torch.randn_like(text_embeds)

        pseudo_tokens = self.get_pseudo_tokens(noisy_embeds)
        composed_embeds = self._encode_with_pseudo_tokens(masked_input_ids, pseudo_tokens, masked_attention_mask)
        loss = F.mse_loss(composed_embeds.float(), text_embeds.float())

        if not return_dict:
            return (loss, composed_embeds, text_embeds, pseudo_tokens)
        return LinCIROutput(
            loss=loss, composed_embeds=composed_embeds, text_embeds=text_embeds, pseudo_tokens=pseudo_tokens
        )

    def _placeholder_token_id(self) -> int:
        if self.config.placeholder_token_id is None:
            raise ValueError(
                "`config.placeholder_token_id` is not set: build the model with `LinCIRModel.from_clip` or set it to "
                f"the id your tokenizer gives {self.config.placeholder_token!r}."
            )
        return self.config.placeholder_token_id

    def _encode_with_pseudo_tokens(
        self,
        input_ids: torch.LongTensor,
        pseudo_tokens: torch.FloatTensor,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.FloatTensor:
        # The text tower's own forward runs (causal mask, attention implementation and EOS pooling exactly as
        # CLIPTextModel computes them); a hook on its token embedding swaps every placeholder row for the batch row's
        # pseudo token. One forward, nothing recomputed.
        placeholder_token_id = self._placeholder_token_id()

        def replace_placeholders(module, args, kwargs, token_embeds):
            ids = args[0] if args else kwargs["input"]
            if ids.data_ptr() != input_ids.data_ptr():
                return None  # another caller's forward (e.g. from another thread) while this hook is registered
            is_placeholder = (ids == placeholder_token_id).unsqueeze(-1)
            return torch.where(is_placeholder, pseudo_tokens.to(token_embeds.dtype).unsqueeze(1), token_embeds)

        handle = self.text_model.get_input_embeddings().register_forward_hook(replace_placeholders, with_kwargs=True)
        try:
            return self.text_model(input_ids=input_ids, attention_mask=attention_mask).text_embeds
        finally:
            handle.remove()


__all__ = ["LinCIRModel", "LinCIROutput", "LinCIRPreTrainedModel"]
