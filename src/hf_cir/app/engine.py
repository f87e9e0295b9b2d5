"""The search behind `hf-cir app`: served galleries, the models that indexed them, and one query over many methods.

Nothing here imports gradio: [`SearchEngine.search`] takes a [`Query`] and returns plain JSON-able results, so the
app, its API and the tests share one code path. A query runs every chosen method ("column") on the same inputs:

1. *encode*: the reference image's embedding, once per model (from the index when the reference is a gallery
   image: no image-encoder pass);
2. *compose*: the method's query embedding (LinCIR's composed text features, CompoDiff's sampled embedding, or a
   baseline);
3. *search*: the model's index ranks the gallery.

Each stage is timed per column.
"""

from __future__ import annotations

import inspect
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ..retrieval import (
    BASELINE_METHODS,
    REFERENCE_IMAGE_METHODS,
    CompoDiffRetrievalModel,
    GalleryIndex,
    RetrievalModel,
)
from ..utils import load_image

__all__ = [
    "Column",
    "Gallery",
    "Query",
    "SearchEngine",
    "ServedIndex",
    "default_toy_folder",
    "load_toy_engine",
    "load_upload",
    "mask_from_strokes",
]

# How the page names each method; a method missing here is shown by its name.
METHOD_LABELS = {
    "lincir": "LinCIR",
    "searle": "SEARLE",
    "pic2word": "Pic2Word",
    "compodiff": "CompoDiff",
    "image": "Image only (baseline)",
    "text": "Text only (baseline)",
    "sum": "Image + text (baseline)",
}
# CompoDiff's sampling settings the app exposes (keyword arguments of the pipeline's `__call__`), and the seed.
SAMPLING_KEYS = ("num_inference_steps", "guidance_scale", "image_guidance_scale", "source_weight")
# Methods that compose with a reference image (the text baseline needs none; CompoDiff can sample from text alone).
_NEEDS_REFERENCE = REFERENCE_IMAGE_METHODS  # lincir, searle, pic2word, image, sum
# Texts kept by each served CompoDiff pipeline's text-encoding cache (bounded, least recently used dropped first): a
# page re-runs the same modification text with other settings, other references or other methods, and every query
# has the (usually empty) negative prompt. A model that already has a cache keeps its own.
APP_TEXT_CACHE_SIZE = 256


@dataclass
class ServedIndex:
    """One index folder and the model that queries it."""

    name: str
    index: GalleryIndex
    model: RetrievalModel
    _rows: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self._rows = {path: row for row, path in enumerate(self.index.paths)}

    def stored_embedding(self, image_id: str) -> torch.Tensor:
        """The gallery image's embedding as stored in the index, `[1, D]`."""
        return self.index.embeddings[self._rows[image_id]].unsqueeze(0).float()


@dataclass(frozen=True)
class Column:
    """A method of a gallery's page: `key` is what the API takes, `label` what the page shows."""

    key: str
    label: str
    method: str
    served: ServedIndex


class Gallery:
    """Images under one root folder, indexed by one or more models; `columns` are the methods it offers."""

    def __init__(self, name: str, served: list[ServedIndex], examples: list[tuple[str, str]] | None = None):
        if not served:
            raise ValueError(f"Gallery {name!r} has no index.")
        roots = {Path(s.index.root).resolve() for s in served}
        if len(roots) != 1:
            raise ValueError(f"Gallery {name!r} mixes indexes of different image folders: {sorted(map(str, roots))}.")
        self.name = name
        self.served = list(served)
        self.root = roots.pop()
        self.ids = list(served[0].index.paths)
        self._ids = set(self.ids)
        self.examples = [(image_id, text) for image_id, text in (examples or []) if image_id in self._ids]
        self.columns = self._make_columns()

    def _make_columns(self) -> dict[str, Column]:
        own = [(s, s.model.default_method) for s in self.served]
        counts = {method: sum(m == method for _, m in own) for _, method in own}
        columns = {}
        for served, method in own:
            key, label = method, METHOD_LABELS.get(method, method)
            if counts[method] > 1:
                key, label = f"{method}@{served.name}", f"{label} ({served.name})"
            columns[key] = Column(key, label, method, served)
        # The baselines once, with a LinCIR model when there is one (CLIP's own text tower).
        base = next((s for s in self.served if s.model.model_type == "lincir"), self.served[0])
        for method in BASELINE_METHODS:
            if method in base.model.methods:
                columns[method] = Column(method, METHOD_LABELS.get(method, method), method, base)
        return columns

    def has_image(self, image_id: str) -> bool:
        return image_id in self._ids

    def image_path(self, image_id: str) -> Path:
        """The file of a gallery image; only the indexed images resolve (nothing else under or beyond the root)."""
        if not self.has_image(image_id):
            raise ValueError(f"`reference_id`: {image_id!r} is not an image of the gallery {self.name!r}.")
        return self.served[0].index.image_file(image_id)

    def served_for(self, image_id: str, served: ServedIndex) -> bool:
        return image_id in served._rows


