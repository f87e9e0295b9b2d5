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

import hashlib
import io
import os
import shutil
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ..families import BASELINE_METHODS, all_methods, method_spec, methods_taking, read_model_folder
from ..retrieval import GalleryIndex, RetrievalModel
from ..retrieval.query import ComposedQuery, reference_embedding, retrieve
from ..retrieval.validation import resolve_inside
from ..utils import IMAGE_EXTENSIONS, load_image
from ..utils.images import check_pixel_budget

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

# How the query's inputs are named in errors (`ComposedQuery.check`; what each method needs is in the family registry).
QUERY_NAMES = {
    "text": "a modification text (`text`)",
    "reference": "a reference image (`reference`: upload one or pick one from the gallery)",
    "mask": "`mask`",
    "negative_text": "`negative_text`",
}
# Texts kept by each served model's text-encoding cache (CompoDiff's (bounded, least recently used dropped first): a
# page re-runs the same modification text with other settings, other references or other methods, and every query
# has the (usually empty) negative prompt. A model that already has a cache keeps its own.
APP_TEXT_CACHE_SIZE = 256
# What one query may ask of the machine (each refused over the limit with one message naming it). The pixel budget is
# read from an image's header before anything is decoded: PIL's decompression-bomb limit only warns below 179 Mpixel,
# and a 20 KB PNG can claim 144 Mpixel (over 400 MB once decoded as RGB).
MAX_IMAGE_PIXELS = 50_000_000
MAX_TEXT_CHARS = 1_000  # the text encoders read 77 tokens: a sentence or two
MAX_TOP_K = 100
MAX_INFERENCE_STEPS = 100
MAX_TAR_MEMBER_BYTES = 100 * 2**20
# An uploaded reference that is a gallery image pixel for pixel is left out of the results, as `hf-cir search` leaves
# out an `--image` of the index: the candidates are its nearest stored embeddings above this cosine.
SAME_PICTURE_CANDIDATES = 3
SAME_PICTURE_MIN_SCORE = 0.95


