# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""Configuration of MagicLens.

This file is self-contained (it imports only `transformers`): `save_pretrained` copies it next to the weights so that
`AutoConfig.from_pretrained(folder, trust_remote_code=True)` works without hf-cir installed.
"""

from __future__ import annotations

from transformers import CLIPTextConfig, CLIPVisionConfig, PretrainedConfig


class MagicLensConfig(PretrainedConfig):
    r"""
    This is the configuration class to store the configuration of a [`MagicLensModel`]. It holds the configurations of
    the CLIP text and vision towers and the sizes of the fusion transformer and the attention pooler that turn the two
    CLIP embeddings into one multimodal embedding.

    MagicLens was proposed in [MagicLens: Self-Supervised Image Retrieval with Open-Ended
    Instructions](https://arxiv.org/abs/2403.19651) by Kai Zhang, Yi Luan, Hexiang Hu, Kenton Lee, Siyuan Qiao, Wenhu
    Chen, Yu Su and Ming-Wei Chang (ICML 2024). The released models are `base` (CLIP ViT-B/16, fusion width 512, 8 heads)
    and `large` (CLIP ViT-L/14, width 768, 16 heads), both with 4 fusion layers; the conversion reads every size from
    the checkpoint's parameters, so any size converts.

    Args:
        text_config (`dict` or [`CLIPTextConfig`], *optional*):
            Configuration of the CLIP text tower (with projection). The text attention mask of the reference is
            `input_ids > 0`: its tokenizer pads with id 0, so `pad_token_id` is 0.
        vision_config (`dict` or [`CLIPVisionConfig`], *optional*):
            Configuration of the CLIP vision tower (with projection).
        projection_dim (`int`, *optional*, defaults to 512):
            Size of the CLIP embeddings, which is also the width of the fusion transformer and of the returned
            multimodal embedding. Must equal `text_config.projection_dim` and `vision_config.projection_dim`.
        fusion_num_hidden_layers (`int`, *optional*, defaults to 4):
            Number of layers of the fusion transformer (the reference's `StackedTransformer`).
        fusion_num_attention_heads (`int`, *optional*, defaults to 8):
            Number of attention heads of each fusion layer; the head size is `projection_dim // heads`.
        fusion_intermediate_size (`int`, *optional*, defaults to 2048):
            Hidden size of each fusion layer's ReLU feed-forward network (4 x `projection_dim` in the releases).
        pooler_num_attention_heads (`int`, *optional*, defaults to 8):
            Number of attention heads of the attention pooler (the reference's `AttenTokenPoolingLayer`).
        pooler_head_dim (`int`, *optional*):
            Head size of the attention pooler. The reference derives it from a hidden size of 4 x `projection_dim`, so
            it defaults to `4 * projection_dim // pooler_num_attention_heads`, not `projection_dim // heads`.
        num_query_tokens (`int`, *optional*, defaults to 1):
            Number of learned pooling queries; the multimodal embedding is the first pooled token.
        layer_norm_eps (`float`, *optional*, defaults to 1e-6):
            Epsilon of the fusion transformer's and the pooler's layer norms.
        attention_logit_cap (`float`, *optional*, defaults to 50.0):
            The fusion and pooler attention logits are soft-capped as `cap * tanh(logits / cap)`.

    Example:

    ```python
    >>> from transformers import CLIPTextConfig, CLIPVisionConfig
    >>> from hf_cir import MagicLensConfig, MagicLensModel

    >>> text_config = CLIPTextConfig(hidden_size=32, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
    ...                              projection_dim=16, pad_token_id=0)
    >>> vision_config = CLIPVisionConfig(hidden_size=32, intermediate_size=128, num_hidden_layers=2,
    ...                                  num_attention_heads=2, image_size=32, patch_size=8, projection_dim=16)
    >>> config = MagicLensConfig(text_config=text_config, vision_config=vision_config, projection_dim=16,
    ...                          fusion_num_attention_heads=2, fusion_intermediate_size=64, pooler_num_attention_heads=2)
    >>> config.pooler_head_dim
    32
    >>> model = MagicLensModel(config)
    ```"""

    model_type = "magiclens"
    sub_configs_defaults = {"text_config": CLIPTextConfig, "vision_config": CLIPVisionConfig}

    def __init__(
        self,
        text_config: dict | CLIPTextConfig | None = None,
        vision_config: dict | CLIPVisionConfig | None = None,
        projection_dim: int = 512,
        fusion_num_hidden_layers: int = 4,
        fusion_num_attention_heads: int = 8,
        fusion_intermediate_size: int = 2048,
        pooler_num_attention_heads: int = 8,
        pooler_head_dim: int | None = None,
        num_query_tokens: int = 1,
        layer_norm_eps: float = 1e-6,
        attention_logit_cap: float = 50.0,
        **kwargs,
    ):
        if text_config is None:
            text_config = CLIPTextConfig(projection_dim=projection_dim, pad_token_id=0)
        elif isinstance(text_config, dict):
            text_config = CLIPTextConfig(**{k: v for k, v in text_config.items() if k != "model_type"})
        if vision_config is None:
            vision_config = CLIPVisionConfig(projection_dim=projection_dim)
        elif isinstance(vision_config, dict):
            vision_config = CLIPVisionConfig(**{k: v for k, v in vision_config.items() if k != "model_type"})
        if not isinstance(text_config, CLIPTextConfig):
            raise TypeError(f"`text_config` must be a dict or a CLIPTextConfig, got {type(text_config).__name__}.")
        if not isinstance(vision_config, CLIPVisionConfig):
            raise TypeError(
                f"`vision_config` must be a dict or a CLIPVisionConfig, got {type(vision_config).__name__}."
            )
        for name, sub_config in (("text_config", text_config), ("vision_config", vision_config)):
            if sub_config.projection_dim != projection_dim:
                raise ValueError(
                    f"`{name}.projection_dim` ({sub_config.projection_dim}) must equal `projection_dim` "
                    f"({projection_dim}): the fusion transformer reads both CLIP embeddings at that width."
                )
        for name, value in (
            ("fusion_num_hidden_layers", fusion_num_hidden_layers),
            ("fusion_num_attention_heads", fusion_num_attention_heads),
            ("fusion_intermediate_size", fusion_intermediate_size),
            ("pooler_num_attention_heads", pooler_num_attention_heads),
            ("num_query_tokens", num_query_tokens),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        if projection_dim % fusion_num_attention_heads:
            raise ValueError(
                f"`projection_dim` ({projection_dim}) must be divisible by `fusion_num_attention_heads` "
                f"({fusion_num_attention_heads})."
            )
        if pooler_head_dim is None:
            if (4 * projection_dim) % pooler_num_attention_heads:
                raise ValueError(
                    f"4 x `projection_dim` ({4 * projection_dim}) must be divisible by `pooler_num_attention_heads` "
                    f"({pooler_num_attention_heads}), or pass `pooler_head_dim`."
                )
            pooler_head_dim = 4 * projection_dim // pooler_num_attention_heads
        if not isinstance(pooler_head_dim, int) or pooler_head_dim < 1:
            raise ValueError(f"`pooler_head_dim` must be a positive integer, got {pooler_head_dim!r}.")
        if not layer_norm_eps > 0:
            raise ValueError(f"`layer_norm_eps` must be positive, got {layer_norm_eps}.")
        if not attention_logit_cap > 0:
            raise ValueError(f"`attention_logit_cap` must be positive, got {attention_logit_cap}.")

        self.text_config = text_config
        self.vision_config = vision_config
        self.projection_dim = projection_dim
        self.fusion_num_hidden_layers = fusion_num_hidden_layers
        self.fusion_num_attention_heads = fusion_num_attention_heads
        self.fusion_intermediate_size = fusion_intermediate_size
        self.pooler_num_attention_heads = pooler_num_attention_heads
        self.pooler_head_dim = pooler_head_dim
        self.num_query_tokens = num_query_tokens
        self.layer_norm_eps = float(layer_norm_eps)
        self.attention_logit_cap = float(attention_logit_cap)
        super().__init__(**kwargs)


__all__ = ["MagicLensConfig"]
