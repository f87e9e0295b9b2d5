"""A composed query and the one path from a query to ranked gallery images.

[`ComposedQuery`] is what every caller builds: `hf-cir search` from its options, the app from the page or its API,
the evaluation from a benchmark's annotations, the toy demo from the toy world. What each method needs from it is
stated once, in the model-family registry (`hf_cir.families.MethodSpec`), and checked by [`ComposedQuery.check`].
[`retrieve`] runs `model + index + query -> hits`; [`embed_queries`] is its embedding step for many queries at once
(the evaluation ranks those embeddings against a benchmark's own galleries).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..families import QUERY_ARGUMENT_NAMES, MethodSpec, method_spec

if TYPE_CHECKING:
    import torch

    from .index import GalleryIndex, SearchHit
    from .models import RetrievalModel

__all__ = ["ComposedQuery", "Retrieval", "embed_queries", "reference_embedding", "retrieve"]


@dataclass
class ComposedQuery:
    """A reference image and a modification text (and, for the methods that take them, a mask and a negative text).

    The reference is one of: `image` (a file path, a PIL image or an array), `image_embeds` (its embedding, e.g. a
    stored gallery row, `[D]` or `[1, D]`), or `reference_id` (an image of the searched index: its stored embedding
    is reused and it is left out of the results unless asked).

    Example:

    ```python
    >>> from hf_cir.retrieval.query import ComposedQuery
    >>> ComposedQuery(text="is red", reference_id="chair.jpg").check("lincir").name
    'lincir'
    >>> ComposedQuery(text="is red").check("lincir")
    Traceback (most recent call last):
    ...
    ValueError: method 'lincir' needs a reference image.
    ```
    """

    text: str | None = None
    image: Any = None
    image_embeds: Any = None
    reference_id: str | None = None
    negative_text: str | None = None
    mask: Any = None

    @property
    def has_reference(self) -> bool:
        return self.image is not None or self.image_embeds is not None or bool(self.reference_id)

    def check(self, method: str, names: Mapping[str, str] | None = None, label: str | None = None) -> MethodSpec:
        """The rules of `method` (from the family registry) applied to this query; returns the method's spec.

        Args:
            method: A method name (`lincir`, `compodiff`, `image`, ...).
            names: How the caller names the inputs in errors (`text`, `reference`, `mask`, `negative_text`).
            label: How the caller names the method in errors.
        """
        if (self.image is not None) + (self.image_embeds is not None) + bool(self.reference_id) > 1:
            raise ValueError("Give the reference either as an image, as `image_embeds` or as `reference_id`, not two.")
        spec = method_spec(method)
        spec.check(
            text=self.text,
            reference=self.has_reference,
            mask=self.mask is not None,
            negative_text=self.negative_text,
            reference_image=self.image_embeds is None,
            names=dict(names or {}),
            label=label,
        )
        return spec


@dataclass
class Retrieval:
    """What [`retrieve`] found: the hits, the method, the left-out reference, and per-stage timings in seconds
    (`encode`: the reference's embedding, `compose`: the query embedding, `search`: the ranking) with `encode_source`
    (`"image encoder"`, `"stored"`, `"given"`, `"none"`; `", shared"` when a cache held it)."""

    hits: list[SearchHit]
    method: str
    excluded: str | None
    query_embeds: Any
    timings: dict[str, Any] = field(default_factory=dict)
    uses_mask: bool = False


def _as_row(embeds) -> torch.Tensor:
    import torch

    embeds = torch.as_tensor(embeds).float()
    return embeds.unsqueeze(0) if embeds.ndim == 1 else embeds


def retrieve(
    model: RetrievalModel,
    index: GalleryIndex,
    query: ComposedQuery,
    method: str | None = None,
    top_k: int = 10,
    *,
    include_reference: bool = False,
    exact: bool | None = None,
    names: Mapping[str, str] | None = None,
    reference_cache: dict | None = None,
    exclude: str | None = None,
) -> Retrieval:
    """Rank the images of `index` for `query` with `model`'s `method` (default: the model's own).

    The reference, when it is an image of the index (`reference_id`, or an `image` file under the index's image
    root), is left out of the hits unless `include_reference`. A `reference_id` of the index reuses its stored
    embedding (no image-encoder pass) unless a mask needs the image itself.

    Args:
        model: From [`load_retrieval_model`].
        index: From [`GalleryIndex.load`].
        query: The composed query.
        method: A method `model` offers.
        top_k: Number of hits.
        include_reference: Keep the reference in the hits.
        exact: Exact search even when the index has a compressed one (`None`: the index decides).
        names: How the caller names the query's inputs in errors (see [`ComposedQuery.check`]).
        reference_cache: A dict shared by calls for the same query (several methods on one index and its model):
            the reference's embedding is computed once per index.
        exclude: The id to leave out of the hits when the reference is not itself an image of the index (e.g. the
            gallery image an uploaded reference is, pixel for pixel); ignored with `include_reference`.

    Example:

    ```python
    >>> from hf_cir.retrieval import GalleryIndex, load_retrieval_model
    >>> from hf_cir.retrieval.query import ComposedQuery, retrieve
    >>> index = GalleryIndex.load("photos.index")  # doctest: +SKIP
    >>> model = load_retrieval_model(index.info["model"])  # doctest: +SKIP
    >>> result = retrieve(model, index, ComposedQuery(text="at night", image="photos/beach.jpg"))  # doctest: +SKIP
    >>> [hit.path for hit in result.hits]  # doctest: +SKIP
    ```
    """
    method = model.check_method(method)
    spec = query.check(method, names)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"`top_k` must be a positive integer, got {top_k!r}.")
    position = index.position(query.reference_id) if query.reference_id else None
    if query.reference_id and position is None:
        index.image_file(query.reference_id)  # an id outside the gallery is refused here
    uses_mask = query.mask is not None
    # A mask marks the reference's pixels, and some methods compose from the pixels (`MethodSpec.reference_pixels`):
    # both need the reference image itself, not its stored embedding.
    uses_image = uses_mask or spec.reference_pixels
    encode_seconds, source, reference_embeds, reference_image = 0.0, "none", None, None
    if spec.uses_reference and query.has_reference:
        if uses_image or (query.reference_id and position is None):
            reference_image = _reference_image(index, query)
        if uses_image:
            source = "image encoder"
            size = getattr(query.mask, "size", None)
            if size is not None and hasattr(reference_image, "size") and size != reference_image.size:
                raise ValueError(
                    f"{dict(QUERY_ARGUMENT_NAMES, **(names or {}))['mask']}: has size {size}, the reference image "
                    f"{reference_image.size}; paint the mask on the reference itself."
                )
        else:
            reference_embeds, encode_seconds, source = _reference_embeds(
                model, index, query, position, reference_image, reference_cache
            )
    started = time.perf_counter()
    if method == "image":
        query_embeds = reference_embeds
    else:
        query_embeds = model.encode_queries(
            [query.text],
            images=[reference_image] if uses_image and reference_image is not None else None,
            image_embeds=reference_embeds,
            method=method,
            negative_texts=[query.negative_text] if query.negative_text is not None else None,
            mask_images=[query.mask] if uses_mask else None,
        )
    compose_seconds = time.perf_counter() - started
    excluded = None if include_reference else (_reference_in(index, query, position) or exclude)
    started = time.perf_counter()
    hits = index.search(query_embeds, int(top_k), exact=exact, exclude=[excluded])[0]
    timings = {
        "encode": encode_seconds,
        "compose": compose_seconds,
        "search": time.perf_counter() - started,
        "encode_source": source,
    }
    return Retrieval(hits, method, excluded, query_embeds, timings, uses_mask)


def _reference_image(index: GalleryIndex, query: ComposedQuery):
    from ..utils import load_image

    if query.image is not None:
        return load_image(query.image, name="reference image")
    return load_image(index.image_file(query.reference_id), name="reference_id")


def reference_embedding(
    model: RetrievalModel, index: GalleryIndex, query: ComposedQuery, reference_cache: dict | None = None
) -> torch.Tensor:
    """The embedding `[1, D]` of `query`'s reference in `index`'s space: its stored row, the given embedding, or the
    image encoded by `model`. With the `reference_cache` a later [`retrieve`] call receives, that call reuses it
    instead of encoding the reference again."""
    position = index.position(query.reference_id) if query.reference_id else None
    prepared = {} if reference_cache is not None else None
    embeds = _reference_embeds(model, index, query, position, None, prepared)
    if reference_cache is not None:  # the first `retrieve` reports it as its own encoding (time and source)
        reference_cache[("prepared", id(index))] = embeds
    return embeds[0]


def _reference_embeds(model, index, query, position, image, cache):
    """The reference's embedding `[1, D]`, its encoding time and where it came from (stored, given, encoded)."""
    key = id(index)  # the index's model embedded the gallery: one reference embedding per index
    if cache is not None and ("prepared", key) in cache:  # from `reference_embedding`: not yet reported by anyone
        cache[key] = cache.pop(("prepared", key))
        return cache[key]
    if cache is not None and key in cache:
        embeds, _, source = cache[key]
        return embeds, 0.0, f"{source}, shared"
    started = time.perf_counter()
    if query.image_embeds is not None:
        embeds, source = _as_row(query.image_embeds), "given"
        if embeds.shape[-1] != model.embedding_dim:
            raise ValueError(
                f"`image_embeds` have {embeds.shape[-1]} dimensions; {model.name_or_path} embeds into "
                f"{model.embedding_dim}."
            )
    elif position is not None:
        embeds, source = index.get_embeddings([position]).float(), "stored"
    else:
        from ..utils import load_image

        picture = image if image is not None else load_image(query.image, name="reference image")
        embeds, source = model.encode_images([picture]), "image encoder"
    seconds = time.perf_counter() - started
    if cache is not None:
        cache[key] = (embeds, seconds, source)
    return embeds, seconds, source


