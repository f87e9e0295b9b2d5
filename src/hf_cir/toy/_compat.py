"""Compatibility with a placeholder probe that assumes arbitrary words tokenize.

`hf_cir.models.lincir.processing_lincir.get_placeholder_token_id` checks the placeholder inside the sentence
"a $ b"; the toy tokenizer raises on "b" (it refuses unknown words instead of mapping them to `<unk>`). Until the
probe uses only the placeholder, `patch_placeholder_probe()` wraps it: when the original probe raises on such a
tokenizer, the placeholder's id is checked with a text made of the placeholder alone. With a probe that already
works it changes nothing.
"""

from __future__ import annotations

import functools

__all__ = ["patch_placeholder_probe"]


def patch_placeholder_probe() -> None:
    from ..models.lincir import processing_lincir

    original = processing_lincir.get_placeholder_token_id
    if getattr(original, "_toy_compatible", False):
        return

    @functools.wraps(original)
    def get_placeholder_token_id(tokenizer, placeholder_token: str = "$") -> int:
        try:
            return original(tokenizer, placeholder_token)
        except Exception as error:  # noqa: BLE001 - the tokenizers backend raises a bare Exception
            if isinstance(error, ValueError):
                raise
            alone = tokenizer(placeholder_token, add_special_tokens=False)["input_ids"]
            twice = tokenizer(f"{placeholder_token} {placeholder_token}", add_special_tokens=False)["input_ids"]
            if len(alone) != 1 or twice != alone * 2:
                raise ValueError(
                    f"The tokenizer has no single token for the placeholder {placeholder_token!r} (ids {alone})."
                ) from error
            return alone[0]

    get_placeholder_token_id._toy_compatible = True
    processing_lincir.get_placeholder_token_id = get_placeholder_token_id
