# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""Configuration of LinCIR and its textual-inversion siblings SEARLE and Pic2Word.

This file is self-contained (it imports only `transformers`): `save_pretrained` copies it next to the weights so that
`AutoConfig.from_pretrained(folder, trust_remote_code=True)` works without hf-cir installed.
"""

from __future__ import annotations

from transformers import CLIPTextConfig, CLIPVisionConfig, PretrainedConfig

PLACEHOLDER_TOKEN = "$"
PROMPT_TEMPLATE = "a photo of $ that {}"
# The inversion networks: "mlp" is LinCIR's and SEARLE's Phi (Linear-GELU-Dropout blocks, then a Linear), "im2text"
# Pic2Word's IM2TEXT (Linear-Dropout-ReLU blocks, then `fc_out`).
PHI_TYPES = ("mlp", "im2text")
# Which placeholders of a text receive the pseudo word: every one (LinCIR) or the first (SEARLE's and Pic2Word's code).
PLACEHOLDER_REPLACEMENTS = ("all", "first")


class LinCIRConfig(PretrainedConfig):
    r"""
    This is the configuration class to store the configuration of a [`LinCIRModel`]. It holds the configurations of the
    CLIP text and vision towers, the architecture and size of the phi network that maps an image embedding to a
    pseudo-word token, and the placeholder token that marks where that pseudo word goes in a text.

    LinCIR was proposed in [Language-only Training of Zero-shot Composed Image Retrieval](https://arxiv.org/abs/2312.01998)
    by Geonmo Gu, Sanghyuk Chun, Wonjae Kim, Yoohoon Kang and Sangdoo Yun (CVPR 2024). The same model class also holds
    the two zero-shot methods LinCIR compares with, which share its idea (a network turns the image embedding into a
    word of the text tower) and differ only in the settings below:

    | method | `phi_type` | `phi_hidden_size` | `phi_dropout` | `placeholder_token` | `prompt_template` | `placeholder_replacement` |
    | --- | --- | --- | --- | --- | --- | --- |
    | LinCIR | `"mlp"` | 4 x `projection_dim` | 0.5 | `$` | `a photo of $ that {}` | `"all"` |
    | [SEARLE](https://arxiv.org/abs/2303.15247) (ICCV 2023) | `"mlp"` | 4 x `projection_dim` | 0.5 | `$` | `a photo of $ that {}` | `"first"` |
    | [Pic2Word](https://arxiv.org/abs/2302.03084) (CVPR 2023) | `"im2text"` | 512 | 0.1 | `*` | `a photo of * , {}` | `"first"` |

    None of the three normalises the image embedding before phi (`normalize_image_embeds=False`).

    Args:
        text_config (`dict` or [`CLIPTextConfig`], *optional*):
            Configuration of the CLIP text tower (with projection).
        vision_config (`dict` or [`CLIPVisionConfig`], *optional*):
            Configuration of the CLIP vision tower (with projection).
        projection_dim (`int`, *optional*, defaults to 512):
            Size of the joint CLIP embedding space: the input size of phi and the size of every returned feature.
            Must equal `text_config.projection_dim` and `vision_config.projection_dim`.
        phi_type (`str`, *optional*, defaults to `"mlp"`):
            The architecture of phi: `"mlp"` (LinCIR's and SEARLE's `Phi`: `phi_num_hidden_layers` blocks of
            Linear-GELU-Dropout, then a Linear) or `"im2text"` (Pic2Word's `IM2TEXT`: `phi_num_hidden_layers` blocks of
            Linear-Dropout-ReLU, then a Linear `fc_out`).
        phi_hidden_size (`int`, *optional*):
            Width of phi's hidden layers. Defaults to `4 * projection_dim`, as in the LinCIR and SEARLE references.
        phi_num_hidden_layers (`int`, *optional*, defaults to 2):
            Number of hidden layers of phi (2 in all three references; Pic2Word's `n_layer`).
        phi_dropout (`float`, *optional*, defaults to 0.5):
            Dropout probability after each hidden layer of phi (active in training mode only). 0.5 is the reference
            training default (`train_phi.py --phi_dropout`).
        normalize_image_embeds (`bool`, *optional*, defaults to `False`):
            Whether the image embedding is L2-normalised before phi.
        placeholder_replacement (`str`, *optional*, defaults to `"all"`):
            `"all"`: every placeholder of a text receives the pseudo word (LinCIR); `"first"`: only the first one, the
            others stay the plain placeholder word (SEARLE's and Pic2Word's own code).
        method_name (`str`, *optional*, defaults to `"lincir"`):
            The zero-shot method these weights implement (`"lincir"`, `"searle"`, `"pic2word"`, or a name of your
            own); retrieval tools and model cards use it as the model's own method.
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
        phi_type: str = "mlp",
        phi_hidden_size: int | None = None,
        phi_num_hidden_layers: int = 2,
        phi_dropout: float = 0.5,
        normalize_image_embeds: bool = False,
        placeholder_token: str = PLACEHOLDER_TOKEN,
        placeholder_token_id: int | None = None,
        placeholder_replacement: str = "all",
        prompt_template: str | None = PROMPT_TEMPLATE,
        method_name: str = "lincir",
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
        if phi_type not in PHI_TYPES:
            raise ValueError(f"`phi_type` must be one of {PHI_TYPES}, got {phi_type!r}.")
        if phi_hidden_size is None:
            phi_hidden_size = 4 * projection_dim
        if phi_hidden_size < 1:
            raise ValueError(f"`phi_hidden_size` must be positive, got {phi_hidden_size}.")
        if not isinstance(phi_num_hidden_layers, int) or phi_num_hidden_layers < 1:
            raise ValueError(f"`phi_num_hidden_layers` must be a positive integer, got {phi_num_hidden_layers!r}.")
        if placeholder_replacement not in PLACEHOLDER_REPLACEMENTS:
            raise ValueError(
                f"`placeholder_replacement` must be one of {PLACEHOLDER_REPLACEMENTS}, got {placeholder_replacement!r}."
            )
        if not isinstance(method_name, str) or not method_name.isidentifier():
            raise ValueError(f"`method_name` must be a short identifier like 'searle', got {method_name!r}.")
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
        self.phi_type = phi_type
        self.phi_hidden_size = phi_hidden_size
        self.phi_num_hidden_layers = phi_num_hidden_layers
        self.phi_dropout = phi_dropout
        self.normalize_image_embeds = bool(normalize_image_embeds)
        self.placeholder_token = placeholder_token
        self.placeholder_token_id = placeholder_token_id
        self.placeholder_replacement = placeholder_replacement
        self.prompt_template = prompt_template
        self.method_name = method_name
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
