"""Obvious one-attribute composed queries over the whole toy gallery (every combination once), with phrasings of our
own (not the benchmark's modification templates), all five attributes, each model with its own defaults through the
public API (`load_retrieval_model(...).encode_queries`)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from hf_cir.retrieval import load_retrieval_model
from hf_cir.toy import ATTRIBUTES, ToyWorld

# One phrasing per attribute, from the toy vocabulary; `{value}` is the target's value.
PHRASINGS = {
    "shape": "turn the object into a {value}",
    "color": "make the object {value}",
    "size": "change the object to {value}",
    "position": "move the object to the {value}",
    "background": "place it on a {value} background",
}


def one_attribute_queries(per_attribute: int = 12, seed: int = 1234):
    """`per_attribute` queries per attribute: a random reference (any combination) and a random new value."""
    world = ToyWorld()
    rng = np.random.default_rng(seed)
    queries = []
    for name, values in ATTRIBUTES.items():
        for _ in range(per_attribute):
            reference = world.combinations[int(rng.integers(len(world.combinations)))]
            value = str(rng.choice([v for v in values if v != getattr(reference, name)]))
            text = PHRASINGS[name].format(value=value).replace("a orange", "an orange")
            queries.append((name, reference, text, reference.replace(**{name: value})))
    return world, queries


def one_attribute_ranks(folder, method: str | None = None, per_attribute: int = 12) -> dict[str, list[int]]:
    """0-based rank of each query's target among the 1,920 gallery images, per attribute (the reference's own
    gallery rendering stays in the gallery)."""
    world, queries = one_attribute_queries(per_attribute)
    model = load_retrieval_model(folder, device="cpu")
    gallery = [world.render(c, 0, stream="eval") for c in world.combinations]
    gallery_embeds = F.normalize(torch.cat([model.encode_images(gallery[i : i + 512]) for i in range(0, 1920, 512)]))
    references = [world.render(reference, 1, stream="eval") for _, reference, _, _ in queries]
    features = model.encode_queries([text for _, _, text, _ in queries], images=references, method=method)
    scores = F.normalize(features, dim=-1) @ gallery_embeds.T
    ranks: dict[str, list[int]] = {}
    for row, (name, _, _, target) in zip(scores, queries):
        ranks.setdefault(name, []).append(int((row >= row[target.index]).sum()) - 1)
    return ranks


def recall(ranks: dict[str, list[int]], k: int) -> float:
    every = [r for per in ranks.values() for r in per]
    return 100.0 * sum(r < k for r in every) / len(every)
