"""The embedded default: composed queries on the toy world with the shipped LinCIR and CompoDiff checkpoints.

`hf-cir demo` renders the toy gallery (every attribute combination once), runs a handful of held-out composed
queries (a reference image and a modification text) with LinCIR, CompoDiff and the sum-of-embeddings baseline,
prints the ranked results and a recall table, and writes a PNG contact sheet.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ..families import method_spec
from ..retrieval import GalleryIndex
from ..retrieval.query import ComposedQuery, retrieve
from ..utils import atomic_file
from .world import ToyAttributes, ToyTriplet, ToyWorld

__all__ = ["DemoQuery", "make_demo_sheet", "run_demo", "select_demo_queries"]

# (label, model name in `load_toy_models`, method) of the methods shown per query.
DEMO_METHODS = (
    ("sum baseline", "lincir", "sum"),
    ("LinCIR", "lincir", "lincir"),
    ("CompoDiff", "compodiff", "compodiff"),
)


@dataclass
class DemoQuery:
    """One demo query and, per method, its top results as `(gallery index, score)`."""

    triplet: ToyTriplet
    image: Image.Image
    results: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    target_ranks: dict[str, int] = field(default_factory=dict)


def select_demo_queries(world: ToyWorld, num_queries: int = 6, seed: int = 0) -> list[ToyTriplet]:
    """Held-out triplets for the demo: a varied handful (every attribute changed at least once when possible,
    and some two-change queries)."""
    if num_queries < 1:
        raise ValueError(f"`num_queries` must be at least 1; got {num_queries}.")
    candidates = world.triplets("held_out", num_triplets=20 * num_queries, seed=seed)
    chosen: list[ToyTriplet] = []
    seen: set[tuple[str, ...]] = set()
    for triplet in candidates:  # first one query per kind of change, then fill up
        if triplet.changed not in seen:
            seen.add(triplet.changed)
            chosen.append(triplet)
        if len(chosen) == num_queries:
            break
    for triplet in candidates:
        if len(chosen) == num_queries:
            break
        if triplet not in chosen:
            chosen.append(triplet)
    return chosen


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def make_demo_sheet(
    queries: list[DemoQuery], gallery: list[ToyAttributes], render, methods: list[str], thumb: int = 72
) -> Image.Image:
    """A contact sheet: per query a block with the reference image and the modification text on the left and, per
    method, a row of its top results (the target framed in green, with rank and score under each tile)."""
    pad, label_width, text_height = 6, 150, 26
    top_k = max(len(hits) for q in queries for hits in q.results.values())
    row_height = thumb + text_height
    block_height = len(methods) * row_height + pad * 2
    query_width = thumb * 2 + pad * 2
    width = query_width + label_width + top_k * (thumb + pad) + pad
    sheet = Image.new("RGB", (width, block_height * len(queries) + 40), "white")
    draw = ImageDraw.Draw(sheet)
    title, small = _font(16), _font(11)
    draw.text(
        (pad, 10),
        "hf-cir toy demo: reference + modification text -> top results (green frame = target)",
        fill="black",
        font=title,
    )
    for row, query in enumerate(queries):
        top = 40 + row * block_height
        if row % 2 == 1:
            draw.rectangle([0, top, width, top + block_height - 1], fill=(244, 246, 250))
        reference = query.image.resize((thumb * 2 - 8, thumb * 2 - 8), Image.Resampling.NEAREST)
        sheet.paste(reference, (pad, top + pad))
        words, lines, line = query.triplet.text.split(), [], ""
        for word in words:
            candidate = f"{line} {word}".strip()
            if len(candidate) > 22 and line:
                lines.append(line)
                line = word
            else:
                line = candidate
        lines.append(line)
        for number, text in enumerate(lines[:4]):
            draw.text((pad, top + pad + thumb * 2 - 4 + number * 13), text, fill=(20, 20, 140), font=small)
        for m, method in enumerate(methods):
            y = top + pad + m * row_height
            rank = query.target_ranks.get(method)
            draw.text((query_width, y + thumb // 2 - 14), method, fill="black", font=_font(13))
            if rank is not None:
                draw.text((query_width, y + thumb // 2 + 4), f"target at #{rank + 1}", fill=(90, 90, 90), font=small)
            for k, (index, score) in enumerate(query.results.get(method, [])):
                x = query_width + label_width + k * (thumb + pad)
                tile = render(gallery[index]).resize((thumb, thumb), Image.Resampling.NEAREST)
                if gallery[index] == query.triplet.target:
                    draw.rectangle([x - 3, y - 3, x + thumb + 2, y + thumb + 2], fill=(30, 170, 60))
                sheet.paste(tile, (x, y))
                draw.text((x, y + thumb + 2), f"#{k + 1}  {score:.3f}", fill="black", font=small)
    return sheet


def run_demo(
    output: str | os.PathLike = "toy_runs/demo.png",
    checkpoints_dir: str | os.PathLike | None = None,
    num_queries: int = 6,
    top_k: int = 5,
    seed: int = 0,
    recall_queries: int = 200,
    device: str | None = "cpu",
    print_fn=print,
) -> dict:
    """Run the toy demo; returns `{"queries": [...], "table": str or None, "sheet": path, "seconds": float}`.

    Example:

    ```python
    >>> from hf_cir.toy.demo import run_demo
    >>> summary = run_demo("toy_runs/demo.png", num_queries=2, recall_queries=0)  # doctest: +SKIP
    ```
    """
    from .benchmark import evaluate_toy_models, format_toy_table, load_toy_models

    if top_k < 1:
        raise ValueError(f"`top_k` must be at least 1; got {top_k}.")
    if recall_queries < 0:
        raise ValueError(f"`recall_queries` must be >= 0; got {recall_queries}.")
    started = time.perf_counter()
    models = load_toy_models(checkpoints_dir, device=device)
    methods = [(label, name, method) for label, name, method in DEMO_METHODS if name in models]
    missing = [label for label, name, _ in DEMO_METHODS if name not in models]
    if missing:
        print_fn(f"Note: no checkpoint for {', '.join(missing)}; showing the others.")

    world = ToyWorld()
    gallery = list(world.combinations)

    def render(attributes: ToyAttributes) -> Image.Image:
        return world.render(attributes, 2 * seed, stream="eval")

    gallery_images = [render(attributes) for attributes in gallery]
    ids = [str(number) for number in range(len(gallery))]
    # Each model's gallery as an in-memory index: the demo ranks with the one query path (`retrieve`) every caller uses.
    indexes = {
        name: GalleryIndex(ids, models[name].encode_images(gallery_images), Path("."), {"model": name})
        for name in {name for _, name, _ in methods}
    }
    print_fn(
        f"Toy gallery: {len(gallery)} images (every shape x color x size x position x background once); "
        f"queries have held-out targets, never seen in training.\n"
    )

    queries = [
        DemoQuery(t, world.render(t.reference, 2 * seed + 1, stream="eval"))
        for t in select_demo_queries(world, num_queries, seed)
    ]
    for label, name, method in methods:
        for query in queries:
            text = query.triplet.text if method_spec(method).text != "refused" else None
            composed = ComposedQuery(text=text, image=query.image)
            hits = retrieve(models[name], indexes[name], composed, method, len(gallery)).hits  # the whole ranking
            query.results[label] = [(int(hit.path), hit.score) for hit in hits[:top_k]]
            target = str(gallery.index(query.triplet.target))
            query.target_ranks[label] = next(hit.rank for hit in hits if hit.path == target) - 1

    for number, query in enumerate(queries, start=1):
        triplet = query.triplet
        print_fn(f'Query {number}: [{triplet.reference.describe()}] + "{triplet.text}"')
        print_fn(f"  target: {triplet.target.describe()}")
        for label, _, _ in methods:
            print_fn(f"  {label} (target ranked #{query.target_ranks[label] + 1}):")
            for k, (index, score) in enumerate(query.results[label], start=1):
                mark = "  <- target" if gallery[index] == triplet.target else ""
                print_fn(f"    {k}. {score:.3f}  {gallery[index].describe()}{mark}")
        print_fn("")

    sheet = make_demo_sheet(queries, gallery, render, [label for label, _, _ in methods])
    output = Path(output)
    with atomic_file(output, "wb") as handle:
        sheet.save(handle, format="PNG")

    table = None
    if recall_queries:
        results = evaluate_toy_models(seeds=(seed,), num_queries=recall_queries, models=models)
        table = format_toy_table(results)
        print_fn(
            f"Recall (%) on {recall_queries} held-out toy queries, each with its own 101-image gallery "
            "(the target, its 20 one-attribute neighbours, the reference, random others):"
        )
        print_fn(table)
        print_fn("Full benchmark (600 queries, two seeds): hf-cir evaluate --benchmark toy\n")
    seconds = time.perf_counter() - started
    print_fn(f"Wrote the contact sheet {output} ({seconds:.0f} s).")
    return {"queries": queries, "table": table, "sheet": output, "seconds": seconds}