@dataclass
class ServedIndex:
    """One index folder and the model that queries it."""

    name: str
    index: GalleryIndex
    model: RetrievalModel

    def holds(self, image_id: str) -> bool:
        """Whether the index stores `image_id` (its embedding is then reused for a gallery reference)."""
        return self.index.position(image_id) is not None


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
        self._rows = {image_id: row for row, image_id in enumerate(self.ids)}
        # The only folder the page's images come from: copies (or links) of the indexed images, made on first use.
        self._shown_folder = tempfile.TemporaryDirectory(prefix="hf-cir-app-")
        self.shown_folder = Path(self._shown_folder.name).resolve()
        self._shown: dict[str, Path] = {}
        self._members: dict[Path, dict[str, tuple[int, int]]] = {}  # tar -> sample key -> its image's bytes
        self._files_lock = threading.Lock()
        self.examples = [(image_id, text) for image_id, text in (examples or []) if image_id in self._ids]
        self.columns = self._make_columns()

    def _make_columns(self) -> dict[str, Column]:
        own = [(s, s.model.default_method) for s in self.served]
        counts = {method: sum(m == method for _, m in own) for _, method in own}
        columns = {}
        for served, method in own:
            key, label = method, method_spec(method).label
            if counts[method] > 1:
                key, label = f"{method}@{served.name}", f"{label} ({served.name})"
            columns[key] = Column(key, label, method, served)
        # The baselines once, with a model whose text baseline is CLIP's own text tower when there is one.
        base = next((s for s in self.served if read_family(s.model).clip_text_baseline), self.served[0])
        for method in BASELINE_METHODS:
            if method in base.model.methods:
                columns[method] = Column(method, method_spec(method).label, method, base)
        return columns

    def has_image(self, image_id: str) -> bool:
        return image_id in self._ids

    def check_id(self, image_id: Any, what: str = "reference_id") -> str:
        """`image_id` if it is an id of the gallery, else a `ValueError` (ids are looked up, never opened)."""
        if not isinstance(image_id, str) or not self.has_image(image_id):
            raise ValueError(f"`{what}`: {shorten(image_id)} is not an image of the gallery {self.name!r}.")
        return image_id

    def image_file(self, image_id: str, what: str = "reference_id") -> Path | None:
        """The real file of a gallery image, found from the index's stored metadata (its `path`, never the id), that
        resolves inside the image root and is a regular file; `None` for a sample without a file of its own (a
        webdataset tar member, an image stored inside a dataset). Errors name the id, never a server path."""
        metadata = self.served[0].index.metadata([self._rows[self.check_id(image_id, what)]])[0]
        stored = metadata.get("path")
        if metadata.get("shard") is not None or not isinstance(stored, str) or not stored:
            return None
        try:
            file = resolve_inside(self.root, stored, what)
        except ValueError:
            file = None
        if file is None or not file.is_file():
            raise ValueError(f"`{what}`: the gallery image {image_id!r} cannot be read (missing or not served).")
        return file

    def open_image(self, image_id: str, what: str = "reference_id") -> Image.Image:
        """A gallery image, decoded as RGB within `MAX_IMAGE_PIXELS` (a webdataset sample from its tar member)."""
        file = self.image_file(image_id, what)
        if file is not None:
            return _decode(file, what, repr(image_id))
        return _decode(self._member_bytes(image_id, what), what, repr(image_id))

    def _member_bytes(self, image_id: str, what: str) -> bytes:
        """The image member of a webdataset sample: its tar (the stored `shard`, inside the root) is scanned once for
        the offsets of its members; the sample is found by its stored `key`, read as data and never as a path."""
        from ..retrieval.sources import _sample_key

        metadata = self.served[0].index.metadata([self._rows[image_id]])[0]
        shard, key = metadata.get("shard"), metadata.get("key", image_id)
        unreadable = ValueError(f"`{what}`: the gallery image {image_id!r} cannot be read (missing or not served).")
        try:
            tar = resolve_inside(self.root, shard, what) if isinstance(shard, str) else None
        except ValueError:
            tar = None
        if tar is None or not tar.is_file():
            raise unreadable
        with self._files_lock:
            if tar not in self._members:
                members: dict[str, tuple[int, int]] = {}
                try:
                    with tarfile.open(tar, "r:*") as archive:
                        for member in archive:
                            member_key, extension = _sample_key(member.name)
                            if member.isfile() and f".{extension.rsplit('.', 1)[-1]}" in IMAGE_EXTENSIONS:
                                members[member_key] = (member.offset_data, member.size)
                except (tarfile.TarError, OSError):
                    raise unreadable from None
                self._members[tar] = members
            location = self._members[tar].get(key)
        if location is None or location[1] > MAX_TAR_MEMBER_BYTES:
            raise unreadable
        with open(tar, "rb") as handle:
            handle.seek(location[0])
            return handle.read(location[1])

    def shown_file(self, image_id: str) -> str:
        """A file the page may show for a gallery image: a link to (or copy of) its real file, or its tar member
        re-encoded as PNG, in `shown_folder`, the only folder of gallery images Gradio is allowed to serve."""
        with self._files_lock:
            shown = self._shown.get(image_id)
        if shown is not None and shown.is_file():
            return str(shown)
        file = self.image_file(image_id, "image")
        if file is not None and file.suffix.lower() in IMAGE_EXTENSIONS:
            status = file.stat()
            digest = hashlib.sha256(f"{file}\0{status.st_size}\0{status.st_mtime_ns}".encode()).hexdigest()[:32]
            shown = self.shown_folder / f"{digest}{file.suffix.lower()}"
            if not shown.is_file():
                partial = self.shown_folder / f".{digest}.{threading.get_ident()}.partial"
                try:
                    os.link(file, partial)
                except OSError:
                    shutil.copyfile(file, partial)
                os.replace(partial, shown)
        else:
            buffer = io.BytesIO()
            self.open_image(image_id, "image").save(buffer, format="PNG")
            shown = self.shown_folder / f"{hashlib.sha256(buffer.getvalue()).hexdigest()[:32]}.png"
            if not shown.is_file():
                partial = self.shown_folder / f".{shown.stem}.{threading.get_ident()}.partial"
                partial.write_bytes(buffer.getvalue())
                os.replace(partial, shown)
        with self._files_lock:
            self._shown[image_id] = shown
        return str(shown)

    def served_for(self, image_id: str, served: ServedIndex) -> bool:
        return served.holds(image_id)


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
        sampling: The settings of a model's own method (`RetrievalModel.settings()`: CompoDiff's sampling settings
            and `seed`); default: the served model's own.
    """

    text: str = ""
    image: Image.Image | None = None
    reference_id: str | None = None
    negative_text: str | None = None
    mask: Image.Image | None = None
    methods: list[str] | None = None
    top_k: int = 10
    sampling: dict[str, Any] = field(default_factory=dict)


def read_family(model: RetrievalModel):
    """The registered family of a served model (`hf_cir.families`)."""
    from ..families import get_model_family

    return get_model_family(model.model_type)


def _with_settings(model: RetrievalModel, settings: dict[str, Any]) -> RetrievalModel:
    """`model` with a query's own settings (`RetrievalModel.with_settings`), within what one query may ask. The page
    sends its settings with every query: a model without settings (no sampling) ignores them."""
    if not model.settings():
        return model
    steps = settings.get("num_inference_steps")
    if steps is not None and (isinstance(steps, bool) or int(steps) != steps or not 1 <= steps <= MAX_INFERENCE_STEPS):
        raise ValueError(f"`num_inference_steps` must be an integer in [1, {MAX_INFERENCE_STEPS}], got {steps!r}.")
    return model.with_settings(settings)


def load_upload(path: str | os.PathLike, what: str = "reference image") -> Image.Image:
    """Open an uploaded image with the library's checks (unreadable files, more than `MAX_IMAGE_PIXELS` pixels
    read from the header before decoding); the error names the upload by its file name, not by the server's folder."""
    return _decode(Path(path), what, Path(path).name)