@dataclass
class Query:
    """A composed query, as the page and the API send it.

    Attributes:
        text: The modification text.
        image: An uploaded reference image (RGB), or
        reference_id: a gallery image's id (its path in the index): its stored embedding is reused.
        negative_text: What CompoDiff's result should not be.
        mask: CompoDiff's mask (single channel, the reference's size; white = the region the text may change).
        methods: Column keys to run; default: every column of the gallery.
        top_k: Results per column.
        sampling: CompoDiff settings (`SAMPLING_KEYS` and `seed`); default: the served model's own.
    """

    text: str = ""
    image: Image.Image | None = None
    reference_id: str | None = None
    negative_text: str | None = None
    mask: Image.Image | None = None
    methods: list[str] | None = None
    top_k: int = 10
    sampling: dict[str, Any] = field(default_factory=dict)


def compodiff_defaults(model: RetrievalModel) -> dict[str, Any]:
    """The sampling settings a CompoDiff model uses: its pipeline's defaults, overridden by the model's own."""
    if not isinstance(model, CompoDiffRetrievalModel):
        return {}
    parameters = inspect.signature(model.pipeline.__call__).parameters
    defaults = {key: parameters[key].default for key in SAMPLING_KEYS if key in parameters}
    for key, value in defaults.items():
        if value is None:  # "the pipeline's current default", e.g. `pipeline.default_num_inference_steps`
            defaults[key] = getattr(model.pipeline, f"default_{key}", None)
    defaults.update({key: value for key, value in model.sampling_kwargs.items() if key in SAMPLING_KEYS})
    defaults["seed"] = model.seed
    return defaults


def _with_sampling(model: RetrievalModel, sampling: dict[str, Any]) -> RetrievalModel:
    """A CompoDiff model sharing `model`'s pipeline with other sampling settings (no state of `model` changes)."""
    if not isinstance(model, CompoDiffRetrievalModel) or not sampling:
        return model
    unknown = sorted(set(sampling) - set(SAMPLING_KEYS) - {"seed"})
    if unknown:
        raise ValueError(f"Unknown CompoDiff setting(s) {unknown}; expected some of {[*SAMPLING_KEYS, 'seed']}.")
    settings = {**model.sampling_kwargs, **{k: v for k, v in sampling.items() if k != "seed" and v is not None}}
    steps = settings.get("num_inference_steps")
    if steps is not None and (int(steps) != steps or steps < 1):
        raise ValueError(f"`num_inference_steps` must be a positive integer, got {steps!r}.")
    if steps is not None:
        settings["num_inference_steps"] = int(steps)
    for key in ("guidance_scale", "image_guidance_scale"):
        if settings.get(key) is not None and settings[key] < 0:
            raise ValueError(f"`{key}` must be >= 0, got {settings[key]!r}.")
    weight = settings.get("source_weight")
    if weight is not None and not 0.0 <= weight <= 1.0:
        raise ValueError(f"`source_weight` must be in [0, 1], got {weight!r}.")
    seed = sampling.get("seed")
    seed = model.seed if seed is None else int(seed)
    return CompoDiffRetrievalModel(model.pipeline, model.name_or_path, model.device, seed=seed, **settings)


def load_upload(path: str | os.PathLike, what: str = "reference image") -> Image.Image:
    """Open an uploaded image with the library's checks (unreadable files, decompression bombs); the error names the
    upload by its file name, not by the server's upload folder."""
    path = Path(path)
    try:
        return load_image(path, name=what)
    except (ValueError, OSError) as error:
        message = str(error).replace(str(path), path.name)
        raise type(error)(message) from error


