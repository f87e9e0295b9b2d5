# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""PyTorch LinCIR model: CLIP text and vision towers plus phi, the image-embedding-to-pseudo-word network.

LinCIR ([Gu et al., CVPR 2024](https://arxiv.org/abs/2312.01998)) answers a composed query (reference image +
modification text) with one CLIP text forward: phi turns the image embedding into a word embedding that takes the place
of every placeholder token (`$`) in the text. It is trained from text alone with the self-masking-projection loss.
The same class holds SEARLE ([Baldrati et al., ICCV 2023](https://arxiv.org/abs/2303.15247)) and Pic2Word
([Saito et al., CVPR 2023](https://arxiv.org/abs/2302.03084)): their configs select phi's architecture, the
placeholder, the prompt template and which placeholders receive the pseudo word (see [`LinCIRConfig`]).

This file is self-contained (it imports only `torch`, `transformers` and its sibling files): `save_pretrained` copies it
next to the weights so that `AutoModel.from_pretrained(folder, trust_remote_code=True)` works without hf-cir installed.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPTextModelWithProjection, CLIPVisionModelWithProjection, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import ModelOutput

from .configuration_lincir import PLACEHOLDER_TOKEN, LinCIRConfig

# Keyword arguments of `from_clip` that change the LinCIR config; the rest of the config comes from the CLIP checkpoint
# and the tokenizer.
_FROM_CLIP_CONFIG_KEYS = (
    "phi_type",
    "phi_hidden_size",
    "phi_num_hidden_layers",
    "phi_dropout",
    "normalize_image_embeds",
    "placeholder_token",
    "placeholder_replacement",
    "prompt_template",
    "method_name",
)


@dataclass
class LinCIROutput(ModelOutput):
    """
    Output of [`LinCIRModel.forward`]. With a reference image (`pixel_values` or `image_embeds`) it holds the composed
    query; with `masked_input_ids` it holds the self-masking-projection training loss; with text (or images) alone, the
    plain CLIP features. Every embedding is the projected, unnormalised CLIP feature, like `CLIPOutput`'s.

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `masked_input_ids` is given):
            Self-masking-projection loss: mean squared error between `composed_embeds` and `text_embeds`.
        composed_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`, *optional*):
            The composed query embeddings: projected text features of `input_ids` with phi(image embedding) in every
            placeholder slot. In training, those of `masked_input_ids` with phi(noisy caption features).
        text_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`, *optional*):
            Projected text features of `input_ids` as written (without image); in training, the detached target.
        image_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`, *optional*):
            Projected image features of `pixel_values` (or the given `image_embeds`).
        pseudo_tokens (`torch.FloatTensor` of shape `(batch_size, text_hidden_size)`, *optional*):
            Phi's pseudo-word embeddings.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned with `output_hidden_states=True`):
            The text tower's hidden states (embeddings, then each layer) for the text it encoded, each of shape
            `(batch_size, sequence_length, text_hidden_size)`; the same as `text_model_output.hidden_states`.
        attentions (`tuple(torch.FloatTensor)`, *optional*, returned with `output_attentions=True`):
            The text tower's attention weights, each of shape `(batch_size, num_heads, sequence_length,
            sequence_length)`; the same as `text_model_output.attentions`.
        text_model_output ([`~modeling_outputs.BaseModelOutputWithPooling`], *optional*):
            The text tower's output for `composed_embeds` (or `text_embeds` without image); `pooler_output` holds the
            projected features, `hidden_states` / `attentions` what was asked for.
        vision_model_output ([`~modeling_outputs.BaseModelOutputWithPooling`], *optional*):
            The vision tower's output for `pixel_values`; `pooler_output` holds `image_embeds`.
    """

    loss: torch.FloatTensor | None = None
    composed_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    pseudo_tokens: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    text_model_output: BaseModelOutputWithPooling | None = None
    vision_model_output: BaseModelOutputWithPooling | None = None

    def to_tuple(self) -> tuple:
        return tuple(
            self[key].to_tuple() if key in ("text_model_output", "vision_model_output") else self[key]
            for key in self.keys()
        )


# The other tower's weights in a full `CLIPModel` checkpoint: expected leftovers when one tower loads from it.
_OTHER_TOWER_WEIGHTS = {
    "CLIPTextModelWithProjection": [r"^vision_model\.", r"^visual_projection\.", r"^logit_scale$"],
    "CLIPVisionModelWithProjection": [r"^text_model\.", r"^text_projection\.", r"^logit_scale$"],
}


def _load_clip_tower(tower_class: type[PreTrainedModel], clip_name_or_path, **kwargs) -> PreTrainedModel:
    """Load one tower of a CLIP checkpoint; the other tower's weights are expected leftovers, missing ones an error."""
    # `_keys_to_ignore_on_load_unexpected` is how a transformers class declares checkpoint weights it leaves unused
    # (no load report for them); it is set on a loading subclass, and the tower is the plain class again afterwards.
    loader = type(
        tower_class.__name__,
        (tower_class,),
        {
            "__module__": tower_class.__module__,
            "_keys_to_ignore_on_load_unexpected": _OTHER_TOWER_WEIGHTS[tower_class.__name__],
        },
    )
    tower, info = loader.from_pretrained(clip_name_or_path, output_loading_info=True, **kwargs)
    tower.__class__ = tower_class
    if info["missing_keys"]:
        raise ValueError(
            f"{clip_name_or_path} is not a complete CLIP checkpoint for {tower_class.__name__}: missing weights "
            f"{sorted(info['missing_keys'])}."
        )
    return tower


class LinCIRPhi(nn.Module):
    """LinCIR's and SEARLE's phi: `phi_num_hidden_layers` blocks of Linear-GELU-Dropout, then a Linear to the text
    tower's hidden size (projection_dim -> phi_hidden_size -> ... -> text hidden size).

    The parameter names are the references' own (`layers.0`, `layers.3`, `layers.6` for two hidden layers), so their
    checkpoints load as they are.
    """

    def __init__(self, config: LinCIRConfig):
        super().__init__()
        blocks = []
        in_features = config.projection_dim
        for _ in range(config.phi_num_hidden_layers):
            blocks += [nn.Linear(in_features, config.phi_hidden_size), nn.GELU(), nn.Dropout(config.phi_dropout)]
            in_features = config.phi_hidden_size
        self.layers = nn.Sequential(*blocks, nn.Linear(in_features, config.text_config.hidden_size))

    def forward(self, image_embeds: torch.Tensor) -> torch.Tensor:
        return self.layers(image_embeds)


class LinCIRIm2TextPhi(nn.Module):
    """Pic2Word's phi (`IM2TEXT`): `phi_num_hidden_layers` blocks of Linear-Dropout-ReLU, then a Linear `fc_out` to
    the text tower's hidden size. The parameter names are the reference's (`layers.{i}.0`, `fc_out`)."""

    def __init__(self, config: LinCIRConfig):
        super().__init__()
        blocks = []
        in_features = config.projection_dim
        for _ in range(config.phi_num_hidden_layers):
            blocks.append(
                nn.Sequential(
                    nn.Linear(in_features, config.phi_hidden_size), nn.Dropout(config.phi_dropout), nn.ReLU()
                )
            )
            in_features = config.phi_hidden_size
        self.layers = nn.Sequential(*blocks)
        self.fc_out = nn.Linear(in_features, config.text_config.hidden_size)

    def forward(self, image_embeds: torch.Tensor) -> torch.Tensor:
        return self.fc_out(self.layers(image_embeds))


# `config.phi_type` -> the phi network
PHI_CLASSES = {"mlp": LinCIRPhi, "im2text": LinCIRIm2TextPhi}


class LinCIRPreTrainedModel(PreTrainedModel):
    config_class = LinCIRConfig
    base_model_prefix = "lincir"
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    _no_split_modules = ["CLIPTextEmbeddings", "CLIPEncoderLayer", "CLIPVisionEmbeddings"]
    _supports_sdpa = True
    supports_gradient_checkpointing = True

    def _init_weights(self, module: nn.Module) -> None:
        # The CLIP towers' modules never reach this method: each tower is a transformers model that initialises its own
        # modules (see `LinCIRModel.initialize_weights`). Phi starts from PyTorch's default initialisation, like the
        # reference training scripts. The torch init functions only touch weights a checkpoint did not provide.
        if isinstance(module, nn.Linear):
            nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                bound = 1.0 / math.sqrt(module.in_features)
                nn.init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, (nn.LayerNorm, nn.Embedding)):
            module.reset_parameters()


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
    >>> from hf_cir.toy import toy_checkpoint
    >>> from PIL import Image

    >>> # An untrained phi around a CLIP checkpoint (e.g. "openai/clip-vit-large-patch14"); here the shipped toy CLIP.
    >>> model = LinCIRModel.from_clip(toy_checkpoint("clip"))
    >>> processor = LinCIRProcessor.from_pretrained(toy_checkpoint("clip"))
    >>> inputs = processor(images=Image.new("RGB", (64, 64)), text="is blue")
    >>> processor.batch_decode(inputs["input_ids"], skip_special_tokens=True)
    ['a photo of $ that is blue']
    >>> with torch.inference_mode():
    ...     query = model(**inputs).composed_embeds  # the same as get_composed_features(**inputs).pooler_output
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
        # One config object per tower, so that e.g. `resize_token_embeddings` updates what the tower reads.
        config.text_config = text_model.config
        config.vision_config = vision_model.config
        self.text_model = text_model
        self.vision_model = vision_model
        self.phi = PHI_CLASSES[config.phi_type](config)

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

    @torch.no_grad()
    def initialize_weights(self) -> None:
        r"""
        Initialise every weight a checkpoint did not provide: each CLIP tower first, exactly as it initialises itself as
        a standalone transformers model (CLIP sets some weights from their parent module, which transformers' generic
        pass skips inside a model defined outside transformers), then phi.
        """
        self.text_model.initialize_weights()
        self.vision_model.initialize_weights()
        super().initialize_weights()

    def get_input_embeddings(self) -> nn.Module:
        """The text tower's token embedding (the table the placeholder's pseudo word replaces a row of)."""
        return self.text_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.text_model.set_input_embeddings(value)

    def resize_token_embeddings(
        self, new_num_tokens: int | None = None, pad_to_multiple_of: int | None = None, mean_resizing: bool = True
    ) -> nn.Embedding:
        """
        transformers' [`~PreTrainedModel.resize_token_embeddings`] of the text tower, refused with a `ValueError` when
        the new vocabulary would no longer hold the placeholder (`config.placeholder_token_id`): every composed query
        puts the pseudo word in that row, so growing the vocabulary keeps it and shrinking may cut only above it.
        """
        placeholder_token_id = self.config.placeholder_token_id
        if new_num_tokens is not None and placeholder_token_id is not None:
            size = new_num_tokens
            if pad_to_multiple_of:
                size = -(-size // pad_to_multiple_of) * pad_to_multiple_of
            if size <= placeholder_token_id:
                raise ValueError(
                    f"Cannot resize the token embeddings to {size} tokens: the placeholder "
                    f"{self.config.placeholder_token!r} has id {placeholder_token_id}, which would fall outside the "
                    f"vocabulary. Keep at least {placeholder_token_id + 1} tokens (or choose a placeholder with a "
                    "smaller id, e.g. `LinCIRModel.from_clip(..., placeholder_token=...)`)."
                )
        return super().resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)

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
                Any of `phi_type`, `phi_hidden_size`, `phi_num_hidden_layers`, `phi_dropout`,
                `normalize_image_embeds`, `placeholder_token`, `placeholder_replacement`, `prompt_template` and
                `method_name` (see [`LinCIRConfig`]).

        Raises:
            ValueError: the tokenizer has no single token for the placeholder, an unknown override was given, or the
                placeholder's id would break the legacy CLIP pooling.

        Example:

        ```python
        >>> from hf_cir import LinCIRModel
        >>> from hf_cir.toy import toy_checkpoint
        >>> model = LinCIRModel.from_clip(toy_checkpoint("clip"), phi_dropout=0.0)
        >>> model.config.placeholder_token_id, model.config.phi_hidden_size
        (2, 256)
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
        # Built from copies: a config constructor resets its sub-configs' attention implementation, and the towers
        # must keep the one they were loaded with (LinCIRModel then shares the towers' own config objects).
        config = LinCIRConfig(
            text_config=text_model.config.to_dict(),
            vision_config=vision_model.config.to_dict(),
            projection_dim=text_model.config.projection_dim,
            placeholder_token_id=placeholder_token_id,
            attn_implementation=attn_implementation,
            **config_overrides,
        )
        model = cls(config, text_model=text_model, vision_model=vision_model)
        return model.to(text_model.dtype)

    def get_text_features(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> BaseModelOutputWithPooling | tuple:
        r"""
        The text tower's output, as transformers' `CLIPModel.get_text_features` returns it: a
        [`~modeling_outputs.BaseModelOutputWithPooling`] whose `pooler_output` holds the projected (unnormalised) text
        features of shape `(batch_size, projection_dim)`, `CLIPTextModelWithProjection(...).text_embeds`.

        Example:

        ```python
        >>> import torch
        >>> from hf_cir import LinCIRModel, LinCIRProcessor
        >>> from hf_cir.toy import toy_checkpoint
        >>> model = LinCIRModel.from_pretrained(toy_checkpoint("lincir"))
        >>> processor = LinCIRProcessor.from_pretrained(toy_checkpoint("lincir"))
        >>> with torch.inference_mode():
        ...     text_features = model.get_text_features(**processor(text=["a red circle"])).pooler_output
        >>> text_features.shape
        torch.Size([1, 64])
        ```
        """
        tower_output = self.text_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            **_output_flags(output_attentions, output_hidden_states),
        )
        return self._features_output(tower_output, tower_output.text_embeds, return_dict)

    def get_image_features(
        self,
        pixel_values: torch.FloatTensor,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
    ) -> BaseModelOutputWithPooling | tuple:
        r"""
        The vision tower's output, as transformers' `CLIPModel.get_image_features` returns it: a
        [`~modeling_outputs.BaseModelOutputWithPooling`] whose `pooler_output` holds the projected (unnormalised) image
        features of shape `(batch_size, projection_dim)`, `CLIPVisionModelWithProjection(...).image_embeds`.
        """
        if pixel_values.dim() != 4 or not pixel_values.is_floating_point():
            raise ValueError(
                "`pixel_values` must be a float tensor of shape (batch_size, num_channels, height, width), got "
                f"{pixel_values.dtype} of shape {tuple(pixel_values.shape)}."
            )
        tower_output = self.vision_model(
            pixel_values=pixel_values.to(self.vision_model.dtype),
            interpolate_pos_encoding=interpolate_pos_encoding,
            **_output_flags(output_attentions, output_hidden_states),
        )
        return self._features_output(tower_output, tower_output.image_embeds, return_dict)

    def get_pseudo_tokens(self, image_embeds: torch.FloatTensor) -> torch.FloatTensor:
        r"""
        Phi's pseudo-word embeddings for projected image embeddings (L2-normalised first when
        `config.normalize_image_embeds` is set).

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
        if self.config.normalize_image_embeds:
            image_embeds = F.normalize(image_embeds, dim=-1)
        return self.phi(image_embeds.to(next(self.phi.parameters()).dtype))

    def get_composed_features(
        self,
        input_ids: torch.LongTensor,
        pixel_values: torch.FloatTensor | None = None,
        image_embeds: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> BaseModelOutputWithPooling | tuple:
        r"""
        The composed query: the text tower's output for `input_ids` with phi(image embedding) in every placeholder
        position. One causal text forward, pooled at the EOS token exactly as CLIP pools. Returned like
        [`~LinCIRModel.get_text_features`]: `pooler_output` holds the composed query embeddings, projected and
        unnormalised like CLIP's features, of shape `(batch_size, projection_dim)`.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`):
                Token ids; every row must hold the placeholder at least once (the processor takes care of it).
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`, *optional*):
                The reference images, preprocessed. Give either these or `image_embeds`.
            image_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`, *optional*):
                Precomputed projected image features (`get_image_features(...).pooler_output`).
            attention_mask (`torch.Tensor` of shape `(batch_size, sequence_length)`, *optional*):
                Padding mask. It never changes the result of the causal tower; accepted for convenience.
            position_ids, output_attentions, output_hidden_states, return_dict:
                As for [`~LinCIRModel.get_text_features`].

        Example:

        ```python
        >>> import torch
        >>> from PIL import Image
        >>> from hf_cir import LinCIRModel, LinCIRProcessor
        >>> from hf_cir.toy import toy_checkpoint
        >>> model = LinCIRModel.from_pretrained(toy_checkpoint("lincir"))
        >>> processor = LinCIRProcessor.from_pretrained(toy_checkpoint("lincir"))
        >>> inputs = processor(images=Image.new("RGB", (64, 64), "red"), text="is blue")
        >>> with torch.inference_mode():
        ...     query = model.get_composed_features(**inputs).pooler_output
        >>> query.shape
        torch.Size([1, 64])
        ```
        """
        text_output, _, _, _ = self._compose(
            input_ids,
            pixel_values=pixel_values,
            image_embeds=image_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            tower_kwargs=_output_flags(output_attentions, output_hidden_states),
        )
        return self._features_output(text_output, text_output.text_embeds, return_dict)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        image_embeds: torch.FloatTensor | None = None,
        masked_input_ids: torch.LongTensor | None = None,
        masked_attention_mask: torch.Tensor | None = None,
        noise_std: float | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        text_embeds: torch.FloatTensor | None = None,
    ) -> LinCIROutput | tuple:
        r"""
        What the inputs ask for, in one [`LinCIROutput`]:

        - `input_ids` with `pixel_values` (or `image_embeds`): the composed query, `composed_embeds`, as
          [`~LinCIRModel.get_composed_features`] computes it, plus `image_embeds` and `pseudo_tokens`. This is what
          `model(**processor(images=..., text=...))` returns.
        - `input_ids` with `masked_input_ids`: the self-masking-projection (SMP) training loss of LinCIR (Gu et al.,
          CVPR 2024, Sec. 3), `loss`: phi must turn the noisy text embedding of a caption into a pseudo word that, put
          in place of the caption's keywords, gives back the caption's own embedding.

          1. `e = text features of input_ids` (the target `text_embeds`; computed without gradients, or given as
             `text_embeds`: the frozen tower's features are a function of the caption alone, so training may compute
             them once per caption).
          2. `x = e + noise`. By default `noise = u * n` with `u ~ U(0, 1)` per caption and `n ~ N(0, I)`, as the
             reference `train_phi.py` draws it (`torch.rand` then `torch.randn`). With `noise_std=s`,
             `noise ~ N(0, (s * ||e|| / sqrt(d))^2 I)` per caption, so that `s` is the expected noise-to-signal norm
             ratio. Noise comes from torch's global RNG, so a restored RNG state resumes training exactly.
          3. `composed_embeds = text features of masked_input_ids with phi(x) in every placeholder slot`.
          4. `loss = MSE(composed_embeds, e)`.
        - `input_ids` alone: the plain text features, `text_embeds`; `pixel_values` alone: `image_embeds`.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
                The modification texts (with the placeholder) or, in training, the captions.
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`, *optional*):
                The reference images, preprocessed.
            attention_mask (`torch.Tensor` of shape `(batch_size, sequence_length)`, *optional*):
                Padding mask of `input_ids`.
            position_ids (`torch.LongTensor`, *optional*): Position ids of `input_ids`.
            image_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`, *optional*):
                Precomputed projected image features, instead of `pixel_values`.
            masked_input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
                The captions with their keywords replaced by the placeholder: asks for the training loss.
            masked_attention_mask (`torch.Tensor`, *optional*): Padding mask of `masked_input_ids`.
            noise_std (`float`, *optional*): Noise-to-signal ratio of the training noise; `None` uses the paper's.
            output_attentions, output_hidden_states (`bool`, *optional*):
                Return the towers' attentions / hidden states in `text_model_output` / `vision_model_output`.
            return_dict (`bool`, *optional*): Return a [`LinCIROutput`] (default) or a tuple.
            text_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`, *optional*):
                With `masked_input_ids`: the text features of the captions, precomputed (then `input_ids` may be
                left out).

        Example:

        ```python
        >>> import torch
        >>> from PIL import Image
        >>> from hf_cir import LinCIRModel, LinCIRProcessor
        >>> from hf_cir.toy import toy_checkpoint
        >>> model = LinCIRModel.from_pretrained(toy_checkpoint("lincir"))
        >>> processor = LinCIRProcessor.from_pretrained(toy_checkpoint("lincir"))
        >>> with torch.inference_mode():
        ...     outputs = model(**processor(images=Image.new("RGB", (64, 64), "red"), text="is blue"))
        >>> outputs.composed_embeds.shape
        torch.Size([1, 64])

        >>> captions = processor(text=["a red circle on the left"])
        >>> masked = processor(text=["a $ on the left"])
        >>> loss = model(**captions, masked_input_ids=masked.input_ids).loss
        >>> loss.backward()
        ```
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        tower_kwargs = _output_flags(output_attentions, output_hidden_states)
        has_image = pixel_values is not None or image_embeds is not None
        if masked_input_ids is not None:
            if (input_ids is None and text_embeds is None) or has_image:
                raise ValueError(
                    "The training loss takes `input_ids` (the captions) or their `text_embeds` with `masked_input_ids` "
                    "and no image; for a composed query pass `input_ids` with `pixel_values` or `image_embeds` and no "
                    "`masked_input_ids`."
                )
            output = self._self_masking_projection(
                input_ids,
                masked_input_ids,
                attention_mask,
                masked_attention_mask,
                noise_std,
                tower_kwargs,
                text_embeds,
            )
        elif text_embeds is not None:
            raise ValueError("`text_embeds` (precomputed caption features) only go with `masked_input_ids`.")
        elif input_ids is not None and has_image:
            text_output, image_embeds, pseudo_tokens, vision_output = self._compose(
                input_ids,
                pixel_values=pixel_values,
                image_embeds=image_embeds,
                attention_mask=attention_mask,
                position_ids=position_ids,
                tower_kwargs=tower_kwargs,
            )
            output = LinCIROutput(
                composed_embeds=text_output.text_embeds,
                image_embeds=image_embeds,
                pseudo_tokens=pseudo_tokens,
                hidden_states=text_output.hidden_states,
                attentions=text_output.attentions,
                text_model_output=self._features_output(text_output, text_output.text_embeds, True),
                vision_model_output=vision_output,
            )
        elif input_ids is not None:
            text_output = self.get_text_features(
                input_ids, attention_mask, position_ids, return_dict=True, **tower_kwargs
            )
            output = LinCIROutput(
                text_embeds=text_output.pooler_output,
                hidden_states=text_output.hidden_states,
                attentions=text_output.attentions,
                text_model_output=text_output,
            )
        elif has_image:
            vision_output = None
            if pixel_values is not None:
                vision_output = self.get_image_features(pixel_values, return_dict=True, **tower_kwargs)
                image_embeds = vision_output.pooler_output
            output = LinCIROutput(image_embeds=image_embeds, vision_model_output=vision_output)
        else:
            raise ValueError("LinCIRModel needs `input_ids`, `pixel_values` (or `image_embeds`), or both.")
        return output if return_dict else output.to_tuple()

    def _self_masking_projection(
        self, input_ids, masked_input_ids, attention_mask, masked_attention_mask, noise_std, tower_kwargs, text_embeds
    ) -> LinCIROutput:
        captions = input_ids if text_embeds is None else text_embeds
        if captions.shape[0] != masked_input_ids.shape[0]:
            name = "input_ids" if text_embeds is None else "text_embeds"
            raise ValueError(
                f"`{name}` has {captions.shape[0]} captions but `masked_input_ids` has {masked_input_ids.shape[0]}."
            )
        if noise_std is not None and noise_std < 0:
            raise ValueError(f"`noise_std` must be >= 0, got {noise_std}.")

        if text_embeds is None:
            with torch.no_grad():
                text_embeds = self.text_model(input_ids=input_ids, attention_mask=attention_mask).text_embeds
        else:
            text_embeds = text_embeds.detach()

        batch_size, dim = text_embeds.shape
        if noise_std is None:
            scale = torch.rand(batch_size, 1, device=text_embeds.device, dtype=text_embeds.dtype)
        else:
            scale = noise_std * text_embeds.norm(dim=-1, keepdim=True) / math.sqrt(dim)
        noisy_embeds = text_embeds + scale * torch.randn_like(text_embeds)

        pseudo_tokens = self.get_pseudo_tokens(noisy_embeds)
        text_output = self._encode_with_pseudo_tokens(
            masked_input_ids, pseudo_tokens, masked_attention_mask, **tower_kwargs
        )
        composed_embeds = text_output.text_embeds
        return LinCIROutput(
            loss=F.mse_loss(composed_embeds.float(), text_embeds.float()),
            composed_embeds=composed_embeds,
            text_embeds=text_embeds,
            pseudo_tokens=pseudo_tokens,
            hidden_states=text_output.hidden_states,
            attentions=text_output.attentions,
            text_model_output=self._features_output(text_output, composed_embeds, True),
        )

    def _compose(self, input_ids, pixel_values, image_embeds, attention_mask, position_ids, tower_kwargs):
        """Validate a composed query, encode the image if needed, and run the text tower with the pseudo tokens.

        Returns the text tower's output, the image embeddings, the pseudo tokens and the vision tower's output
        (`None` when `image_embeds` were given).
        """
        if pixel_values is None and image_embeds is None:
            raise ValueError(
                "`get_composed_features` needs the reference image (`pixel_values` or `image_embeds`): the placeholder "
                f"{self.config.placeholder_token!r} stands for an image. For text alone use `get_text_features`."
            )
        if pixel_values is not None and image_embeds is not None:
            raise ValueError("Pass either `pixel_values` or `image_embeds` to `get_composed_features`, not both.")
        for name, value in (("pixel_values", pixel_values), ("image_embeds", image_embeds)):
            if value is not None and not bool(torch.isfinite(value).all()):
                raise ValueError(f"`{name}` holds non-finite values (NaN or infinity).")
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
        vision_output = None
        if image_embeds is None:
            vision_output = self.get_image_features(pixel_values, return_dict=True, **tower_kwargs)
            image_embeds = vision_output.pooler_output
        if image_embeds.shape[0] != input_ids.shape[0]:
            raise ValueError(
                f"Got {image_embeds.shape[0]} reference images for {input_ids.shape[0]} texts; the batch sizes must match."
            )
        pseudo_tokens = self.get_pseudo_tokens(image_embeds)
        text_output = self._encode_with_pseudo_tokens(
            input_ids, pseudo_tokens, attention_mask, position_ids=position_ids, **tower_kwargs
        )
        return text_output, image_embeds, pseudo_tokens, vision_output

    def _features_output(self, tower_output, projected, return_dict) -> BaseModelOutputWithPooling | tuple:
        output = BaseModelOutputWithPooling(
            last_hidden_state=tower_output.last_hidden_state,
            pooler_output=projected,
            hidden_states=tower_output.hidden_states,
            attentions=tower_output.attentions,
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        return output if return_dict else output.to_tuple()

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
        **tower_kwargs,
    ):
        # The text tower's own forward runs (causal mask, attention implementation and EOS pooling exactly as
        # CLIPTextModel computes them); a hook on its token embedding swaps every placeholder row for the batch row's
        # pseudo token (only the first placeholder of each row with `placeholder_replacement="first"`). One forward,
        # nothing recomputed.
        placeholder_token_id = self._placeholder_token_id()
        if self.text_model.text_model.eos_token_id == 2:
            # The legacy OpenAI CLIP config pools at the largest id of each text: that must not be the placeholder.
            pooled_ids = input_ids.gather(1, input_ids.argmax(-1, keepdim=True)).squeeze(1)
            rows = (pooled_ids == placeholder_token_id).nonzero().flatten().tolist()
            if rows:
                raise ValueError(
                    f"In texts {rows} the placeholder (id {placeholder_token_id}) is the largest token id, and this CLIP "
                    "text config (`eos_token_id == 2`, the legacy OpenAI setting) pools at the largest id: it would "
                    "pool at the placeholder. Pool at the first EOS token instead (identical for ordinary texts): "
                    "set `model.config.text_config.eos_token_id` and `model.text_model.text_model.eos_token_id` to "
                    "`tokenizer.eos_token_id`; or use a placeholder from the base vocabulary."
                )

        def replace_placeholders(module, args, kwargs, token_embeds):
            ids = args[0] if args else kwargs["input"]
            if ids.data_ptr() != input_ids.data_ptr():
                return None  # another caller's forward (e.g. from another thread) while this hook is registered
            is_placeholder = ids == placeholder_token_id
            if self.config.placeholder_replacement == "first":  # SEARLE's and Pic2Word's code: the first one only
                is_placeholder = is_placeholder & (is_placeholder.cumsum(dim=-1) == 1)
            is_placeholder = is_placeholder.unsqueeze(-1)
            return torch.where(is_placeholder, pseudo_tokens.to(token_embeds.dtype).unsqueeze(1), token_embeds)

        handle = self.text_model.get_input_embeddings().register_forward_hook(replace_placeholders, with_kwargs=True)
        try:
            return self.text_model(input_ids=input_ids, attention_mask=attention_mask, **tower_kwargs)
        finally:
            handle.remove()


def _output_flags(output_attentions: bool | None, output_hidden_states: bool | None) -> dict:
    """The output switches that were set, as keyword arguments of a CLIP tower (unset ones follow its config)."""
    flags = {"output_attentions": output_attentions, "output_hidden_states": output_hidden_states}
    return {key: value for key, value in flags.items() if value is not None}


__all__ = ["LinCIRModel", "LinCIROutput", "LinCIRPreTrainedModel"]