def _decode(source: Path | bytes, what: str, label: str) -> Image.Image:
    """An image file (or its bytes) as RGB within `MAX_IMAGE_PIXELS`; a `ValueError` that names `label`, never the
    file's server path (and says the same of a missing file as of an unreadable one)."""
    try:
        if isinstance(source, bytes):
            with Image.open(io.BytesIO(source)) as opened:
                check_pixel_budget(*opened.size, MAX_IMAGE_PIXELS, name=what, path=label)  # before decoding
                opened.load()
                return load_image(opened, name=what)
        return load_image(source, name=what, max_pixels=MAX_IMAGE_PIXELS)
    except (ValueError, OSError, Image.DecompressionBombError) as error:
        message = str(error)
        if isinstance(source, Path):
            message = message.replace(str(source), label)
        if isinstance(error, FileNotFoundError):
            message = f"`{what}`: {label} is not a readable image (no such file)."
        elif isinstance(source, bytes) and not message.startswith("`"):
            message = f"`{what}`: {label} is not a readable image ({message})."
        raise ValueError(message) from None


def shorten(value: Any, limit: int = 60) -> str:
    """`repr(value)`, cut to `limit` characters: messages name what a client sent without echoing all of it."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


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
                served.model.enable_text_cache(APP_TEXT_CACHE_SIZE)  # a model that has a cache keeps its own
        if decoder is not None:
            from ..pipelines.unclip_decoding import decoder_embedding_dim

            expected = decoder_embedding_dim(decoder)
            for gallery in galleries:
                for served in gallery.served:
                    pictured = method_spec(served.model.default_method).image_embedding
                    if pictured and expected not in (None, served.model.embedding_dim):
                        raise ValueError(
                            f"`--decoder` generates from {expected}-d CLIP image embeddings, but {served.model.name_or_path} "
                            f"embeds into {served.model.embedding_dim} dimensions; use a decoder on the same CLIP model."
                        )

    @property
    def roots(self) -> list[Path]:
        """The galleries' image folders (read through their indexes' stored paths only, never served as folders)."""
        return [gallery.root for gallery in self.galleries.values()]

    @property
    def shown_folders(self) -> list[Path]:
        """The only folders of gallery images Gradio may serve: each gallery's copies of its indexed images."""
        return [gallery.shown_folder for gallery in self.galleries.values()]

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
                # The sampling options go to the families that sample (`ModelFamily.sampling_options`).
                model_type_sampling = sampling if read_model_folder(name_or_path).family.sampling_options else {}
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
        """The per-query settings (CompoDiff's sampling) as the gallery's first model that has some uses them by
        default (empty when no served model has settings)."""
        for served in self.gallery(gallery).served:
            settings = served.model.settings()
            if settings:
                return settings
        return {}

    # -- querying --------------------------------------------------------------------------------------------------

    def _check(self, gallery: Gallery, query: Query) -> list[Column]:
        keys = list(query.methods) if query.methods else list(gallery.columns)
        unknown = [key for key in keys if not isinstance(key, str) or key not in gallery.columns]
        if unknown:
            raise ValueError(
                f"`methods`: unknown method(s) {', '.join(map(shorten, unknown[:3]))} for the gallery "
                f"{gallery.name!r}; it offers: {', '.join(gallery.columns)}."
            )
        repeated = sorted({key for key in keys if keys.count(key) > 1})
        if repeated:
            raise ValueError(f"`methods`: {', '.join(map(repr, repeated))} listed more than once.")
        top_k = query.top_k
        if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= MAX_TOP_K:
            raise ValueError(f"`top_k` must be an integer in [1, {MAX_TOP_K}], got {shorten(top_k)}.")
        for name, value in (("text", query.text), ("negative_text", query.negative_text)):
            if value is not None and not isinstance(value, str):
                raise ValueError(f"`{name}` must be a string, got {type(value).__name__}.")
            if value is not None and len(value) > MAX_TEXT_CHARS:
                raise ValueError(
                    f"`{name}`: {len(value):,} characters, more than the {MAX_TEXT_CHARS:,} accepted (the text encoder "
                    "reads 77 tokens: a sentence or two)."
                )
        if query.image is not None and query.reference_id:
            raise ValueError("Give the reference either as an image or as `reference_id`, not both.")
        if query.image is not None:
            check_pixel_budget(*query.image.size, MAX_IMAGE_PIXELS, name="reference image")
        if query.reference_id:
            gallery.check_id(query.reference_id)
        columns = [gallery.columns[key] for key in keys]
        for column in columns:  # each method's rules (the family registry), before any model runs
            _column_query(query, column).check(column.method, QUERY_NAMES, label=column.label)
        for name in ("mask", "negative_text"):  # given to the methods that take them, refused if none does
            if getattr(query, name) is not None and not any(getattr(method_spec(c.method), name) for c in columns):
                takers = " and ".join(methods_taking(name))
                raise ValueError(
                    f"`{name}`: only {takers} takes a {name.replace('_', ' ')}; choose {takers} or clear it."
                )
        if query.mask is not None and query.mask.mode not in ("L", "1"):
            raise ValueError(f"`mask`: must be a single-channel image (white = change), got mode {query.mask.mode!r}.")
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
        reference_cache: dict = {}  # the reference's embedding, once per served index
        same_picture: list[str | None] = []  # the gallery image an uploaded reference is, pixel for pixel

        def also_left_out(served: ServedIndex) -> str | None:
            # As `hf-cir search` leaves out an `--image` of the index, the reference is left out of its own results
            # when it is a gallery image: picked from the gallery, or uploaded and the same picture as one.
            if query.reference_id:
                return query.reference_id if gallery_.served_for(query.reference_id, served) else None
            if query.image is None:
                return None
            if not same_picture:
                first = gallery_.served[0]
                # Encoded once: `retrieve` takes this embedding from `reference_cache` for the columns of this index.
                embeds = reference_embedding(
                    first.model, first.index, ComposedQuery(image=query.image), reference_cache
                )
                same_picture.append(_same_picture(gallery_, first, embeds, query.image))
            found = same_picture[0]
            return found if found is not None and gallery_.served_for(found, served) else None

        results = {}
        for column in columns:
            served, method = column.served, column.method
            model = served.model
            own = method == model.default_method
            # The one path of every composed query (`hf_cir.retrieval.query.retrieve`), as `hf-cir search` runs it.
            retrieval = retrieve(
                _with_settings(model, query.sampling) if own else model,
                served.index,
                _column_query(query, column, gallery_),
                method,
                int(query.top_k),
                names=QUERY_NAMES,
                reference_cache=reference_cache,
                exclude=also_left_out(served),
            )
            results[column.key] = {
                "method": method,
                "label": column.label,
                "model": model.name_or_path,
                "index": served.name,
                "mask": retrieval.uses_mask,
                "hits": [
                    {
                        "rank": hit.rank,
                        "id": hit.path,
                        "score": hit.score,
                        "image_path": _file_or_none(gallery_, hit.path),
                    }
                    for hit in retrieval.hits
                ],
                "timings": retrieval.timings,
            }
            settings = model.settings() if own else {}
            if settings:
                results[column.key]["sampling"] = {**settings, **_clean(query.sampling)}
        return {
            "gallery": gallery_.name,
            "query": {
                "text": (query.text or "").strip(),
                "reference_id": query.reference_id,
                "uploaded_reference": query.image is not None,
                "negative_text": query.negative_text,
                "mask": query.mask is not None,
                "top_k": int(query.top_k),
                "excluded": query.reference_id or (same_picture[0] if same_picture else None),
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
        # The methods whose query embedding is a CLIP image embedding, which the decoder can picture.
        keys = [key for key, column in gallery_.columns.items() if method_spec(column.method).image_embedding]
        if not keys:
            takers = " or ".join(spec.label for spec in map(method_spec, all_methods()) if spec.image_embedding)
            raise ValueError(f"The gallery {gallery_.name!r} has no {takers} model to imagine with.")
        key = next((k for k in (query.methods or []) if k in keys), keys[0])
        column = gallery_.columns[key]
        sub_query = Query(**{**query.__dict__, "methods": [key], "top_k": 1})
        self._check(gallery_, sub_query)
        started = time.perf_counter()
        retrieval = retrieve(
            _with_settings(column.served.model, query.sampling),
            column.served.index,
            _column_query(query, column, gallery_),
            column.method,
            1,
            names=QUERY_NAMES,
        )
        embeds = retrieval.query_embeds
        compose_seconds = time.perf_counter() - started
        started = time.perf_counter()
        picture = decode_image_embeds(self.decoder, embeds, **decoder_kwargs)[0]
        return picture, {
            "method": key,
            "timings": {"compose": compose_seconds, "decode": time.perf_counter() - started},
        }


def _file_or_none(gallery: Gallery, image_id: str) -> str | None:
    """A hit's file for the API's answer: the gallery's own file, or `None` (a tar member; a file not served)."""
    try:
        file = gallery.image_file(image_id, "image")
    except ValueError:
        return None
    return None if file is None else str(file)


def _same_picture(gallery: Gallery, served: ServedIndex, embeds: torch.Tensor, image: Image.Image) -> str | None:
    """The id of the gallery image that `image` is pixel for pixel, or `None`: only its nearest stored embeddings
    (cosine above `SAME_PICTURE_MIN_SCORE`) are opened and compared, so a query reads a few gallery files at most."""
    hits = served.index.search(embeds, SAME_PICTURE_CANDIDATES)[0]
    pixels = image.tobytes()
    for hit in hits:
        if hit.score < SAME_PICTURE_MIN_SCORE:
            break
        try:
            candidate = gallery.open_image(hit.path, "image")
        except ValueError:
            continue
        if candidate.size == image.size and candidate.tobytes() == pixels:
            return hit.path
    return None


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
    toy LinCIR and CompoDiff, offline. CompoDiff samples with its checkpoint's own defaults (`model_index.json`),
    overridden by `sampling` (keywords of `load_retrieval_model`: `preset`, `scheduler`, `num_inference_steps`, ...).

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
    from ..toy.benchmark import load_toy_models
    from ..toy.gallery import prepare_toy_gallery

    models = load_toy_models(device=device, compodiff_options=_clean(sampling or {}))
    models = {name: model for name, model in models.items() if name != "untrained"}  # the shipped models only
    toy = prepare_toy_gallery(folder if folder is not None else default_toy_folder(), models)
    served = [ServedIndex(name, GalleryIndex.load(path), models[name]) for name, path in toy.indexes.items()]
    return SearchEngine([Gallery("toy world", served, examples=toy.examples)], decoder=decoder)


def _clean(sampling: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in sampling.items() if value is not None}


def _column_query(query: Query, column: Column, gallery: Gallery | None = None) -> ComposedQuery:
    """The composed query a column runs: the inputs its method takes (the family registry); with `gallery`, a gallery
    reference its index does not store is given as the image itself (opened by the gallery, tar members too)."""
    spec = method_spec(column.method)
    text = (query.text or "").strip() or None
    composed = ComposedQuery(
        text=text if spec.text != "refused" else None,
        image=query.image,
        reference_id=query.reference_id or None,
        negative_text=(query.negative_text or None) if spec.negative_text else None,
        mask=query.mask if spec.mask else None,
    )
    if (
        gallery is not None
        and composed.reference_id
        and (composed.mask is not None or not column.served.holds(composed.reference_id))
    ):
        composed.image, composed.reference_id = gallery.open_image(query.reference_id), None
    return composed
