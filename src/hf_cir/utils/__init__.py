"""Helpers shared by every model of hf-cir: images, tokenizers, atomic writes (imported on first use)."""

from .lazy import lazy_exports

_EXPORTS = {
    "IMAGE_EXTENSIONS": ".images",
    "ImageInput": ".images",
    "load_image": ".images",
    "to_rgb": ".images",
    "atomic_directory": ".io",
    "atomic_file": ".io",
    "build_clip_tokenizer": ".tokenization",
    "find_clip_bpe_file": ".tokenization",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
