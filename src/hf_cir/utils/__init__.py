"""Helpers shared by every model of hf-cir: images, tokenizers, atomic writes."""

from .images import IMAGE_EXTENSIONS, ImageInput, load_image, to_rgb
from .io import atomic_directory, atomic_file
from .tokenization import build_clip_tokenizer, find_clip_bpe_file

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageInput",
    "atomic_directory",
    "atomic_file",
    "build_clip_tokenizer",
    "find_clip_bpe_file",
    "load_image",
    "to_rgb",
]