def mask_from_strokes(strokes: list[Image.Image], size: tuple[int, int]) -> Image.Image | None:
    """The mask painted on a reference: white where any stroke layer is opaque, `size` = the reference's size.

    `None` when nothing was painted.
    """
    mask = Image.new("L", size, 0)
    for stroke in strokes:
        alpha = stroke.convert("RGBA").getchannel("A")
        if alpha.size != size:
            alpha = alpha.resize(size, Image.Resampling.NEAREST)
        mask.paste(255, mask=alpha.point(lambda value: 255 if value > 0 else 0))
    return mask if mask.getbbox() else None


class SearchEngine:
    """The served galleries; [`search`] runs a query. Models load once; a query never changes shared state apart
    from the CompoDiff pipelines' text-encoding caches (turned on with `APP_TEXT_CACHE_SIZE` entries: a cached text
    gives the text encoder's encoding, up to the rounding of another batch) and their schedulers' per-call state.
    Queries that reach the models ([`search`], [`imagine`]) therefore run one at a time, whatever Gradio's
    concurrency settings (each event has its own concurrency group there).

    Example:

    ```python
    >>> from hf_cir.app.engine import Query, SearchEngine
    >>> engine = SearchEngine.from_folders(["photos.index"])  # doctest: +SKIP
    >>> result = engine.search("photos", Query(text="at night", reference_id="beach.jpg"))  # doctest: +SKIP
    >>> [hit["id"] for hit in result["columns"]["lincir"]["hits"]]  # doctest: +SKIP
    ```
    """

    def __init__(self, galleries: list[Gallery], decoder=None):
        if not galleries:
            raise ValueError("Serve at least one gallery.")
        self.galleries = {gallery.name: gallery for gallery in galleries}
        if len(self.galleries) != len(galleries):
            raise ValueError("Two galleries have the same name.")
        self.decoder = decoder
        self._models_lock = threading.RLock()
        for gallery in galleries:
            for served in gallery.served:
                pipeline = getattr(served.model, "pipeline", None) if served.model.model_type == "compodiff" else None
                if pipeline is not None and getattr(pipeline, "text_encoding_cache", False) is None:
                    pipeline.enable_text_encoding_cache(APP_TEXT_CACHE_SIZE)
        if decoder is not None:
            from ..pipelines.unclip_decoding import decoder_embedding_dim

            expected = decoder_embedding_dim(decoder)
            for gallery in galleries:
                for served in gallery.served:
                    if served.model.model_type == "compodiff" and expected not in (None, served.model.embedding_dim):
                        raise ValueError(
                            f"`--decoder` generates from {expected}-d CLIP image embeddings, but {served.model.name_or_path} "
                            f"embeds into {served.model.embedding_dim} dimensions; use a decoder on the same CLIP model."
                        )

    @property
    def roots(self) -> list[Path]:
        """The image folders served: the only files the app may show."""
        return [gallery.root for gallery in self.galleries.values()]

    @classmethod
    def from_folders(
        cls,
        indexes: list[str | os.PathLike],
        models: list[str | os.PathLike] | None = None,
        device: str | None = None,
        dtype: torch.dtype = torch.float32,
        sampling: dict[str, Any] | None = None,
        decoder=None,
    ) -> SearchEngine:
        """Open index folders and the models that query them; indexes over the same image folder form one gallery.

        Each index is paired with the given model that embeds images as it was built (its gallery fingerprint), or,
        without `models`, with the model its `index.json` names. A model that matches no index is an error.
        """
        from ..retrieval import load_retrieval_model

        sampling = dict(sampling or {})
        loaded: dict[str, RetrievalModel] = {}

        def load(name_or_path: str) -> RetrievalModel:
            if name_or_path not in loaded:
                model_type_sampling = sampling if _is_compodiff_folder(name_or_path) else {}
                loaded[name_or_path] = load_retrieval_model(
                    name_or_path, device=device, dtype=dtype, **model_type_sampling
                )
            return loaded[name_or_path]

        for name in models or []:
            load(str(name))
        served, used = [], set()
        for path in indexes:
            index = GalleryIndex.load(path)
            if models:
                matches = [
                    name
                    for name, model in loaded.items()
                    if model.gallery_fingerprint() == index.info.get("fingerprint")
                ]
                if not matches:
                    raise ValueError(
                        f"`--index`: {path} was built with {index.info.get('model')}, which embeds images differently "
                        f"from every --model given ({', '.join(loaded)}); add its model with --model."
                    )
                model = loaded[matches[0]]
                used.add(matches[0])
            else:
                if not index.info.get("model"):
                    raise ValueError(f"`--index`: {path} does not name its model; give it with --model.")
                model = load(str(index.info["model"]))
                used.add(str(index.info["model"]))
            index.check_model(model)
            served.append(ServedIndex(Path(path).name.removesuffix(".index"), index, model))
        unused = [name for name in loaded if name not in used]
        if unused:
            raise ValueError(
                f"`--model`: {', '.join(unused)} queries none of the indexes; build one with `hf-cir index --model "
                f"{unused[0]} --images FOLDER --output FOLDER.index` and pass it with --index."
            )
        by_root: dict[Path, list[ServedIndex]] = {}
        for item in served:
            by_root.setdefault(Path(item.index.root).resolve(), []).append(item)
        galleries, names = [], set()
        for root, items in by_root.items():
            name = root.name or str(root)
            while name in names:
                name = f"{name} ({len(names)})"
            names.add(name)
            galleries.append(Gallery(name, items))
        return cls(galleries, decoder=decoder)

    def gallery(self, name: str | None) -> Gallery:
        if name is None and len(self.galleries) == 1:
            return next(iter(self.galleries.values()))
        if name not in self.galleries:
            raise ValueError(f"`gallery`: unknown gallery {name!r}; served: {', '.join(self.galleries)}.")
        return self.galleries[name]

    def sampling_defaults(self, gallery: str | None = None) -> dict[str, Any]:
        """CompoDiff's settings as the gallery's CompoDiff model uses them by default (empty without CompoDiff)."""
        for served in self.gallery(gallery).served:
            if isinstance(served.model, CompoDiffRetrievalModel):
                return compodiff_defaults(served.model)
        return {}

    # -- querying --------------------------------------------------------------------------------------------------

    def _check(self, gallery: Gallery, query: Query) -> list[Column]:
        keys = list(query.methods) if query.methods else list(gallery.columns)
        unknown = [key for key in keys if key not in gallery.columns]
        if unknown:
            raise ValueError(
                f"`methods`: unknown method(s) {', '.join(map(repr, unknown))} for the gallery {gallery.name!r}; "
                f"it offers: {', '.join(gallery.columns)}."
            )
        if isinstance(query.top_k, bool) or int(query.top_k) != query.top_k or query.top_k < 1:
            raise ValueError(f"`top_k` must be a positive integer, got {query.top_k!r}.")
        if query.image is not None and query.reference_id:
            raise ValueError("Give the reference either as an image or as `reference_id`, not both.")
        if query.reference_id:
            gallery.image_path(query.reference_id)  # raises for an id outside the gallery
        columns = [gallery.columns[key] for key in keys]
        has_reference = query.image is not None or bool(query.reference_id)
        for column in columns:
            if column.method != "image" and not (query.text or "").strip():
                raise ValueError(
                    f"`text`: the modification text is empty; {column.label} needs one (only the image baseline "
                    "works without text)."
                )
            if column.method in _NEEDS_REFERENCE and not has_reference:
                raise ValueError(
                    f"`reference`: {column.label} needs a reference image: upload one or pick one from the gallery."
                )
        if query.mask is not None:
            if query.mask.mode not in ("L", "1"):
                raise ValueError(
                    f"`mask`: must be a single-channel image (white = change), got mode {query.mask.mode!r}."
                )
            if not any(c.served.model.supports_masks and c.method == c.served.model.default_method for c in columns):
                raise ValueError("`mask`: only CompoDiff takes a mask; choose the CompoDiff method or clear the mask.")
        return columns

    def search(self, gallery: str | None, query: Query) -> dict[str, Any]:
        """Run `query` with each chosen method; returns `{"gallery", "query", "columns": {key: result}}`.

        A gallery reference is left out of the results (`query.excluded`), as `hf-cir search` leaves out an
        `--image` of the index. Each result holds `method`, `label`, `model`, `index`, `hits` (`rank`, `id` = path in the index, `score`,
        `image_path` = the file), and `timings` in seconds (`encode`, `compose`, `search`) with `encode_source`
        (`"image encoder"`, `"stored"` for a gallery reference's stored embedding, `"none"`, with `", shared"` when an
        earlier column of the query computed it).
        """
        with self._models_lock:
            return self._search(gallery, query)

    def _search(self, gallery: str | None, query: Query) -> dict[str, Any]:
        gallery_ = self.gallery(gallery)
        columns = self._check(gallery_, query)
        text = (query.text or "").strip()
        references: dict[int, tuple[torch.Tensor, float, str]] = {}
        reference_image: Image.Image | None = query.image

        def reference(served: ServedIndex) -> tuple[torch.Tensor | None, float, str]:
            if query.image is None and not query.reference_id:
                return None, 0.0, "none"
            if id(served) not in references:
                started = time.perf_counter()
                if query.reference_id and gallery_.served_for(query.reference_id, served):
                    embeds, source = served.stored_embedding(query.reference_id), "stored"
                else:
                    embeds, source = served.model.encode_images([the_reference_image()]), "image encoder"
                references[id(served)] = (embeds, time.perf_counter() - started, source)
                return references[id(served)]
            embeds, _, source = references[id(served)]
            return embeds, 0.0, f"{source}, shared"  # computed for an earlier column of this query

        def the_reference_image() -> Image.Image:
            nonlocal reference_image
            if reference_image is None:
                reference_image = load_image(gallery_.image_path(query.reference_id), name="reference_id")
            return reference_image

        results = {}
        for column in columns:
            served, method = column.served, column.method
            model = served.model
            own = method == model.default_method
            embeds, encode_seconds, source = (None, 0.0, "none")
            uses_mask = own and model.supports_masks and query.mask is not None
            if method != "text" and not uses_mask:
                embeds, encode_seconds, source = reference(served)
            started = time.perf_counter()
            kwargs: dict[str, Any] = {"method": method}
            if own and model.supports_negative_text and query.negative_text:
                kwargs["negative_texts"] = [query.negative_text]
            if uses_mask:
                image = the_reference_image()
                if query.mask.size != image.size:
                    raise ValueError(
                        f"`mask`: has size {query.mask.size}, the reference image {image.size}; paint the mask on "
                        "the reference itself."
                    )
                kwargs.update(images=[image], mask_images=[query.mask])
                source = "image encoder"
            elif embeds is not None:
                kwargs["image_embeds"] = embeds
            if method == "image":
                query_embeds = embeds
            else:
                runner = _with_sampling(model, query.sampling) if own else model
                query_embeds = runner.encode_queries([text], **kwargs)
            compose_seconds = time.perf_counter() - started
            started = time.perf_counter()
            # As `hf-cir search` does, a gallery reference is left out of its own results.
            left_out = (
                query.reference_id if query.reference_id and gallery_.served_for(query.reference_id, served) else None
            )
            hits = served.index.search(query_embeds, int(query.top_k), exclude=[left_out])[0]
            search_seconds = time.perf_counter() - started
            results[column.key] = {
                "method": method,
                "label": column.label,
                "model": model.name_or_path,
                "index": served.name,
                "mask": uses_mask,
                "hits": [
                    {"rank": hit.rank, "id": hit.path, "score": hit.score, "image_path": str(gallery_.root / hit.path)}
                    for hit in hits
                ],
                "timings": {
                    "encode": encode_seconds,
                    "compose": compose_seconds,
                    "search": search_seconds,
                    "encode_source": source,
                },
            }
            if method == "compodiff" or (own and model.supports_masks):
                results[column.key]["sampling"] = {**compodiff_defaults(model), **_clean(query.sampling)}
        return {
            "gallery": gallery_.name,
            "query": {
                "text": text,
                "reference_id": query.reference_id,
                "uploaded_reference": query.image is not None,
                "negative_text": query.negative_text,
                "mask": query.mask is not None,
                "top_k": int(query.top_k),
                "excluded": query.reference_id,
            },
            "columns": results,
        }

    def imagine(self, gallery: str | None, query: Query, **decoder_kwargs) -> tuple[Image.Image, dict[str, Any]]:
        """Decode CompoDiff's query embedding for `query` into a picture with the configured unCLIP decoder."""
        with self._models_lock:
            return self._imagine(gallery, query, **decoder_kwargs)

    def _imagine(self, gallery: str | None, query: Query, **decoder_kwargs) -> tuple[Image.Image, dict[str, Any]]:
        from ..pipelines.unclip_decoding import decode_image_embeds

        if self.decoder is None:
            raise ValueError(
                "No decoder is configured: start the app with --decoder PATH (a diffusers unCLIP pipeline)."
            )
        gallery_ = self.gallery(gallery)
        keys = [key for key, column in gallery_.columns.items() if column.method == "compodiff"]
        if not keys:
            raise ValueError(f"The gallery {gallery_.name!r} has no CompoDiff model to imagine with.")
        key = next((k for k in (query.methods or []) if k in keys), keys[0])
        column = gallery_.columns[key]
        sub_query = Query(**{**query.__dict__, "methods": [key], "top_k": 1})
        self._check(gallery_, sub_query)
        model = _with_sampling(column.served.model, query.sampling)
        kwargs: dict[str, Any] = {"method": "compodiff"}
        if query.negative_text:
            kwargs["negative_texts"] = [query.negative_text]
        started = time.perf_counter()
        image = query.image
        if image is None and query.reference_id:
            if query.mask is None and gallery_.served_for(query.reference_id, column.served):
                kwargs["image_embeds"] = column.served.stored_embedding(query.reference_id)
            else:
                image = load_image(gallery_.image_path(query.reference_id), name="reference_id")
        if image is not None:
            kwargs["images"] = [image]
            if query.mask is not None:
                kwargs["mask_images"] = [query.mask]
        embeds = model.encode_queries([(query.text or "").strip()], **kwargs)
        compose_seconds = time.perf_counter() - started
        started = time.perf_counter()
        picture = decode_image_embeds(self.decoder, embeds, **decoder_kwargs)[0]
        return picture, {
            "method": key,
            "timings": {"compose": compose_seconds, "decode": time.perf_counter() - started},
        }