def _reference_in(index: GalleryIndex, query: ComposedQuery, position: int | None) -> str | None:
    """The stored path of the reference when it is an image of the index (what is left out of the hits)."""
    if position is not None:
        return query.reference_id
    if isinstance(query.image, (str, os.PathLike)):
        return index.find(query.image)
    return None


def embed_queries(
    model: RetrievalModel, queries: Sequence[ComposedQuery], method: str | None = None, batch_size: int = 32
) -> torch.Tensor:
    """Query embeddings `[N, D]` (float32, CPU, unnormalised) of many queries, in batches, through the same checks
    and model calls as [`retrieve`]. A query's reference is its `image_embeds` or its `image` (`reference_id` needs an
    index: use [`retrieve`]).

    Example:

    ```python
    >>> from hf_cir.retrieval import load_retrieval_model
    >>> from hf_cir.retrieval.query import ComposedQuery, embed_queries
    >>> from hf_cir.toy import toy_checkpoint
    >>> model = load_retrieval_model(toy_checkpoint("lincir"), device="cpu")
    >>> embeds = embed_queries(model, [ComposedQuery(text="make it red", image_embeds=[0.1] * model.embedding_dim)])
    >>> tuple(embeds.shape) == (1, model.embedding_dim)
    True

    ```
    """
    import torch

    method = model.check_method(method)
    specs = [query.check(method) for query in queries]
    for query in queries:
        if query.reference_id:
            raise ValueError("`reference_id` names an image of an index: search with `retrieve`.")
    out = torch.empty(len(queries), model.embedding_dim)
    # Queries that share what they give (an embedding, an image file, a mask, a negative text) run in one batch.
    groups: dict[tuple, list[int]] = {}
    for row, (query, spec) in enumerate(zip(queries, specs)):
        reference = "embeds" if query.image_embeds is not None else "image" if query.image is not None else None
        reference = reference if spec.uses_reference else None
        key = (reference, query.mask is not None, query.negative_text is not None)
        groups.setdefault(key, []).append(row)
    for (reference, has_mask, has_negative), rows in groups.items():
        for start in range(0, len(rows), batch_size):
            batch = [queries[row] for row in rows[start : start + batch_size]]
            if method == "image":
                embeds = (
                    torch.cat([_as_row(q.image_embeds) for q in batch])
                    if reference == "embeds"
                    else model.encode_images([q.image for q in batch])
                )
            else:
                embeds = model.encode_queries(
                    [q.text for q in batch],
                    images=[q.image for q in batch] if reference == "image" else None,
                    image_embeds=torch.cat([_as_row(q.image_embeds) for q in batch])
                    if reference == "embeds"
                    else None,
                    method=method,
                    negative_texts=[q.negative_text for q in batch] if has_negative else None,
                    mask_images=[q.mask for q in batch] if has_mask else None,
                )
            out[rows[start : start + batch_size]] = embeds.float().cpu()
    return out
