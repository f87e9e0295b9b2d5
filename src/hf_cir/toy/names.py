"""Short names for the shipped toy world on the command line: `toy:lincir`, `toy:compodiff`, `toy:clip` (the
checkpoints) and `toy:images` (the toy gallery's images, rendered once into a cache folder), so that every `--help`
example runs as written without a download.

`hf-cir` resolves them in one place (`hf_cir.commands._common.run_command`) for every argument of every command.
"""

from __future__ import annotations

import os
from pathlib import Path

from .checkpoints import toy_checkpoint

__all__ = ["TOY_PREFIX", "TOY_NAMES", "resolve_toy_name", "toy_images_folder"]

TOY_PREFIX = "toy:"
# Name -> what it stands for (for the error message and the README).
TOY_NAMES = {
    "lincir": "the shipped toy LinCIR model",
    "compodiff": "the shipped toy CompoDiff pipeline",
    "clip": "the shipped toy CLIP",
    "images": "the 1,920 toy gallery images (rendered on first use); toy:images/<file>.png names one of them",
}


def toy_images_folder() -> Path:
    """The toy gallery's images, rendered into `$XDG_CACHE_HOME/hf-cir/toy-images` (or `~/.cache/...`) on first use."""
    from .gallery import write_toy_images

    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    folder = Path(cache) / "hf-cir" / "toy-images"
    write_toy_images(folder)  # kept when already complete
    return folder


def resolve_toy_name(value: str) -> str:
    """The path a `toy:` name stands for; any other value unchanged.

    Raises:
        ValueError: an unknown `toy:` name, or a `toy:images/<file>` that is not a toy image.

    Example:

    ```python
    >>> from hf_cir.toy.names import resolve_toy_name
    >>> resolve_toy_name("toy:lincir").endswith("lincir")
    True
    >>> resolve_toy_name("photos/beach.jpg")
    'photos/beach.jpg'
    ```
    """
    if not isinstance(value, str) or not value.startswith(TOY_PREFIX):
        return value
    name, _, inside = value[len(TOY_PREFIX) :].partition("/")
    if name not in TOY_NAMES:
        known = ", ".join(f"{TOY_PREFIX}{key} ({meaning})" for key, meaning in TOY_NAMES.items())
        raise ValueError(f"Unknown toy name {value!r}; expected one of: {known}.")
    if name != "images":
        if inside:
            raise ValueError(f"{value!r}: {TOY_PREFIX}{name} names a folder; nothing can follow it.")
        return str(toy_checkpoint(name))
    folder = toy_images_folder()
    if not inside:
        return str(folder)
    path = folder / inside
    if "/" in inside or not path.is_file():
        raise ValueError(
            f"{value!r} is not a toy image: expected {TOY_PREFIX}images/<size>-<colour>-<shape>-<position>-"
            "<background>.png, e.g. toy:images/small-red-circle-left-plain.png."
        )
    return str(path)
