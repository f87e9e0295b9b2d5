"""The toy gallery on disk: every attribute combination once, as PNG files, indexed by the shipped toy models.

`hf-cir app` serves it when no `--index` is given. The files are ordinary images and the indexes ordinary
`hf-cir index` folders, so `hf-cir search --index <folder>/lincir.index ...` answers the same queries.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..utils import atomic_directory, atomic_file
from ..utils.io import ArtefactKind
from .world import ToyAttributes, ToyTriplet, ToyWorld

__all__ = ["ToyGallery", "prepare_toy_gallery", "toy_image_name", "write_toy_images"]

# The variant and stream of the gallery renderings: those of the demo's and the benchmark's galleries.
_VARIANT, _STREAM = 0, "eval"
# Marks a folder as written by `prepare_toy_gallery`: only such a folder's contents are ever replaced.
_MARKER = "hf-cir-toy-gallery.json"


# The rendered images folder: `write_toy_images` replaces an incomplete one only if it holds nothing else.
TOY_IMAGES_FOLDER = ArtefactKind("toy images folder", None, lambda _: True, entries=("*-*-*-*-*.png",))


def toy_image_name(attributes: ToyAttributes) -> str:
    """The file name of a combination's image, its attributes in reading order.

    Example:

    ```python
    >>> from hf_cir.toy import ToyAttributes
    >>> from hf_cir.toy.gallery import toy_image_name
    >>> toy_image_name(ToyAttributes("circle", "red", "small", "left", "plain"))
    'small-red-circle-left-plain.png'
    ```
    """
    return f"{attributes.size}-{attributes.color}-{attributes.shape}-{attributes.position}-{attributes.background}.png"


def write_toy_images(folder: str | os.PathLike, world: ToyWorld | None = None) -> list[str]:
    """Render every combination of `world` once into `folder` (written atomically; kept when already complete).

    Returns the file names, in the order of `world.combinations` (1,920 images of 32 pixels for the default world).
    """
    world = world or ToyWorld()
    folder = Path(folder)
    names = [toy_image_name(attributes) for attributes in world.combinations]
    if folder.is_dir() and all((folder / name).is_file() for name in names):
        return names
    with atomic_directory(folder, overwrite=folder.is_dir(), kind=TOY_IMAGES_FOLDER) as tmp:
        for attributes, name in zip(world.combinations, names):
            world.render(attributes, _VARIANT, stream=_STREAM).save(tmp / name, format="PNG")
    return names


@dataclass
class ToyGallery:
    """The toy gallery's folders: `images`, and one index per toy model (`indexes["lincir"]`, ...)."""

    images: Path
    indexes: dict[str, Path]
    examples: list[tuple[str, str]]


def prepare_toy_gallery(
    folder: str | os.PathLike, models: dict, num_examples: int = 4, seed: int = 0, show_progress: bool = False
) -> ToyGallery:
    """Write the toy images under `folder/images` and index them with each of `models` into `folder/<name>.index`.

    An index already there is reused when it was built from the same images by the same image encoder (its
    gallery fingerprint); otherwise it is rebuilt. `examples` are held-out toy queries as `(image name, text)`:
    the reference is a gallery image, the target a combination no toy model saw in training.

    Args:
        folder: Where the gallery lives (created when missing).
        models: Retrieval models by name, e.g. `{"lincir": ..., "compodiff": ...}`.
        num_examples: How many example queries.
        seed: Picks the example queries.
        show_progress: Show a progress bar while indexing.
    """
    from ..retrieval import GalleryIndex
    from .demo import select_demo_queries

    folder = Path(folder)
    marker = folder / _MARKER
    if folder.is_dir() and any(folder.iterdir()) and not marker.is_file():
        raise FileExistsError(
            f"{folder} is not empty and was not written by hf-cir (no {_MARKER}); choose another folder for the toy "
            "gallery."
        )
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_file(marker, "w") as handle:
        json.dump({"format": "hf-cir-toy-gallery"}, handle)
    world = ToyWorld()
    images = folder / "images"
    names = write_toy_images(images, world)
    indexes = {}
    for name, model in models.items():
        path = folder / f"{name}.index"
        if not _is_current(path, model, images, len(names)):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                GalleryIndex.build(
                    model, images, path, batch_size=256, overwrite=path.exists(), show_progress=show_progress
                )
        indexes[name] = path
    triplets: list[ToyTriplet] = select_demo_queries(world, num_examples, seed) if num_examples else []
    examples = [(toy_image_name(t.reference), t.text) for t in triplets]
    return ToyGallery(images=images, indexes=indexes, examples=examples)


def _is_current(path: Path, model, images: Path, count: int) -> bool:
    from ..retrieval import GalleryIndex

    if not path.is_dir():
        return False
    try:
        index = GalleryIndex.load(path)
    except (OSError, ValueError):
        return False
    return (
        len(index) == count
        and Path(index.info.get("root", "")) == images.resolve()
        and index.info.get("fingerprint") == model.gallery_fingerprint()
    )
