"""Contact sheets: each query (its image and text) followed by its top-k results with their scores, as one PNG."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from ..utils import atomic_file, load_image

__all__ = ["make_contact_sheet", "save_contact_sheet"]

_BACKGROUND = (255, 255, 255)
_QUERY_BACKGROUND = (232, 240, 254)
_INK = (20, 20, 20)


def _thumbnail(image: Image.Image | None, size: int) -> Image.Image:
    tile = Image.new("RGB", (size, size), (210, 210, 210))
    if image is None:
        return tile
    image = image.copy()
    image.thumbnail((size, size), Image.Resampling.BICUBIC)
    if image.width < size // 2 and image.height < size // 2:  # tiny images: enlarge, keep the pixels sharp
        scale = max(1, size // max(image.width, image.height))
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    tile.paste(image, ((size - image.width) // 2, (size - image.height) // 2))
    return tile


def _open(image: Any) -> Image.Image | None:
    if image is None:
        return None
    try:
        return load_image(image)
    except (OSError, ValueError, TypeError):
        return None


def make_contact_sheet(
    queries: Sequence[tuple[Any, str]],
    results: Sequence[Sequence[Any]],
    thumb_size: int = 128,
    caption_lines: int = 3,
) -> Image.Image:
    """One row per query: the query image (or a blank tile) with its text, then the results with rank and score.

    Args:
        queries: `(image or None, text)` per query; images may be paths, PIL images or arrays.
        results: Per query, the hits: [`SearchHit`]s or `(image, label)` pairs.
        thumb_size: Side of each tile in pixels.
        caption_lines: Text lines under each tile.

    Example:

    ```python
    >>> from PIL import Image
    >>> from hf_cir.retrieval import make_contact_sheet
    >>> sheet = make_contact_sheet([(Image.new("RGB", (8, 8)), "is red")], [[(Image.new("RGB", (8, 8)), "0.91")]])
    >>> sheet.size
    (272, 172)
    ```
    """
    if len(queries) != len(results):
        raise ValueError(f"Got {len(queries)} queries and {len(results)} result lists.")
    font = ImageFont.load_default()
    line_height = 12
    pad = 4
    columns = 1 + max((len(row) for row in results), default=0)
    cell_width = thumb_size + 2 * pad
    cell_height = thumb_size + caption_lines * line_height + 2 * pad
    sheet = Image.new("RGB", (columns * cell_width, max(1, len(queries)) * cell_height), _BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    chars = max(8, thumb_size // 6)

    def cell(column: int, row: int, image: Image.Image | None, text: str, background=None) -> None:
        x, y = column * cell_width, row * cell_height
        if background is not None:
            draw.rectangle([x, y, x + cell_width - 1, y + cell_height - 1], fill=background)
        sheet.paste(_thumbnail(image, thumb_size), (x + pad, y + pad))
        lines = textwrap.wrap(text, chars)[:caption_lines] or [""]
        for number, line in enumerate(lines):
            draw.text((x + pad, y + pad + thumb_size + number * line_height), line, fill=_INK, font=font)

    for row, ((query_image, query_text), hits) in enumerate(zip(queries, results)):
        cell(0, row, _open(query_image), f"Q: {query_text}", background=_QUERY_BACKGROUND)
        for column, hit in enumerate(hits, start=1):
            if hasattr(hit, "score"):
                image, label = hit.absolute_path or None, f"#{hit.rank} {hit.score:.3f} {Path(hit.path).name}"
            else:
                image, label = hit
            cell(column, row, _open(image), str(label))
    return sheet


def save_contact_sheet(path: str | os.PathLike, queries, results, **kwargs) -> Path:
    """Render [`make_contact_sheet`] and write it as a PNG (atomically)."""
    path = Path(path)
    sheet = make_contact_sheet(queries, results, **kwargs)
    with atomic_file(path, "wb") as handle:
        sheet.save(handle, format="PNG")
    return path