def default_toy_folder() -> Path:
    """Where `hf-cir app` keeps the toy gallery by default: `$XDG_CACHE_HOME/hf-cir/toy-gallery` (or `~/.cache/...`)."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "hf-cir" / "toy-gallery"


def load_toy_engine(
    folder: str | os.PathLike | None = None,
    device: str | None = "cpu",
    decoder=None,
    sampling: dict[str, Any] | None = None,
) -> SearchEngine:
    """The embedded default: the toy gallery (written and indexed under `folder` on first use) with the shipped
    toy LinCIR and CompoDiff, offline. CompoDiff samples with the toy table's guidance scales, overridden by
    `sampling` (keywords of `load_retrieval_model`: `preset`, `scheduler`, `num_inference_steps`, ...).

    Example:

    ```python
    >>> import tempfile
    >>> from hf_cir.app.engine import Query, load_toy_engine
    >>> engine = load_toy_engine(tempfile.mkdtemp() + "/toy")  # doctest: +SKIP
    >>> image_id, text = engine.gallery(None).examples[0]  # doctest: +SKIP
    >>> result = engine.search(None, Query(text=text, reference_id=image_id, methods=["lincir"], top_k=3))  # doctest: +SKIP
    >>> [hit["rank"] for hit in result["columns"]["lincir"]["hits"]]  # doctest: +SKIP
    [1, 2, 3]
    ```
    """
    from ..retrieval import load_retrieval_model
    from ..toy import toy_checkpoint
    from ..toy.benchmark import TOY_COMPODIFF_SAMPLING
    from ..toy.gallery import prepare_toy_gallery

    models = {
        "lincir": load_retrieval_model(toy_checkpoint("lincir"), device=device),
        "compodiff": load_retrieval_model(
            toy_checkpoint("compodiff"), device=device, **{**TOY_COMPODIFF_SAMPLING, **_clean(sampling or {})}
        ),
    }
    toy = prepare_toy_gallery(folder if folder is not None else default_toy_folder(), models)
    served = [ServedIndex(name, GalleryIndex.load(path), models[name]) for name, path in toy.indexes.items()]
    return SearchEngine([Gallery("toy world", served, examples=toy.examples)], decoder=decoder)


def _clean(sampling: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in sampling.items() if value is not None}


def _is_compodiff_folder(name_or_path: str) -> bool:
    from ..retrieval import detect_model_type

    return detect_model_type(name_or_path) == "compodiff"
