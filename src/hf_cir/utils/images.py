"""Opening images the same way everywhere: any PIL mode in, RGB out, with errors that name the file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ImageInput = str | os.PathLike | Image.Image | np.ndarray

__all__ = [
    "ImageInput",
    "IMAGE_EXTENSIONS",
    "MAX_ASPECT_RATIO",
    "check_image_size",
    "check_pixel_budget",
    "load_image",
    "to_rgb",
]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})

# The longest side may be at most this many times the shortest. CLIP's image processors resize the *shortest* side to
# the model's size first (224 or 336 pixels), so a 20000x1 strip would become a 224x4,480,000 image (gigabytes)
# before the centre crop; 50:1 keeps every real panorama and bounds that step to about 30 MB per image at 224 px.
MAX_ASPECT_RATIO = 50

_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def check_image_size(width: int, height: int, name: str = "image", path: str | os.PathLike | None = None) -> None:
    """Refuse an empty image, or one whose aspect ratio exceeds [`MAX_ASPECT_RATIO`], with a `ValueError` naming it.

    Example:

    ```python
    >>> from hf_cir.utils.images import check_image_size
    >>> check_image_size(20000, 1, "images[0]")
    Traceback (most recent call last):
    ...
    ValueError: `images[0]` is 20000x1 pixels: its aspect ratio 20000:1 exceeds 50:1 (CLIP's resize to 224 pixels on the short side would make it 4480000x224); crop or pad it first.
    ```
    """
    what = f"`{name}`" if path is None else f"`{name}` ({path})"
    if width < 1 or height < 1:
        raise ValueError(f"{what} is empty ({width}x{height} pixels).")
    ratio = max(width, height) / min(width, height)
    if ratio > MAX_ASPECT_RATIO:
        long_side = round(ratio * 224)
        at_224 = f"{long_side}x224" if height < width else f"224x{long_side}"
        raise ValueError(
            f"{what} is {width}x{height} pixels: its aspect ratio {ratio:.0f}:1 exceeds {MAX_ASPECT_RATIO}:1 (CLIP's "
            f"resize to 224 pixels on the short side would make it {at_224}); crop or pad it first."
        )


def check_pixel_budget(
    width: int, height: int, max_pixels: int | None, name: str = "image", path: str | os.PathLike | None = None
) -> None:
    """Refuse an image of more than `max_pixels` pixels (`None`: no budget) with a `ValueError` naming it.

    Call it with the size from the header (`Image.open` without `.load()`): nothing is decoded. PIL's own
    decompression-bomb limit only warns below 2 x `Image.MAX_IMAGE_PIXELS` (179 Mpixel); a 12000x12000 1-bit PNG of
    20 KB decodes into 144 Mpixel (over 400 MB as RGB).

    Example:

    ```python
    >>> from hf_cir.utils.images import check_pixel_budget
    >>> check_pixel_budget(12000, 12000, 50_000_000, "reference image")
    Traceback (most recent call last):
    ...
    ValueError: `reference image` is 12000x12000 = 144,000,000 pixels, more than the 50,000,000 accepted here; downscale it first.
    ```
    """
    if max_pixels is not None and width * height > max_pixels:
        what = f"`{name}`" if path is None else f"`{name}` ({path})"
        raise ValueError(
            f"{what} is {width}x{height} = {width * height:,} pixels, more than the {max_pixels:,} accepted here; "
            "downscale it first."
        )


def to_rgb(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Convert any PIL image to RGB: the one conversion of every input path (the CLI, the index, the app, and
    [`LinCIRProcessor`] / [`CompoDiffPipeline`] when hf-cir is installed).

    - Transparent pixels (RGBA, LA, PA, premultiplied modes, and any image with a `transparency` entry: palette,
      grayscale or RGB PNGs with a tRNS chunk) are composited over `background` instead of keeping whatever colour
      the transparent pixels happen to store.
    - 16-bit grayscale (`I;16*`, and `I`, which older Pillows give 16-bit PNGs) is scaled from the 16-bit range to
      8 bits (65535 -> 255; values outside [0, 65535] are clipped), the same for every image: PIL's own conversion
      clips everything above 255 to white.
    - Every other mode (`1`, `L`, `P`, `CMYK`, `YCbCr`, `F`, ...) follows PIL's own rules (`F` is read as 0-255,
      clipped).

    Example:

    ```python
    >>> import numpy as np
    >>> from PIL import Image
    >>> from hf_cir.utils import to_rgb
    >>> sixteen_bit = Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.uint16))
    >>> np.asarray(to_rgb(sixteen_bit))[0, :, 0].tolist()
    [0, 128, 255]
    ```
    """
    has_alpha = image.mode in _ALPHA_MODES or "transparency" in image.info
    if image.mode == "RGB" and not has_alpha:
        return image
    if has_alpha:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, background + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if image.mode in _SIXTEEN_BIT_MODES:
        array = np.clip(np.asarray(image, dtype=np.float64), 0.0, 65535.0)
        return Image.fromarray(np.rint(array * (255.0 / 65535.0)).astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


def load_image(image: ImageInput, name: str = "image", max_pixels: int | None = None) -> Image.Image:
    """Return `image` as an RGB PIL image.

    Args:
        image: A path, a PIL image, or an `(H, W)`, `(H, W, 1)`, `(H, W, 3)` or `(H, W, 4)` array: integers in
            [0, 255], or floats in [0, 1].
        name: How the argument is called in error messages.
        max_pixels: Refuse a file (or PIL image) of more pixels, read from its header before anything is decoded
            ([`check_pixel_budget`]); default: no budget beyond PIL's decompression-bomb limit.

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
        check_image_size(*image.size, name=name)
        check_pixel_budget(*image.size, max_pixels, name=name)
        return to_rgb(image)
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"`{name}`: no such file: {path}")
        try:
            with Image.open(path) as opened:
                size = opened.size  # from the header: refused before any pixel is decoded
                within_budget = max_pixels is None or size[0] * size[1] <= max_pixels
                if size[0] >= 1 and size[1] >= 1 and max(size) / min(size) <= MAX_ASPECT_RATIO and within_budget:
                    opened.load()
                    # EXIF orientation applied, as transformers' and diffusers' own loaders do.
                    return to_rgb(ImageOps.exif_transpose(opened))
        except Image.DecompressionBombError as error:
            raise ValueError(f"`{name}`: {path} is refused as a possible decompression bomb ({error}).") from error
        except (UnidentifiedImageError, OSError, ValueError) as error:
            raise ValueError(f"`{name}`: {path} is not a readable image ({error}).") from error
        check_image_size(*size, name=name, path=path)
        check_pixel_budget(*size, max_pixels, name=name, path=path)
    if isinstance(image, np.ndarray):
        if image.ndim == 2 or (image.ndim == 3 and image.shape[-1] in (1, 3, 4)):
            check_image_size(image.shape[1], image.shape[0], name=name)
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
