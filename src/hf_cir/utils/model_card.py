"""Rendering model cards from the Jinja templates in `model_cards/` through `huggingface_hub.ModelCard`."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

__all__ = ["model_card_template_path", "render_model_card"]


def model_card_template_path(name: str) -> Path:
    """Path of the template `model_cards/{name}.md`.

    Looks in the installed wheel first (`hf_cir/model_card_templates/`), then in the source checkout.
    """
    candidates = [
        Path(__file__).resolve().parent.parent / "model_card_templates" / f"{name}.md",
        Path(__file__).resolve().parents[3] / "model_cards" / f"{name}.md",
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"No model card template named {name!r}; looked in: {', '.join(map(str, candidates))}")


def render_model_card(template: str, card_data: ModelCardData, **template_vars) -> ModelCard:
    """Render `model_cards/{template}.md` with `card_data` as its YAML header and `template_vars` in its body.

    Example:

    ```python
    >>> from huggingface_hub import ModelCardData
    >>> from hf_cir.utils import render_model_card
    >>> card = render_model_card("lincir", ModelCardData(license="cc-by-nc-4.0"), model_id="me/lincir")  # doctest: +SKIP
    ```
    """
    return ModelCard.from_template(card_data, template_path=str(model_card_template_path(template)), **template_vars)
