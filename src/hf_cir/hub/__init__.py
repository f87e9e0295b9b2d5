"""The Hub side of hf-cir: model cards, saving with a card and uploading, and the remote-code layout."""

from .model_cards import (
    COMPODIFF_TAGS,
    LINCIR_LICENSE,
    LINCIR_TAGS,
    create_compodiff_model_card,
    create_lincir_model_card,
    is_hub_id,
    model_card_template_path,
    render_model_card,
    results_table,
)
from .remote_code import REMOTE_CODE_FILES, make_remote_code_folder
from .saving import push_to_hub, save_pretrained

__all__ = [
    "COMPODIFF_TAGS",
    "LINCIR_LICENSE",
    "LINCIR_TAGS",
    "REMOTE_CODE_FILES",
    "create_compodiff_model_card",
    "create_lincir_model_card",
    "is_hub_id",
    "make_remote_code_folder",
    "model_card_template_path",
    "push_to_hub",
    "render_model_card",
    "results_table",
    "save_pretrained",
]
