# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
#
# The denoiser of CompoDiff (Gu et al., "CompoDiff: Versatile Composed Image Retrieval With Latent Diffusion",
# TMLR 2024; https://github.com/navervision/CompoDiff), written as a diffusers model.
#
# This file imports only torch and diffusers: it is also the `prior/modeling_compodiff.py` of the Hub remote-code
# layout (see pipelines/compodiff/README.md), so it must stay self-contained.
"""CompoDiff's prior transformer: predicts a clean CLIP image embedding from a noisy one and the conditions."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

__all__ = ["CompoDiffPriorContext", "CompoDiffPriorTransformer", "CompoDiffPriorTransformerOutput"]

# The prior's sequence: [noisy image embedding, timestep embedding].
NUM_TOKENS = 2


@dataclass
class CompoDiffPriorTransformerOutput(BaseOutput):
    """
    The output of [`CompoDiffPriorTransformer`].

    Args:
        predicted_image_embedding (`torch.Tensor` of shape `(batch_size, embedding_dim)`):
            The predicted clean CLIP image embedding (the prior predicts the sample, not the noise).
    """

    predicted_image_embedding: torch.Tensor


@dataclass
class CompoDiffPriorContext:
    """
    The step-independent part of [`CompoDiffPriorTransformer`]'s work, made by
    [`~CompoDiffPriorTransformer.prepare_context`] and passed to `forward(..., context_cache=...)`.

    Args:
        key_values (`tuple` of `(key, value)` pairs, one per transformer block):
            The cross-attention keys and values of the context `[null, projected text, image condition, mask
            embedding]`, each of shape `(num_contexts, num_cross_attention_heads, 1 + text_length + 2,
            attention_head_dim)`.
    """

    key_values: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    position_bias: torch.Tensor | None = None
    rotary_cos: torch.Tensor | None = None
    rotary_sin: torch.Tensor | None = None

    @property
    def num_contexts(self) -> int:
        return self.key_values[0][0].shape[0]

    @classmethod
    def cat(cls, contexts: list[CompoDiffPriorContext]) -> CompoDiffPriorContext:
        """Stack several contexts along the batch, in order (e.g. the guidance branches)."""
        if len({context.key_values[0][0].shape[2] for context in contexts}) != 1:
            raise ValueError("Contexts made from texts of different lengths cannot be concatenated.")
        return cls(
            key_values=tuple(
                (torch.cat([c.key_values[i][0] for c in contexts]), torch.cat([c.key_values[i][1] for c in contexts]))
                for i in range(len(contexts[0].key_values))
            ),
            position_bias=contexts[0].position_bias,
            rotary_cos=contexts[0].rotary_cos,
            rotary_sin=contexts[0].rotary_sin,
        )


class CompoDiffLayerNorm(nn.Module):
    """LayerNorm with a gain and no bias; `stable=True` first divides by the row maximum (as in the reference).

    The reference uses eps 1e-5 in float32 and 1e-3 in lower precisions. The normalisation is written out as
    two-pass mean and (biased) variance instead of `F.layer_norm`: the function is the same, and this order of
    operations stays closer to the reference's rounding (it halves the float32 drift over nine guided sampling
    steps) while avoiding `torch.var`, which is ten times slower than these element-wise passes on CPU.
    """

    def __init__(self, dim: int, eps: float = 1e-5, low_precision_eps: float = 1e-3, stable: bool = False):
        super().__init__()
        self.eps = eps
        self.low_precision_eps = low_precision_eps
        self.stable = stable
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        eps = self.eps if hidden_states.dtype == torch.float32 else self.low_precision_eps
        if self.stable:
            hidden_states = hidden_states / hidden_states.amax(dim=-1, keepdim=True).detach()
        centered = hidden_states - hidden_states.mean(dim=-1, keepdim=True)
        variance = (centered * centered).mean(dim=-1, keepdim=True)
        return centered * (variance + eps).rsqrt() * self.weight


class CompoDiffMLP(nn.Module):
    """Three linear layers with SiLU in between (the reference's `MLP` with expansion factor 2 and depth 2)."""

    def __init__(self, in_features: int, out_features: int, hidden_features: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_features, hidden_features)
        self.linear_2 = nn.Linear(hidden_features, hidden_features)
        self.linear_3 = nn.Linear(hidden_features, out_features)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = F.silu(self.linear_1(hidden_states.to(self.linear_1.weight.dtype)))
        hidden_states = F.silu(self.linear_2(hidden_states))
        return self.linear_3(hidden_states)


def _rotate_pairs(hidden_states: torch.Tensor) -> torch.Tensor:
    # Rotary embedding on interleaved pairs: (x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...).
    even, odd = hidden_states[..., 0::2], hidden_states[..., 1::2]
    return torch.stack((-odd, even), dim=-1).flatten(-2)


def _apply_rotary(hidden_states: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first `cos.shape[-1]` features of `hidden_states` (RoFormer, Su et al. 2021, eq. 34)."""
    rotary_dim = cos.shape[-1]
    rotated, passed = hidden_states[..., :rotary_dim], hidden_states[..., rotary_dim:]
    rotated = rotated * cos + _rotate_pairs(rotated) * sin
    return torch.cat((rotated, passed), dim=-1)


class CompoDiffSelfAttention(nn.Module):
    """
    Multi-query self-attention over the prior's tokens: `num_heads` query heads share one key/value head; rotary
    position embedding on queries and keys; cosine-similarity attention (queries and keys L2-normalised, logits
    scaled by `cosine_sim_scale`); a learned null key/value prepended; a T5-style relative position bias added to
    the logits; output projection followed by a LayerNorm.
    """

    def __init__(self, dim: int, num_heads: int, head_dim: int, cosine_sim_scale: float):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.cosine_sim_scale = cosine_sim_scale
        self.norm = CompoDiffLayerNorm(dim)
        self.to_q = nn.Linear(dim, num_heads * head_dim, bias=False)
        self.to_kv = nn.Linear(dim, 2 * head_dim, bias=False)
        self.null_kv = nn.Parameter(torch.randn(2, head_dim))
        self.to_out = nn.Linear(num_heads * head_dim, dim, bias=False)
        self.norm_out = CompoDiffLayerNorm(dim)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_bias: torch.Tensor,
        rotary_cos: torch.Tensor,
        rotary_sin: torch.Tensor,
        num_queries: int | None = None,
    ) -> torch.Tensor:
        # hidden_states: [N, n, D]; position_bias: [heads, n, 1 + n]; rotary_cos/sin: [n, rotary_dim].
        # `num_queries` < n computes the output of the first `num_queries` tokens only (all tokens stay keys).
        batch, length, _ = hidden_states.shape
        num_queries = length if num_queries is None else num_queries
        hidden_states = self.norm(hidden_states)
        query = self.to_q(hidden_states[:, :num_queries]).view(batch, num_queries, self.num_heads, self.head_dim)
        query = _apply_rotary(query.transpose(1, 2), rotary_cos[:num_queries], rotary_sin[:num_queries])
        key, value = self.to_kv(hidden_states).chunk(2, dim=-1)
        key = _apply_rotary(key, rotary_cos, rotary_sin)
        null_key, null_value = self.null_kv.to(key.dtype).unbind(0)
        key = torch.cat((null_key.expand(batch, 1, -1), key), dim=1)
        value = torch.cat((null_value.expand(batch, 1, -1), value), dim=1)
        # Cosine-similarity logits: unit queries and keys, scaled by `cosine_sim_scale` (the reference also scales the
        # queries before the rotation, which the normalisation cancels).
        query, key = F.normalize(query, dim=-1), F.normalize(key, dim=-1)
        # One key/value head for all query heads: fold the heads into the query length.
        query = query.reshape(batch, 1, self.num_heads * num_queries, self.head_dim)
        bias = position_bias[:, :num_queries].reshape(self.num_heads * num_queries, length + 1).to(query.dtype)
        out = F.scaled_dot_product_attention(
            query, key.unsqueeze(1), value.unsqueeze(1), attn_mask=bias, scale=self.cosine_sim_scale
        )
        out = (
            out.view(batch, self.num_heads, num_queries, self.head_dim).transpose(1, 2).reshape(batch, num_queries, -1)
        )
        return self.norm_out(self.to_out(out))


class CompoDiffCrossAttention(nn.Module):
    """
    Cross-attention from the prior's tokens to the context `[projected text, image condition, mask embedding]`,
    with a learned null key/value (shared by the heads) prepended and an output LayerNorm. Keys and values are
    made by [`~CompoDiffCrossAttention.project_context`], once per context.
    """

    def __init__(self, dim: int, num_heads: int, head_dim: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.norm = CompoDiffLayerNorm(dim)
        self.to_q = nn.Linear(dim, num_heads * head_dim, bias=False)
        self.to_kv = nn.Linear(dim, 2 * num_heads * head_dim, bias=False)
        self.null_kv = nn.Parameter(torch.randn(2, head_dim))
        self.to_out = nn.Linear(num_heads * head_dim, dim, bias=False)
        self.norm_out = CompoDiffLayerNorm(dim)

    def project_context(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values `[N, heads, 1 + context_length, head_dim]` of `context` `[N, context_length, D]`."""
        batch, length, _ = context.shape
        key, value = self.to_kv(context).view(batch, length, 2, self.num_heads, self.head_dim).unbind(2)
        null_key, null_value = self.null_kv.to(key.dtype).unbind(0)
        key = torch.cat((null_key.expand(batch, 1, self.num_heads, -1), key), dim=1)
        value = torch.cat((null_value.expand(batch, 1, self.num_heads, -1), value), dim=1)
        return key.transpose(1, 2).contiguous(), value.transpose(1, 2).contiguous()

    def forward(self, hidden_states: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        # hidden_states: [N, n, D]; key/value: [Nc, heads, S, head_dim] with N = Nc * R. Rows b * R + r share
        # context b, so their queries attend together in one batched product against that context.
        batch, length, _ = hidden_states.shape
        num_contexts = key.shape[0]
        repeats = batch // num_contexts
        query = self.to_q(self.norm(hidden_states)).view(num_contexts, repeats, length, self.num_heads, self.head_dim)
        query = query.permute(0, 3, 1, 2, 4).reshape(num_contexts, self.num_heads, repeats * length, self.head_dim)
        out = F.scaled_dot_product_attention(query, key, value, scale=self.head_dim**-0.5)
        out = out.view(num_contexts, self.num_heads, repeats, length, self.head_dim).permute(0, 2, 3, 1, 4)
        return self.norm_out(self.to_out(out.reshape(batch, length, self.num_heads * self.head_dim)))


class CompoDiffFeedForward(nn.Module):
    """Pre-norm SwiGLU feed-forward (Shazeer 2020): `proj_out(a * silu(gate))` with `(a, gate) = proj_in(norm(x))`."""

    def __init__(self, dim: int, mult: float):
        super().__init__()
        inner_dim = int(mult * dim)
        self.norm = CompoDiffLayerNorm(dim)
        self.proj_in = nn.Linear(dim, 2 * inner_dim, bias=False)
        self.proj_out = nn.Linear(inner_dim, dim, bias=False)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states, gate = self.proj_in(self.norm(hidden_states)).chunk(2, dim=-1)
        return self.proj_out(hidden_states * F.silu(gate))


class CompoDiffTransformerBlock(nn.Module):
    """Self-attention, cross-attention to the context, feed-forward; each residual."""

    def __init__(
        self,
        dim: int,
        num_attention_heads: int,
        attention_head_dim: int,
        num_cross_attention_heads: int,
        ff_mult: float,
        cosine_sim_scale: float,
    ):
        super().__init__()
        self.self_attn = CompoDiffSelfAttention(dim, num_attention_heads, attention_head_dim, cosine_sim_scale)
        self.cross_attn = CompoDiffCrossAttention(dim, num_cross_attention_heads, attention_head_dim)
        self.ff = CompoDiffFeedForward(dim, ff_mult)

    def forward(
        self,
        hidden_states: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        position_bias: torch.Tensor,
        rotary_cos: torch.Tensor,
        rotary_sin: torch.Tensor,
        num_queries: int | None = None,
    ) -> torch.Tensor:
        attended = self.self_attn(hidden_states, position_bias, rotary_cos, rotary_sin, num_queries=num_queries)
        hidden_states = attended + hidden_states[:, : attended.shape[1]]
        hidden_states = self.cross_attn(hidden_states, key, value) + hidden_states
        return self.ff(hidden_states) + hidden_states


class CompoDiffPriorTransformer(ModelMixin, ConfigMixin):
    """
    The CompoDiff denoiser: given a noisy CLIP image embedding, its timestep and the conditions (a reference image
    embedding, the text encoder's hidden states, a 2-D mask), it predicts the clean image embedding.

    The prior runs a transformer over two tokens, `[noisy image embedding, timestep embedding]`. Each block has
    multi-query self-attention (rotary position embedding, T5-style relative position bias, cosine-similarity
    logits, a learned null key/value), cross-attention to the context `[text projection of the text hidden
    states, image condition, mask embedding]` with a learned null key/value, and a SwiGLU feed-forward. A stable
    LayerNorm and a linear projection of the first token give the prediction. The timestep is embedded
    continuously (sinusoidal features of the float timestep, then an MLP); the mask is flattened and embedded by an
    MLP. See Gu et al., "CompoDiff: Versatile Composed Image Retrieval With Latent Diffusion" (TMLR 2024).

    Two ways to run it, with the same results:
    - `forward(hidden_states, timestep, image_embeds, text_hidden_states, mask)` computes everything, as the
      reference network does at every step.
    - `context = prior.prepare_context(text_hidden_states, image_embeds, mask)` computes once what does not depend
      on the step (text projection, mask MLP, every block's cross-attention keys and values); then
      `forward(hidden_states, timestep, context_cache=context)` runs only the per-step work. Several samples per
      context share it: row `b * R + r` of `hidden_states` uses context `b`.

    Parameters:
        embedding_dim (`int`, *optional*, defaults to 768): The dimension of the CLIP image embedding.
        num_layers (`int`, *optional*, defaults to 12): The number of transformer blocks.
        num_attention_heads (`int`, *optional*, defaults to 16): The number of self-attention query heads.
        attention_head_dim (`int`, *optional*, defaults to 64):
            The size of each attention head (self-attention and cross-attention).
        num_cross_attention_heads (`int`, *optional*, defaults to 8):
            The number of cross-attention heads (the reference uses 8 whatever the self-attention heads are).
        text_embed_dim (`int`, *optional*, defaults to 1280):
            The hidden size of the text encoder (1280 for OpenCLIP ViT-bigG/14).
        mask_size (`int`, *optional*, defaults to 64): The side of the square mask input.
        num_train_timesteps (`int`, *optional*, defaults to 1000):
            The number of diffusion steps the prior was trained with (timesteps lie in `[0, num_train_timesteps)`).
        ff_mult (`float`, *optional*, defaults to 4.0): The feed-forward inner size as a multiple of `embedding_dim`.
        rotary_dim (`int`, *optional*):
            How many features of each query/key head get the rotary embedding. Defaults to
            `min(32, attention_head_dim)`, the reference's choice.
        num_relative_position_buckets (`int`, *optional*, defaults to 32): Buckets of the relative position bias.
        relative_position_max_distance (`int`, *optional*, defaults to 128): Its maximum distance.
        cosine_sim_scale (`float`, *optional*, defaults to 16.0): The logit scale of the cosine-similarity attention.
        rotary_theta (`float`, *optional*, defaults to 10000.0): The base of the rotary frequencies.

    Example:

    ```python
    >>> import torch
    >>> from hf_cir import CompoDiffPriorTransformer

    >>> prior = CompoDiffPriorTransformer(
    ...     embedding_dim=32, num_layers=2, num_attention_heads=2, attention_head_dim=16, text_embed_dim=24, mask_size=8
    ... )
    >>> noisy, text = torch.randn(3, 32), torch.randn(3, 77, 24)
    >>> prior(noisy, torch.tensor([999, 500, 0]), torch.randn(3, 32), text, torch.zeros(3, 8, 8)).predicted_image_embedding.shape
    torch.Size([3, 32])

    ```
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["CompoDiffTransformerBlock"]

    @register_to_config
    def __init__(
        self,
        embedding_dim: int = 768,
        num_layers: int = 12,
        num_attention_heads: int = 16,
        attention_head_dim: int = 64,
        num_cross_attention_heads: int = 8,
        text_embed_dim: int = 1280,
        mask_size: int = 64,
        num_train_timesteps: int = 1000,
        ff_mult: float = 4.0,
        rotary_dim: int | None = None,
        num_relative_position_buckets: int = 32,
        relative_position_max_distance: int = 128,
        cosine_sim_scale: float = 16.0,
        rotary_theta: float = 10000.0,
    ):
        super().__init__()
        for name, value in [
            ("embedding_dim", embedding_dim),
            ("num_layers", num_layers),
            ("num_attention_heads", num_attention_heads),
            ("attention_head_dim", attention_head_dim),
            ("num_cross_attention_heads", num_cross_attention_heads),
            ("text_embed_dim", text_embed_dim),
            ("mask_size", mask_size),
            ("num_train_timesteps", num_train_timesteps),
            ("num_relative_position_buckets", num_relative_position_buckets),
        ]:
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        if embedding_dim % 2 or embedding_dim < 4:
            raise ValueError(
                f"`embedding_dim` must be even and at least 4 (sinusoidal features), got {embedding_dim}."
            )
        rotary_dim = min(32, attention_head_dim) if rotary_dim is None else rotary_dim
        if rotary_dim % 2 or not 0 < rotary_dim <= attention_head_dim:
            raise ValueError(
                f"`rotary_dim` must be even and in (0, attention_head_dim={attention_head_dim}], got {rotary_dim}."
            )
        if num_relative_position_buckets < 2:
            raise ValueError(
                f"`num_relative_position_buckets` must be at least 2, got {num_relative_position_buckets}."
            )

        self.text_proj = nn.Linear(text_embed_dim, embedding_dim)
        self.time_proj = CompoDiffMLP(embedding_dim, embedding_dim, 2 * embedding_dim)
        self.mask_proj = CompoDiffMLP(mask_size * mask_size, embedding_dim, 2 * embedding_dim)
        self.relative_position_bias = nn.Embedding(num_relative_position_buckets, num_attention_heads)
        self.transformer_blocks = nn.ModuleList(
            [
                CompoDiffTransformerBlock(
                    embedding_dim,
                    num_attention_heads,
                    attention_head_dim,
                    num_cross_attention_heads,
                    ff_mult,
                    cosine_sim_scale,
                )
                for _ in range(num_layers)
            ]
        )
        self.norm_out = CompoDiffLayerNorm(embedding_dim, stable=True)
        self.proj_out = nn.Linear(embedding_dim, embedding_dim, bias=False)
        # Computed, not learned, and not saved: ModelMixin.from_pretrained builds on the meta device and only
        # fills saved tensors, so the buffer is rebuilt from scratch in `compute_rotary_frequencies` when needed.
        self.register_buffer("rotary_frequencies", self.compute_rotary_frequencies(), persistent=False)
        self.gradient_checkpointing = False

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """
        [`~diffusers.ModelMixin.from_pretrained`], then every CPU weight is copied out of the memory-mapped
        safetensors file into freshly allocated memory. A mapped tensor can sit at an address that makes the CPU
        matrix kernels round differently (about 1e-7), so without the copy a reloaded model would not give
        bitwise the outputs of the model that was saved.
        """
        model = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        with torch.no_grad():
            for tensor in list(model.parameters()) + list(model.buffers()):
                if tensor.device.type == "cpu":
                    tensor.data = tensor.data.clone()
        return model

    def compute_rotary_frequencies(self, device: torch.device | None = None) -> torch.Tensor:
        """The rotary embedding's frequencies theta^(-2i/d) for i < d/2, in float32 (RoFormer, Su et al. 2021): a fixed
        function of the config, never learned (conversion checks a checkpoint's against them)."""
        dim = self.config.rotary_dim or min(32, self.config.attention_head_dim)
        exponents = torch.arange(0, dim, 2, device=device)[: dim // 2].float() / dim
        return 1.0 / (self.config.rotary_theta**exponents)

    def _rotary_cos_sin(self, length: int, dtype: torch.dtype, device: torch.device):
        frequencies = self.rotary_frequencies
        if frequencies.device.type == "meta" or frequencies.device != device:
            frequencies = self.compute_rotary_frequencies(device)
            self.rotary_frequencies = frequencies
        angles = torch.arange(length, device=device, dtype=dtype).to(frequencies.dtype)[:, None] * frequencies
        angles = angles.repeat_interleave(2, dim=-1).to(dtype)
        return angles.cos(), angles.sin()

    def _position_bias(self, length: int, device: torch.device) -> torch.Tensor:
        """T5-style bias `[heads, length, 1 + length]` (Raffel et al. 2020); key 0 is the null key."""
        num_buckets = self.config.num_relative_position_buckets
        max_distance = self.config.relative_position_max_distance
        query_position = torch.arange(length, device=device)[:, None]
        key_position = torch.arange(length + 1, device=device)[None, :]
        distance = (query_position - key_position).clamp(min=0)  # only non-positive relative positions count
        max_exact = num_buckets // 2
        scaled = torch.log(distance.float().clamp(min=1) / max_exact) / math.log(max_distance / max_exact)
        large = (max_exact + (scaled * (num_buckets - max_exact)).long()).clamp(max=num_buckets - 1)
        bucket = torch.where(distance < max_exact, distance, large)
        return self.relative_position_bias(bucket).permute(2, 0, 1)

    def _time_embedding(self, timestep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        # Sinusoidal features of the float timestep (Vaswani et al. 2017), then an MLP. Computed in float32 at
        # least: sin(999 * f) in half precision would be mostly rounding error (the reference uses the model dtype).
        compute_dtype = torch.promote_types(dtype, torch.float32)
        half = self.config.embedding_dim // 2
        exponent = math.log(10000) / (half - 1)
        frequencies = torch.exp(torch.arange(half, device=timestep.device, dtype=compute_dtype) * -exponent)
        angles = timestep.to(compute_dtype)[:, None] * frequencies[None, :]
        return self.time_proj(torch.cat((angles.sin(), angles.cos()), dim=-1).to(dtype))

    def prepare_context(
        self,
        text_hidden_states: torch.Tensor,
        image_embeds: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> CompoDiffPriorContext:
        """
        Compute what does not depend on the step: the text projection, the mask embedding and every block's
        cross-attention keys and values of the context `[projected text, image condition, mask embedding]`.

        Args:
            text_hidden_states (`torch.Tensor` of shape `(text_batch, text_length, text_embed_dim)`):
                The text encoder's last hidden state. `text_batch` may divide the batch of `image_embeds`/`mask`:
                the text rows are then tiled (context `i` uses text row `i % text_batch`), and each text is
                projected only once (e.g. one negative prompt shared by several guidance branches).
            image_embeds (`torch.Tensor` of shape `(batch, embedding_dim)`, *optional*):
                The image condition; zeros when omitted (text-to-image-embedding mode).
            mask (`torch.Tensor` of shape `(batch, mask_size, mask_size)`, *optional*):
                1 marks the masked region; zeros when omitted.

        Returns:
            [`CompoDiffPriorContext`] with `batch` contexts.
        """
        text_hidden_states, image_embeds, mask = self._check_conditions(text_hidden_states, image_embeds, mask)
        batch = image_embeds.shape[0]
        repeats = batch // text_hidden_states.shape[0]
        text = self.text_proj(text_hidden_states)
        mask_embeds = self.mask_proj(mask.flatten(1))
        extra = torch.stack((image_embeds, mask_embeds.to(image_embeds.dtype)), dim=1)  # [batch, 2, D]
        key_values = []
        for block in self.transformer_blocks:
            text_key, text_value = block.cross_attn.project_context(text)  # [text_batch, heads, 1 + L, d]
            extra_key, extra_value = block.cross_attn.project_context(extra)  # [batch, heads, 1 + 2, d]
            if repeats > 1:
                text_key, text_value = text_key.repeat(repeats, 1, 1, 1), text_value.repeat(repeats, 1, 1, 1)
            key = torch.cat((text_key, extra_key[:, :, 1:]), dim=2)
            value = torch.cat((text_value, extra_value[:, :, 1:]), dim=2)
            key_values.append((key, value))
        # The self-attention's position terms depend only on the number of tokens (2): computed once here too.
        rotary_cos, rotary_sin = self._rotary_cos_sin(NUM_TOKENS, text.dtype, text.device)
        return CompoDiffPriorContext(
            key_values=tuple(key_values),
            position_bias=self._position_bias(NUM_TOKENS, text.device),
            rotary_cos=rotary_cos,
            rotary_sin=rotary_sin,
        )

    def _check_conditions(self, text_hidden_states, image_embeds, mask):
        config = self.config
        if text_hidden_states is None:
            raise ValueError("`text_hidden_states` is required (the text encoder's last hidden state).")
        if text_hidden_states.ndim != 3 or text_hidden_states.shape[-1] != config.text_embed_dim:
            raise ValueError(
                f"`text_hidden_states` must have shape (batch, text_length, {config.text_embed_dim}), got "
                f"{tuple(text_hidden_states.shape)}."
            )
        text_batch = text_hidden_states.shape[0]
        batch = image_embeds.shape[0] if image_embeds is not None else (mask.shape[0] if mask is not None else None)
        batch = text_batch if batch is None else batch
        if batch % text_batch:
            raise ValueError(
                f"The batch of `text_hidden_states` ({text_batch}) must equal or divide the batch of `image_embeds`/"
                f"`mask` ({batch})."
            )
        dtype, device = self.text_proj.weight.dtype, text_hidden_states.device
        if image_embeds is None:
            image_embeds = torch.zeros(batch, config.embedding_dim, dtype=dtype, device=device)
        elif image_embeds.ndim != 2 or image_embeds.shape != (batch, config.embedding_dim):
            raise ValueError(
                f"`image_embeds` must have shape ({batch}, {config.embedding_dim}), got {tuple(image_embeds.shape)}."
            )
        if mask is None:
            mask = torch.zeros(batch, config.mask_size, config.mask_size, dtype=dtype, device=device)
        elif mask.shape != (batch, config.mask_size, config.mask_size):
            raise ValueError(
                f"`mask` must have shape ({batch}, {config.mask_size}, {config.mask_size}), got {tuple(mask.shape)}."
            )
        return text_hidden_states.to(dtype), image_embeds.to(dtype), mask.to(dtype)

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor | float | int,
        image_embeds: torch.Tensor | None = None,
        text_hidden_states: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        context_cache: CompoDiffPriorContext | None = None,
        return_dict: bool = True,
    ) -> CompoDiffPriorTransformerOutput | tuple[torch.Tensor]:
        """
        Args:
            hidden_states (`torch.Tensor` of shape `(batch_size, embedding_dim)`):
                The noisy image embedding (like diffusers' `PriorTransformer`; the reference network takes
                `(batch_size, 1, embedding_dim)`).
            timestep (`torch.Tensor` of shape `(batch_size,)`, or a number):
                The diffusion timestep, embedded as a float.
            image_embeds (`torch.Tensor` of shape `(batch_size, embedding_dim)`, *optional*):
                The image condition (the reference image's CLIP embedding); zeros when omitted.
            text_hidden_states (`torch.Tensor` of shape `(batch_size, text_length, text_embed_dim)`):
                The text encoder's last hidden state over all positions.
            mask (`torch.Tensor` of shape `(batch_size, mask_size, mask_size)`, *optional*):
                1 marks the masked region; zeros when omitted.
            context_cache ([`CompoDiffPriorContext`], *optional*):
                From [`~CompoDiffPriorTransformer.prepare_context`]: replaces `image_embeds`,
                `text_hidden_states` and `mask`. `batch_size` must be a multiple `R` of its number of contexts;
                row `b * R + r` uses context `b`.
            return_dict (`bool`, *optional*, defaults to `True`):
                Whether to return a [`CompoDiffPriorTransformerOutput`] instead of a plain tuple.

        Returns:
            [`CompoDiffPriorTransformerOutput`] or a tuple whose first element is the predicted clean embedding
            `(batch_size, embedding_dim)`.
        """
        if hidden_states.ndim != 2 or hidden_states.shape[-1] != self.config.embedding_dim:
            raise ValueError(
                f"`hidden_states` must have shape (batch_size, {self.config.embedding_dim}), got "
                f"{tuple(hidden_states.shape)}."
            )
        batch, device = hidden_states.shape[0], hidden_states.device
        dtype = self.proj_out.weight.dtype
        hidden_states = hidden_states.to(dtype)
        fast = context_cache is not None
        if context_cache is None:
            context_cache = self.prepare_context(text_hidden_states, image_embeds, mask)
            if context_cache.num_contexts != batch:
                raise ValueError(
                    f"The conditions have batch {context_cache.num_contexts} but `hidden_states` has {batch}."
                )
        elif any(x is not None for x in (image_embeds, text_hidden_states, mask)):
            raise ValueError("Pass either `context_cache` or the conditions (`image_embeds`, `text_hidden_states`).")
        elif batch % context_cache.num_contexts:
            raise ValueError(
                f"`hidden_states` has batch {batch}, not a multiple of the {context_cache.num_contexts} contexts."
            )

        timestep = torch.as_tensor(timestep, device=device)
        if timestep.ndim == 0 or timestep.numel() == 1:
            timestep = timestep.reshape(1)
        elif timestep.shape != (batch,):
            raise ValueError(f"`timestep` must be a number or have shape ({batch},), got {tuple(timestep.shape)}.")
        if timestep.numel() > 1 and bool((timestep == timestep[0]).all()):
            timestep = timestep[:1]  # one step for all rows (as in sampling): embed it once
        time_embeds = self._time_embedding(timestep, dtype).to(dtype).expand(batch, -1)

        tokens = torch.stack((hidden_states, time_embeds), dim=1)  # [batch, 2, D]
        length = tokens.shape[1]
        if fast and context_cache.position_bias is not None:
            position_bias = context_cache.position_bias
            rotary_cos, rotary_sin = context_cache.rotary_cos, context_cache.rotary_sin
        else:
            position_bias = self._position_bias(length, device)
            rotary_cos, rotary_sin = self._rotary_cos_sin(length, dtype, device)
        last = len(self.transformer_blocks) - 1
        for index, block in enumerate(self.transformer_blocks):
            key, value = context_cache.key_values[index]
            # Only the first token is read out: in the cached path the last block computes just that token.
            num_queries = 1 if fast and index == last else None
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                tokens = self._gradient_checkpointing_func(
                    block, tokens, key, value, position_bias, rotary_cos, rotary_sin, num_queries
                )
            else:
                tokens = block(tokens, key, value, position_bias, rotary_cos, rotary_sin, num_queries=num_queries)

        predicted = self.proj_out(self.norm_out(tokens[:, 0]))
        if not return_dict:
            return (predicted,)
        return CompoDiffPriorTransformerOutput(predicted_image_embedding=predicted)
