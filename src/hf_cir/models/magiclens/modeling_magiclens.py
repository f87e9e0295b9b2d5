# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""PyTorch MagicLens model: CLIP text and vision towers, a small fusion transformer and an attention pooler.

MagicLens ([Zhang et al., ICML 2024](https://arxiv.org/abs/2403.19651)) embeds a composed query (image + instruction)
and a gallery image with the same network: the unnormalised CLIP image and text embeddings form a 2-token sequence
`[image, text]`, a 4-layer transformer mixes them, and one learned query pools them into the multimodal embedding. A
gallery image is embedded with the empty text (the tokenizer's `""`: start and end of text only).

The fusion modules follow the reference (google-deepmind/magiclens `layers.py`): pre-norm layers with skip
connections, layer norms with epsilon 1e-6, attention logits soft-capped as `50 * tanh(logits / 50)`, a ReLU
feed-forward network, and a pooler whose query is scaled per dimension (`softplus`) and whose head size is
`4 * projection_dim / heads`. Soft-capping is not expressible with `scaled_dot_product_attention`, so these two-token
attentions are always computed explicitly (as transformers' Gemma 2 does for its capped logits); the CLIP towers use
`config._attn_implementation` (`"sdpa"` or `"eager"`).

This file is self-contained (it imports only `torch`, `transformers` and its sibling files): `save_pretrained` copies it
next to the weights so that `AutoModel.from_pretrained(folder, trust_remote_code=True)` works without hf-cir installed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPTextModelWithProjection, CLIPVisionModelWithProjection, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import ModelOutput

from .configuration_magiclens import MagicLensConfig

# `log(2)^-1`: the reference's per-dimension query scale is `softplus(p) / (log(2) * sqrt(head_dim))`, which is
# `1 / sqrt(head_dim)` for `p = 0`.
_R_SOFTPLUS_0 = 1.442695041


@dataclass
class MagicLensOutput(ModelOutput):
    """
    Output of [`MagicLensModel.forward`].

    Args:
        composed_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`):
            The multimodal embedding (the reference's `multimodal_embed`), unnormalised. With the empty text it is the
            gallery embedding of the image.
        normalized_composed_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`):
            `composed_embeds` L2-normalised in float32 as the reference does (`multimodal_embed_norm`:
            `x / sqrt(sum(x^2) + 1e-12)`); retrieval scores are dot products of these.
        image_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`):
            The projected, unnormalised CLIP image embeddings (the fusion's first token).
        text_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`):
            The projected, unnormalised CLIP text embeddings (the fusion's second token).
        fusion_hidden_state (`torch.FloatTensor` of shape `(batch_size, 2, projection_dim)`):
            The fusion transformer's output sequence, before pooling.
        text_model_output ([`~modeling_outputs.BaseModelOutputWithPooling`]):
            The text tower's output; `pooler_output` holds `text_embeds`.
        vision_model_output ([`~modeling_outputs.BaseModelOutputWithPooling`]):
            The vision tower's output; `pooler_output` holds `image_embeds`.
    """

    composed_embeds: torch.FloatTensor | None = None
    normalized_composed_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    fusion_hidden_state: torch.FloatTensor | None = None
    text_model_output: BaseModelOutputWithPooling | None = None
    vision_model_output: BaseModelOutputWithPooling | None = None

    def to_tuple(self) -> tuple:
        return tuple(
            self[key].to_tuple() if key in ("text_model_output", "vision_model_output") else self[key]
            for key in self.keys()
        )


def normalize_embeds(embeds: torch.Tensor) -> torch.Tensor:
    """L2-normalise as the reference does: in float32, `x / sqrt(sum(x^2) + 1e-12)`."""
    embeds = embeds.float()
    return embeds / torch.sqrt((embeds * embeds).sum(dim=-1, keepdim=True) + 1e-12)


class MagicLensAttention(nn.Module):
    """Multi-head attention with soft-capped logits (the reference's `DotProductAttention`).

    The query is scaled by `head_dim ** -0.5` or, with `per_dim_scale`, by a learned per-dimension factor
    `softplus(per_dim_scale) / (log(2) * sqrt(head_dim))`. No attention mask: MagicLens attends over its two tokens.
    """

    def __init__(self, config: MagicLensConfig, num_heads: int, head_dim: int, per_dim_scale: bool):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.logit_cap = config.attention_logit_cap
        inner = num_heads * head_dim
        self.q_proj = nn.Linear(config.projection_dim, inner)
        self.k_proj = nn.Linear(config.projection_dim, inner)
        self.v_proj = nn.Linear(config.projection_dim, inner)
        self.out_proj = nn.Linear(inner, config.projection_dim)
        self.per_dim_scale = nn.Parameter(torch.zeros(head_dim)) if per_dim_scale else None

    def _heads(self, states: torch.Tensor) -> torch.Tensor:
        batch, length, _ = states.shape
        return states.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, query_states: torch.Tensor, key_value_states: torch.Tensor) -> torch.Tensor:
        query = self._heads(self.q_proj(query_states))
        key = self._heads(self.k_proj(key_value_states))
        value = self._heads(self.v_proj(key_value_states))
        if self.per_dim_scale is not None:
            query = query * (_R_SOFTPLUS_0 / math.sqrt(self.head_dim) * F.softplus(self.per_dim_scale))
        else:
            query = query * self.head_dim**-0.5
        logits = query @ key.transpose(-1, -2)
        logits = self.logit_cap * torch.tanh(logits / self.logit_cap)
        probs = logits.softmax(dim=-1)
        attended = (probs @ value).transpose(1, 2).reshape(query_states.shape[0], query_states.shape[1], -1)
        return self.out_proj(attended)


class MagicLensFeedForward(nn.Module):
    """Pre-norm ReLU feed-forward network with a skip connection (the reference's `TransformerFFN`)."""

    def __init__(self, config: MagicLensConfig):
        super().__init__()
        self.layer_norm = nn.LayerNorm(config.projection_dim, eps=config.layer_norm_eps)
        self.fc1 = nn.Linear(config.projection_dim, config.fusion_intermediate_size)
        self.fc2 = nn.Linear(config.fusion_intermediate_size, config.projection_dim)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states + self.fc2(F.relu(self.fc1(self.layer_norm(hidden_states))))


class MagicLensFusionLayer(nn.Module):
    """One fusion layer: `x + attention(norm(x))`, then the feed-forward block (the reference's `Transformer`)."""

    def __init__(self, config: MagicLensConfig):
        super().__init__()
        heads = config.fusion_num_attention_heads
        self.layer_norm = nn.LayerNorm(config.projection_dim, eps=config.layer_norm_eps)
        self.self_attn = MagicLensAttention(config, heads, config.projection_dim // heads, per_dim_scale=False)
        self.feed_forward = MagicLensFeedForward(config)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        normed = self.layer_norm(hidden_states)
        return self.feed_forward(hidden_states + self.self_attn(normed, normed))


class MagicLensFusionEncoder(nn.Module):
    """The stack of fusion layers over the `[image, text]` sequence (the reference's `StackedTransformer`)."""

    def __init__(self, config: MagicLensConfig):
        super().__init__()
        self.layers = nn.ModuleList(MagicLensFusionLayer(config) for _ in range(config.fusion_num_hidden_layers))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            hidden_states = layer(hidden_states)
        return hidden_states


class MagicLensAttentionPooler(nn.Module):
    """Learned queries attend over the fused sequence, then a layer norm (the reference's `AttenTokenPoolingLayer`)."""

    def __init__(self, config: MagicLensConfig):
        super().__init__()
        self.query = nn.Parameter(torch.zeros(config.num_query_tokens, config.projection_dim))
        self.attention = MagicLensAttention(
            config, config.pooler_num_attention_heads, config.pooler_head_dim, per_dim_scale=True
        )
        self.layer_norm = nn.LayerNorm(config.projection_dim, eps=config.layer_norm_eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        query = self.query.unsqueeze(0).expand(hidden_states.shape[0], -1, -1)
        return self.layer_norm(self.attention(query, hidden_states))


class MagicLensPreTrainedModel(PreTrainedModel):
    config_class = MagicLensConfig
    base_model_prefix = "magiclens"
    main_input_name = "pixel_values"
    input_modalities = ("image", "text")
    _no_split_modules = ["CLIPTextEmbeddings", "CLIPEncoderLayer", "CLIPVisionEmbeddings", "MagicLensFusionLayer"]
    _supports_sdpa = True

    def _init_weights(self, module: nn.Module) -> None:
        # The reference initialises its kernels with LeCun normal, biases with zeros, layer norms as the identity, the
        # per-dimension scale at 0 (factor 1 / sqrt(head_dim)). The CLIP towers initialise themselves.
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=module.in_features**-0.5)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, MagicLensAttention) and module.per_dim_scale is not None:
            nn.init.zeros_(module.per_dim_scale)
        elif isinstance(module, MagicLensAttentionPooler):
            nn.init.normal_(module.query, std=module.query.shape[-1] ** -0.5)


class MagicLensModel(MagicLensPreTrainedModel):
    r"""
    MagicLens: CLIP text and vision towers (with projection), the fusion transformer and the attention pooler.

    Args:
        config ([`MagicLensConfig`]): The model configuration.

    Example:

    ```python
    >>> import torch
    >>> from PIL import Image
    >>> from transformers import CLIPTextConfig, CLIPVisionConfig
    >>> from hf_cir import MagicLensConfig, MagicLensModel
    >>> from hf_cir.models.magiclens import MagicLensImageProcessor

    >>> config = MagicLensConfig(
    ...     text_config=CLIPTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
    ...                                projection_dim=16, pad_token_id=0),
    ...     vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
    ...                                    num_attention_heads=2, image_size=32, patch_size=8, projection_dim=16),
    ...     projection_dim=16, fusion_num_attention_heads=2, fusion_intermediate_size=64, pooler_num_attention_heads=2)
    >>> model = MagicLensModel(config).eval()
    >>> pixel_values = MagicLensImageProcessor(size=32)(Image.new("RGB", (48, 40)))["pixel_values"]
    >>> input_ids = torch.tensor([[49406, 320, 736, 49407, 0]])  # "<start> a red <end>", padded with 0
    >>> with torch.inference_mode():
    ...     query = model(pixel_values=pixel_values, input_ids=input_ids).normalized_composed_embeds
    ...     gallery = model.get_image_features(pixel_values).pooler_output  # embedded with the empty text
    >>> query.shape, gallery.shape
    (torch.Size([1, 16]), torch.Size([1, 16]))
    ```"""

    def __init__(self, config: MagicLensConfig):
        super().__init__(config)
        self.text_model = CLIPTextModelWithProjection._from_config(config.text_config)
        self.vision_model = CLIPVisionModelWithProjection._from_config(config.vision_config)
        config.text_config = self.text_model.config
        config.vision_config = self.vision_model.config
        self.fusion = MagicLensFusionEncoder(config)
        self.pooler = MagicLensAttentionPooler(config)
        self.post_init()

    @torch.no_grad()
    def initialize_weights(self) -> None:
        """Initialise every weight a checkpoint did not provide: each CLIP tower as it initialises itself, then the
        fusion modules."""
        self.text_model.initialize_weights()
        self.vision_model.initialize_weights()
        super().initialize_weights()

    def get_input_embeddings(self) -> nn.Module:
        return self.text_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.text_model.set_input_embeddings(value)

    def empty_text_input_ids(self, batch_size: int, device: torch.device | None = None) -> torch.LongTensor:
        """The ids of the empty text, `[start-of-text, end-of-text]` per row (the reference's `tokenizer("")` without
        its padding, which the causal text tower never attends to from the end-of-text token)."""
        bos, eos = self.config.text_config.bos_token_id, self.config.text_config.eos_token_id
        if bos is None or eos is None:
            raise ValueError("`config.text_config` needs `bos_token_id` and `eos_token_id` to embed the empty text.")
        return torch.tensor([[bos, eos]], device=device).expand(batch_size, -1)

    def _check_inputs(self, pixel_values: torch.Tensor, input_ids: torch.Tensor | None) -> None:
        if not torch.is_tensor(pixel_values) or pixel_values.dim() != 4 or not pixel_values.is_floating_point():
            raise ValueError(
                "`pixel_values` must be a float tensor of shape (batch_size, num_channels, height, width), got "
                f"{getattr(pixel_values, 'dtype', type(pixel_values).__name__)} of shape "
                f"{tuple(getattr(pixel_values, 'shape', ()))}."
            )
        if input_ids is not None:
            if input_ids.dim() != 2 or input_ids.is_floating_point():
                raise ValueError(
                    f"`input_ids` must be an integer tensor of shape (batch_size, sequence_length), got "
                    f"{input_ids.dtype} of shape {tuple(input_ids.shape)}."
                )
            if input_ids.shape[0] != pixel_values.shape[0]:
                raise ValueError(
                    f"`input_ids` has {input_ids.shape[0]} rows and `pixel_values` {pixel_values.shape[0]} images: "
                    "MagicLens pairs one text with one image."
                )

    def _encode(self, pixel_values, input_ids, attention_mask) -> MagicLensOutput:
        self._check_inputs(pixel_values, input_ids)
        if input_ids is None:
            input_ids = self.empty_text_input_ids(pixel_values.shape[0], pixel_values.device)
            attention_mask = None
        if attention_mask is None:
            # The reference's text mask: every id above 0 (its tokenizer pads with 0, the bare "!" token).
            attention_mask = (input_ids > 0).long()
        vision_output = self.vision_model(pixel_values=pixel_values.to(self.vision_model.dtype))
        text_output = self.text_model(input_ids=input_ids, attention_mask=attention_mask)
        image_embeds, text_embeds = vision_output.image_embeds, text_output.text_embeds
        sequence = torch.stack([image_embeds, text_embeds.to(image_embeds.dtype)], dim=1)
        fused = self.fusion(sequence.to(self.pooler.query.dtype))
        composed = self.pooler(fused)[:, 0]
        return MagicLensOutput(
            composed_embeds=composed,
            normalized_composed_embeds=normalize_embeds(composed),
            image_embeds=image_embeds,
            text_embeds=text_embeds,
            fusion_hidden_state=fused,
            text_model_output=BaseModelOutputWithPooling(
                last_hidden_state=text_output.last_hidden_state, pooler_output=text_embeds
            ),
            vision_model_output=BaseModelOutputWithPooling(
                last_hidden_state=vision_output.last_hidden_state, pooler_output=image_embeds
            ),
        )

    def get_composed_features(
        self,
        pixel_values: torch.FloatTensor,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        return_dict: bool | None = None,
    ) -> BaseModelOutputWithPooling | tuple:
        r"""
        The composed query embedding of each (image, text) pair, returned as transformers' feature methods return
        features: a [`~modeling_outputs.BaseModelOutputWithPooling`] whose `pooler_output` is the unnormalised
        multimodal embedding `(batch_size, projection_dim)` and whose `last_hidden_state` is the fused sequence
        `(batch_size, 2, projection_dim)`.

        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, height, width)`):
                Images preprocessed by [`MagicLensImageProcessor`].
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
                Token ids padded with 0, as [`MagicLensProcessor`] gives them. `None` embeds the empty text.
            attention_mask (`torch.Tensor` of shape `(batch_size, sequence_length)`, *optional*):
                Text attention mask. Defaults to the reference's `input_ids > 0`, which also hides a bare `!` (id 0)
                written inside a text; the processor returns that same mask.
            return_dict (`bool`, *optional*):
                Whether to return a [`~modeling_outputs.BaseModelOutputWithPooling`] instead of a tuple.
        """
        output = self._encode(pixel_values, input_ids, attention_mask)
        features = BaseModelOutputWithPooling(
            last_hidden_state=output.fusion_hidden_state, pooler_output=output.composed_embeds
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        return features if return_dict else features.to_tuple()

    def get_image_features(
        self, pixel_values: torch.FloatTensor, return_dict: bool | None = None
    ) -> BaseModelOutputWithPooling | tuple:
        r"""
        The gallery embedding of each image: the multimodal embedding with the empty text, as the reference embeds its
        index (`tokenizer("")`), not the CLIP image tower's output alone. Returned like
        [`~MagicLensModel.get_composed_features`]; the CLIP image embedding is `forward(...).image_embeds`.
        """
        return self.get_composed_features(pixel_values, None, return_dict=return_dict)

    def forward(
        self,
        pixel_values: torch.FloatTensor,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        return_dict: bool | None = None,
    ) -> MagicLensOutput | tuple:
        r"""
        Embed each (image, text) pair: `model(**processor(images=..., text=...))`. Without `input_ids` each image is
        embedded with the empty text (its gallery embedding).

        Args:
            pixel_values, input_ids, attention_mask: as for [`~MagicLensModel.get_composed_features`].
            return_dict (`bool`, *optional*): Whether to return a [`MagicLensOutput`] instead of a tuple.
        """
        output = self._encode(pixel_values, input_ids, attention_mask)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        return output if return_dict else output.to_tuple()


__all__ = ["MagicLensModel", "MagicLensOutput", "MagicLensPreTrainedModel", "normalize_embeds"]
