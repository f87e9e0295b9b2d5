"""Opening images the same way everywhere: any PIL mode in, RGB out, with errors that name the file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

ImageInput = str | os.PathLike | Image.Image | np.ndarray

__all__ = ["ImageInput", "IMAGE_EXTENSIONS", "load_image", "to_rgb"]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


def to_rgb(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Convert any PIL image to RGB.

    Transparent pixels (RGBA, LA, palette images with a transparency entry) are composited over
    `background` instead of keeping whatever colour the transparent pixels happen to store; grayscale,
    16-bit, CMYK and palette images are converted with PIL's own rules.
    """
    if image.mode == "RGB":
        return image
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, background + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = array.max() if array.size and array.max() > 0 else 1.0
        return Image.fromarray((array / peak * 255.0).astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


def load_image(image: ImageInput, name: str = "image") -> Image.Image:
    """Return `image` as an RGB PIL image.

    Args:
        image: A path, a PIL image, or an `(H, W)`, `(H, W, 1)`, `(H, W, 3)` or `(H, W, 4)` array: integers in
            [0, 255], or floats in [0, 1].
        name: How the argument is called in error messages.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: the file is not a readable image (or too large to decode safely), or the array has an
            unsupported shape or non-finite values.
        TypeError: `image` is of another type.

    Example:

    ```python
    >>> from PIL import Image
    >>> from hf_cir.utils import load_image
    >>> load_image(Image.new("L", (4, 4))).mode
    'RGB'
    ```
    """
    if isinstance(image, Image.Image):
        return to_rgb(image)
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"`{name}`: no such file: {path}")
        try:
            with Image.open(path) as opened:
                opened.load()
                return to_rgb(opened)
        except Image.DecompressionBombError as error:
            raise ValueError(f"`{name}`: {path} is refused as a possible decompression bomb ({error}).") from error
        except (UnidentifiedImageError, OSError, ValueError) as error:
            raise ValueError(f"`{name}`: {path} is not a readable image ({error}).") from error
    if isinstance(image, np.ndarray):
        if image.ndim == 2 or (image.ndim == 3 and image.shape[-1] in (1, 3, 4)):
            array = image
            real = np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_
            if not real or np.issubdtype(array.dtype, np.complexfloating):
                raise ValueError(f"`{name}`: expected an array of real numbers, got dtype {array.dtype}.")
            if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
                raise ValueError(f"`{name}`: the array holds non-finite pixel values (NaN or infinity).")
            if np.issubdtype(array.dtype, np.floating):
                # Float images follow the usual convention of values in [0, 1].
                array = np.clip(array, 0.0, 1.0) * 255.0 + 0.5
            array = np.clip(array, 0, 255).astype(np.uint8)
            if array.ndim == 3 and array.shape[-1] == 1:
                array = array[..., 0]
            return to_rgb(Image.fromarray(array))
        raise ValueError(
            f"`{name}`: expected an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) array, got shape {image.shape}."
        )
    raise TypeError(f"`{name}` must be a path, a PIL image or a numpy array, got {type(image).__name__}.")
