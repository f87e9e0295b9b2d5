# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""LinCIR model configuration.

This file is self-contained (it imports only `transformers`): `save_pretrained` copies it next to the weights so that
`AutoConfig.from_pretrained(folder, trust_remote_code=True)` works without hf-cir installed.
"""

from __future__ import annotations

from transformers import CLIPTextConfig, CLIPVisionConfig, PretrainedConfig

PLACEHOLDER_TOKEN = "$"
PROMPT_TEMPLATE = "a photo of $ that {}"


class LinCIRConfig(PretrainedConfig):
    r"""
    This is the configuration class to store the configuration of a [`LinCIRModel`]. It holds the configurations of the
    CLIP text and vision towers, the size of the phi network that maps an image embedding to a pseudo-word token, and
    the placeholder token that marks where that pseudo word goes in a text.

    LinCIR was proposed in [Language-only Training of Zero-shot Composed Image Retrieval](https://arxiv.org/abs/2312.01998)
    by Geonmo Gu, Sanghyuk Chun, Wonjae Kim, Yoohoon Kang and Sangdoo Yun (CVPR 2024).

    Args:
        text_config (`dict` or [`CLIPTextConfig`], *optional*):
            Configuration of the CLIP text tower (with projection).
        vision_config (`dict` or [`CLIPVisionConfig`], *optional*):
            Configuration of the CLIP vision tower (with projection).
        projection_dim (`int`, *optional*, defaults to 512):
            Size of the joint CLIP embedding space: the input size of phi and the size of every returned feature.
            Must equal `text_config.projection_dim` and `vision_config.projection_dim`.
        phi_hidden_size (`int`, *optional*):
            Width of phi's two hidden layers. Defaults to `4 * projection_dim`, as in the reference implementation.
        phi_dropout (`float`, *optional*, defaults to 0.5):
            Dropout probability after each hidden layer of phi (active in training mode only). 0.5 is the reference
            training default (`train_phi.py --phi_dropout`).
        placeholder_token (`str`, *optional*, defaults to `"$"`):
            The word that stands for the reference image in a text.
        placeholder_token_id (`int`, *optional*):
            Id of `placeholder_token` in the tokenizer the model is used with (259 in the OpenAI CLIP vocabulary). It
            is filled from the tokenizer by [`LinCIRModel.from_clip`] and the conversion script, never hard-coded.
        prompt_template (`str`, *optional*, defaults to `"a photo of $ that {}"`):
            Template for a modification text that has no placeholder: `{}` is replaced by the text. `None` disables it.

    Example:

    ```python
    >>> from transformers import CLIPTextConfig, CLIPVisionConfig
    >>> from hf_cir import LinCIRConfig, LinCIRModel

    >>> text_config = CLIPTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
    ...                              projection_dim=64)
    >>> vision_config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    ...                                  num_attention_heads=2, image_size=32, patch_size=8, projection_dim=64)
    >>> config = LinCIRConfig(text_config=text_config, vision_config=vision_config, projection_dim=64,
    ...                       placeholder_token_id=259)
    >>> config.phi_hidden_size
    256
    >>> model = LinCIRModel(config)
    ```"""

    model_type = "lincir"
    sub_configs_defaults = {"text_config": CLIPTextConfig, "vision_config": CLIPVisionConfig}

    def __init__(
        self,
        text_config: dict | CLIPTextConfig | None = None,
        vision_config: dict | CLIPVisionConfig | None = None,
        projection_dim: int = 512,
        phi_hidden_size: int | None = None,
        phi_dropout: float = 0.5,
        placeholder_token: str = PLACEHOLDER_TOKEN,
        placeholder_token_id: int | None = None,
        prompt_template: str | None = PROMPT_TEMPLATE,
        **kwargs,
    ):
        if text_config is None:
            text_config = CLIPTextConfig(projection_dim=projection_dim)
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
                    f"({projection_dim}): phi maps the {projection_dim}-d image embedding into the text tower."
                )
        if phi_hidden_size is None:
            phi_hidden_size = 4 * projection_dim
        if phi_hidden_size < 1:
            raise ValueError(f"`phi_hidden_size` must be positive, got {phi_hidden_size}.")
        if not 0.0 <= phi_dropout < 1.0:
            raise ValueError(f"`phi_dropout` must be in [0, 1), got {phi_dropout}.")
        if not isinstance(placeholder_token, str) or not placeholder_token.strip():
            raise ValueError(f"`placeholder_token` must be a non-empty string, got {placeholder_token!r}.")
        if placeholder_token_id is not None and not (0 <= placeholder_token_id < text_config.vocab_size):
            raise ValueError(
                f"`placeholder_token_id` ({placeholder_token_id}) must be a token id of the text tower's vocabulary "
                f"(0 to {text_config.vocab_size - 1})."
            )
        if prompt_template is not None:
            validate_prompt_template(prompt_template, placeholder_token)

        self.text_config = text_config
        self.vision_config = vision_config
        self.projection_dim = projection_dim
        self.phi_hidden_size = phi_hidden_size
        self.phi_dropout = phi_dropout
        self.placeholder_token = placeholder_token
        self.placeholder_token_id = placeholder_token_id
        self.prompt_template = prompt_template
        super().__init__(**kwargs)


def validate_prompt_template(prompt_template: str, placeholder_token: str) -> None:
    """Raise a `ValueError` unless `prompt_template` holds the placeholder and exactly one `{}`."""
    if prompt_template.count("{}") != 1:
        raise ValueError(f"`prompt_template` must contain `{{}}` exactly once, got {prompt_template!r}.")
    if placeholder_token not in prompt_template.replace("{}", " "):
        raise ValueError(
            f"`prompt_template` must contain the placeholder {placeholder_token!r}, got {prompt_template!r}."
        )


__all__ = ["LinCIRConfig"]
