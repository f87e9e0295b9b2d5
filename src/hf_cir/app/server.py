"""The page of `hf-cir app` (Gradio Blocks) over a [`SearchEngine`], and its API.

The page's queries are the API: the Search button calls the endpoint `/search`, the Imagine button `/imagine`;
both take the same inputs (`gradio_client.Client(url).predict(..., api_name="/search")`) and `/search` answers the
JSON of [`SearchEngine.search`]. Everything else (rendering results, picking a reference) is page-only.

Only this module imports gradio (`pip install hf-cir[app]`).
"""

from __future__ import annotations

import math
import random
import re
import sys
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.utils import get_upload_folder, is_in_or_equal
from PIL import Image

from ..utils.errors import USER_ERRORS, is_user_error
from ..utils.images import check_pixel_budget
from .engine import MAX_IMAGE_PIXELS, MAX_TEXT_CHARS, Query, SearchEngine, load_upload, mask_from_strokes, shorten

__all__ = ["build_app", "launch_app", "USER_ERRORS"]

# Errors that are the user's input (`hf_cir.utils.errors.is_user_error`, the rule the `hf-cir` command follows too):
# shown as one message on the page (and returned to API clients); anything else is a bug and keeps its traceback.
# The inputs of `/search` and `/imagine`, in order (the API's parameter names).
QUERY_PARAMETERS = (
    "gallery",
    "reference",
    "reference_id",
    "text",
    "negative_text",
    "methods",
    "top_k",
    "steps",
    "guidance_scale",
    "image_guidance_scale",
    "source_weight",
    "seed",
    "mask",
)
# Gradio's queue, sized on purpose: up to `QUEUE_SIZE` requests wait (one more is refused at once with Gradio's "queue
# is full" error, never left hanging), `CONCURRENCY` of each event run at a time (their uploads are checked and decoded
# in parallel; the engine still runs the model work one query at a time). At ~0.1 s per toy query a full queue drains
# in seconds; with real ViT-L models (~1 s per query on a CPU) in about a minute.
QUEUE_SIZE = 64
CONCURRENCY = 2
# Refused for any path a client names that Gradio did not receive as an upload: the same words whether or not the file
# exists, and nothing of it is read.
NOT_AN_UPLOAD = "`{what}`: not a file uploaded to this app (upload it, e.g. with gradio_client.handle_file)."
# Choices of the steps control, as in CompoDiff's reference demo (the model's default is added when missing).
STEP_CHOICES = (2, 3, 5, 10)
BROWSE_LIMIT = 96
RESULT_HEIGHT = 150  # pixels per method's row of results (more than ten results scroll)
# Small galleries (the toy world's 32-pixel images) are shown with sharp pixels.
CSS = """
.hf-cir-results img, .hf-cir-browse img, .hf-cir-reference img, .hf-cir-reference canvas { image-rendering: pixelated; }
.hf-cir-timings table { font-size: 0.85em; }
"""
INTRO = """# hf-cir · composed image search
**Find pictures like this one, but changed.** Pick a reference picture, say what should be different, and compare how
each method ranks the gallery. Click any picture (a result or one of the gallery below) to make it the next reference
and refine step by step. CompoDiff also takes a *negative text* and a *mask*: paint over the part of the reference
it may change.
"""


def _file_path(value: Any, what: str) -> str | None:
    """The path inside a Gradio file payload (a path string, a FileData dict, or None), if Gradio received it.

    A client may put any path in a payload: only files inside Gradio's upload folder (resolved, links followed) are
    accepted, and nothing else is opened or even checked for existence (one message for every other path).
    """
    if value is None:
        return None
    path = value.get("path") if isinstance(value, dict) else value
    if path is None or path == "":
        return None
    if not isinstance(path, str):
        raise ValueError(f"`{what}` must be an uploaded image file, got {type(value).__name__}.")
    try:
        uploaded = "\x00" not in path and is_in_or_equal(path, get_upload_folder())
    except (OSError, ValueError):
        uploaded = False
    if not uploaded:
        raise ValueError(NOT_AN_UPLOAD.format(what=what))
    return path


def _text(value: Any, name: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ValueError(f"`{name}` must be a string, got {type(value).__name__}.")


def _query_from_inputs(
    engine: SearchEngine,
    gallery: str | None,
    reference: dict | None,
    reference_id: str | None,
    text: str | None,
    negative_text: str | None,
    methods: list[str] | None,
    top_k: float | None,
    steps: Any,
    guidance_scale: float | None,
    image_guidance_scale: float | None,
    source_weight: float | None,
    seed: float | None,
    mask: Any,
) -> Query:
    """Turn the raw inputs of `/search` and `/imagine` into a [`Query`], validating the uploads."""
    reference = reference or {}
    if not isinstance(reference, dict):
        raise ValueError("`reference` must be an image editor value: {'background': image, 'layers': [...]}.")
    layers = reference.get("layers") or []
    if not isinstance(layers, list):
        raise ValueError("`reference`: 'layers' must be a list of uploaded images.")
    if gallery is not None and not isinstance(gallery, str):
        raise ValueError(f"`gallery` must be a gallery name, got {type(gallery).__name__}.")
    if methods is not None and not (isinstance(methods, list) and all(isinstance(m, str) for m in methods)):
        raise ValueError("`methods` must be a list of method names.")
    text, negative_text = _text(text, "text"), _text(negative_text, "negative_text")
    reference_id = (_text(reference_id, "reference_id") or "").strip() or None
    if reference_id is not None:
        engine.gallery(gallery).check_id(reference_id)
    background = _file_path(reference.get("background"), "reference image")
    layer_paths = [path for path in (_file_path(layer, "mask layer") for layer in layers) if path]
    mask_path = _file_path(mask, "mask")
    image = load_upload(background, "reference image") if background is not None else None
    if reference_id is not None:
        picked = engine.gallery(gallery).open_image(reference_id)
        if image is not None:
            # The page sends the editor's picture with the id of the gallery picture it was set to: the stored
            # embedding is used only while the picture is still that gallery image, pixel for pixel.
            if image.size == picked.size and image.tobytes() == picked.tobytes():
                image = None
            else:
                reference_id = None
    mask_image = None
    if mask_path is not None:
        mask_image = load_upload(mask_path, "mask").convert("L")
    else:
        strokes = [_open_rgba(path) for path in layer_paths]
        if strokes:
            size = image.size if image is not None else _reference_size(engine, gallery, reference_id)
            mask_image = mask_from_strokes(strokes, size) if size is not None else None
    sampling = {
        "num_inference_steps": _number(steps, "steps", int),
        "guidance_scale": _number(guidance_scale, "guidance_scale", float),
        "image_guidance_scale": _number(image_guidance_scale, "image_guidance_scale", float),
        "source_weight": _number(source_weight, "source_weight", float),
        "seed": _number(seed, "seed", int),
    }
    top_k = _number(top_k, "top_k", int)
    return Query(
        text=text or "",
        image=image,
        reference_id=reference_id,
        negative_text=(negative_text or "").strip() or None,
        mask=mask_image,
        methods=list(methods) if methods else None,
        top_k=10 if top_k is None else top_k,
        sampling={key: value for key, value in sampling.items() if value is not None},
    )


def _number(value: Any, name: str, kind: type) -> int | float | None:
    """A finite number input (`None` or "" when not given); a clear error for anything else."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"`{name}` must be a number, got {type(value).__name__}.")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"`{name}` must be a number, got {shorten(value)}.") from None
    if not math.isfinite(number):
        raise ValueError(f"`{name}` must be a finite number, got {shorten(value)}.")
    if name == "seed" and not 0 <= number < 2**63:
        raise ValueError(f"`seed` must be an integer in [0, 2**63), got {shorten(value)}.")
    if kind is int:
        if not number.is_integer():
            raise ValueError(f"`{name}` must be a whole number, got {shorten(value)}.")
        return int(number)
    return number


def _open_rgba(path: str) -> Image.Image:
    """A painted layer keeps its transparency (the mask is where it is opaque); its size is checked before decoding."""
    name = Path(path).name
    try:
        with Image.open(path) as opened:
            check_pixel_budget(*opened.size, MAX_IMAGE_PIXELS, name="mask layer", path=name)
            return opened.convert("RGBA")
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        if isinstance(error, ValueError) and str(error).startswith("`"):
            raise
        raise ValueError(f"`mask layer`: {name} is not a readable image ({error}).".replace(path, name)) from None


def _reference_size(engine: SearchEngine, gallery: str | None, reference_id: str | None):
    if reference_id is None:
        return None
    return engine.gallery(gallery).open_image(reference_id).size


def _format_timings(result: dict) -> str:
    query = result["query"]
    reference = f"gallery picture `{query['reference_id']}`" if query["reference_id"] else "the uploaded picture"
    if not query["reference_id"] and not query["uploaded_reference"]:
        reference = "no picture"
    extras = [f"not “{query['negative_text']}”" if query["negative_text"] else "", "masked" if query["mask"] else ""]
    extras = ", ".join(extra for extra in extras if extra)
    lines = [f"**Query:** {reference} + “{query['text']}”" + (f" ({extras})" if extras else "") + "  ", ""]
    rows = lines + ["| Method | Encode (ms) | Compose (ms) | Search (ms) | Total (ms) |", "|---|---:|---:|---:|---:|"]
    for column in result["columns"].values():
        timings = column["timings"]
        total = timings["encode"] + timings["compose"] + timings["search"]
        source = timings["encode_source"]
        note = {"stored": " (stored: no image-encoder pass)", "none": " (no image)"}.get(source, "")
        if source.endswith("shared"):
            note = " (shared)"
        rows.append(
            f"| {column['label']} | {timings['encode'] * 1e3:.1f}{note} | {timings['compose'] * 1e3:.1f} | "
            f"{timings['search'] * 1e3:.1f} | {total * 1e3:.1f} |"
        )
    return "\n".join(rows)


def build_app(engine: SearchEngine, title: str = "hf-cir · composed image search") -> gr.Blocks:
    """The Blocks of the page; `launch_app` serves it.

    Example:

    ```python
    >>> from hf_cir.app.engine import SearchEngine
    >>> from hf_cir.app.server import build_app
    >>> demo = build_app(SearchEngine.from_folders(["photos.index"]))  # doctest: +SKIP
    >>> demo.queue().launch()  # doctest: +SKIP
    ```
    """
    names = list(engine.galleries)
    first = engine.galleries[names[0]]
    max_columns = max(len(gallery.columns) for gallery in engine.galleries.values())
    defaults = engine.sampling_defaults(first.name)

    def method_choices(gallery) -> list[tuple[str, str]]:
        return [(column.label, column.key) for column in gallery.columns.values()]

    def browse_items(gallery) -> list[tuple[str, str]]:
        # A fixed sample of the gallery (the same on every page load), in index order.
        chosen = sorted(random.Random(0).sample(range(len(gallery.ids)), min(BROWSE_LIMIT, len(gallery.ids))))
        items = []
        for row in chosen:
            try:
                items.append((gallery.shown_file(gallery.ids[row]), gallery.ids[row]))
            except ValueError:  # an indexed image that cannot be read (any more) is not offered
                continue
        return items

    def editor_value(path: str) -> dict:
        return {"background": path, "layers": [], "composite": path}

    example = first.examples[0] if first.examples else None

    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(INTRO)
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=320):
                gallery_choice = gr.Dropdown(
                    choices=names, value=first.name, label="Gallery", visible=len(names) > 1, interactive=True
                )
                gr.Markdown(
                    "**1.** Upload a reference picture or click one below; paint over what CompoDiff may change."
                )
                reference = gr.ImageEditor(
                    label="Reference picture",
                    type="filepath",
                    sources=("upload", "clipboard"),
                    transforms=(),
                    layers=False,
                    brush=gr.Brush(colors=["#ff00ff"], color_mode="fixed"),
                    height=360,
                    elem_classes=["hf-cir-reference"],
                )
                reference_id = gr.Textbox(
                    value="",
                    label="Picked from the gallery (its stored embedding is reused)",
                    placeholder="(an uploaded picture)",
                    interactive=False,
                )
                gr.Markdown("**2.** Say what should be different, then **Search**.")
                text = gr.Textbox(
                    label="What should change?",
                    placeholder="e.g. make it blue",
                    max_length=MAX_TEXT_CHARS,
                )
                negative_text = gr.Textbox(
                    label="What it should not be (CompoDiff only, optional)", max_length=MAX_TEXT_CHARS
                )
                methods = gr.CheckboxGroup(
                    choices=method_choices(first),
                    value=list(first.columns),
                    label="Methods to compare",
                )
                search_button = gr.Button("Search", variant="primary")
                with gr.Accordion("Settings", open=False):
                    top_k = gr.Slider(1, 50, value=10, step=1, label="Results per method")
                    steps_default = defaults.get("num_inference_steps", STEP_CHOICES[-1])
                    steps = gr.Radio(
                        choices=sorted({*STEP_CHOICES, int(steps_default)}),
                        value=int(steps_default),
                        label="CompoDiff denoising steps",
                    )
                    guidance_scale = gr.Slider(
                        0, 15, value=float(defaults.get("guidance_scale", 7.5)), step=0.1, label="Text guidance scale"
                    )
                    image_guidance_scale = gr.Slider(
                        0,
                        5,
                        value=float(defaults.get("image_guidance_scale", 1.5)),
                        step=0.1,
                        label="Image guidance scale",
                    )
                    source_weight = gr.Slider(
                        0,
                        1,
                        value=float(defaults.get("source_weight", 0.0)),
                        step=0.05,
                        label="Source weight (mix the reference back in)",
                    )
                    seed = gr.Number(value=int(defaults.get("seed", 0)), precision=0, label="Seed")
                    mask = gr.Image(
                        label="Or upload a mask (white = the region to change; replaces the painted one)",
                        type="filepath",
                        sources=("upload",),
                        height=160,
                    )
                if engine.decoder is not None:
                    imagine_button = gr.Button("Imagine the CompoDiff query")
                    imagined = gr.Image(label="CompoDiff's query, decoded with unCLIP", interactive=False)
            with gr.Column(scale=5):
                timings = gr.Markdown("Results appear here.", elem_classes=["hf-cir-timings"])
                result_galleries = []
                columns = list(first.columns.values())
                for position in range(max_columns):
                    label = columns[position].label if position < len(columns) else ""
                    result_galleries.append(
                        gr.Gallery(
                            label=label,
                            columns=10,
                            height=RESULT_HEIGHT,
                            object_fit="contain",
                            allow_preview=False,
                            visible=position < len(columns),
                            elem_classes=["hf-cir-results"],
                            elem_id=f"hf-cir-results-{position}",
                        )
                    )
                with gr.Accordion("Answer of the /search API (JSON)", open=False):
                    answer = gr.JSON(label="ranked ids, scores and paths")
        with gr.Accordion("The gallery: click a picture to use it as the reference", open=True):
            browse = gr.Gallery(
                value=[path for path, _ in browse_items(first)],
                columns=16,
                height="auto",
                object_fit="contain",
                allow_preview=False,
                show_label=False,
                elem_classes=["hf-cir-browse"],
            )

        query_inputs = [
            gallery_choice,
            reference,
            reference_id,
            text,
            negative_text,
            methods,
            top_k,
            steps,
            guidance_scale,
            image_guidance_scale,
            source_weight,
            seed,
            mask,
        ]

        # The API's parameter names are these functions' argument names.
        def search(
            gallery=None,
            reference=None,
            reference_id=None,
            text=None,
            negative_text=None,
            methods=None,
            top_k=None,
            steps=None,
            guidance_scale=None,
            image_guidance_scale=None,
            source_weight=None,
            seed=None,
            mask=None,
        ):
            """Rank the gallery for a reference (image editor value, or `reference_id` of a gallery image) + text."""
            inputs = {name: value for name, value in locals().items() if name in QUERY_PARAMETERS}
            try:
                return engine.search(gallery, _query_from_inputs(engine, **inputs))
            except Exception as error:
                if not is_user_error(error):
                    raise
                raise gr.Error(_message(error, engine), print_exception=False) from None

        def show(result: dict | None):
            if not result:
                return [gr.update()] * (2 + len(result_galleries))
            updates = [result["query"]["reference_id"] or "", _format_timings(result)]
            shown = list(result["columns"].values())
            gallery = engine.gallery(result["gallery"])
            for position in range(len(result_galleries)):
                if position < len(shown):
                    column = shown[position]
                    # Pictures by id, through the gallery (this event's input is page state a client could forge).
                    items = [
                        (gallery.shown_file(hit["id"]), f"#{int(hit['rank'])} · {float(hit['score']):.2f}")
                        for hit in column["hits"]
                    ]
                    total = sum(value for key, value in column["timings"].items() if key != "encode_source")
                    label = f"{column['label']} · {total * 1e3:.0f} ms"
                    updates.append(gr.update(value=items, label=label, visible=True))
                else:
                    updates.append(gr.update(value=None, visible=False))
            return updates

        search_button.click(search, query_inputs, answer, api_name="search", preprocess=False).success(
            show, answer, [reference_id, timings, *result_galleries], api_visibility="private"
        )
        text.submit(search, query_inputs, answer, api_visibility="private", preprocess=False).success(
            show, answer, [reference_id, timings, *result_galleries], api_visibility="private"
        )

        def pick_from(position: int):
            def pick(result: dict | None, evt: gr.SelectData):
                columns_ = list((result or {}).get("columns", {}).values())
                if position >= len(columns_) or evt.index >= len(columns_[position]["hits"]):
                    return gr.update(), gr.update()
                hit = columns_[position]["hits"][evt.index]
                return editor_value(engine.gallery(result["gallery"]).shown_file(hit["id"])), hit["id"]

            return pick

        for position, result_gallery in enumerate(result_galleries):
            result_gallery.select(pick_from(position), answer, [reference, reference_id], api_visibility="private")

        def pick_browsed(gallery_name: str, evt: gr.SelectData):
            gallery = engine.gallery(gallery_name)
            image_id = browse_items(gallery)[evt.index][1]
            return editor_value(gallery.shown_file(image_id)), image_id

        browse.select(pick_browsed, gallery_choice, [reference, reference_id], api_visibility="private")

        def switch_gallery(gallery_name: str):
            gallery = engine.gallery(gallery_name)
            return (
                gr.update(choices=method_choices(gallery), value=list(gallery.columns)),
                [path for path, _ in browse_items(gallery)],
                None,
                "",
            )

        gallery_choice.change(
            switch_gallery, gallery_choice, [methods, browse, reference, reference_id], api_visibility="private"
        )

        if example is not None:
            # The page opens on an example query (not the API's defaults: an API call names its own reference).
            demo.load(
                lambda: (editor_value(first.shown_file(example[0])), example[0], example[1]),
                None,
                [reference, reference_id, text],
                api_visibility="private",
            )

        if engine.decoder is not None:

            def imagine(
                gallery=None,
                reference=None,
                reference_id=None,
                text=None,
                negative_text=None,
                methods=None,
                top_k=None,
                steps=None,
                guidance_scale=None,
                image_guidance_scale=None,
                source_weight=None,
                seed=None,
                mask=None,
            ):
                """Decode CompoDiff's query embedding for the same inputs as /search into a picture."""
                inputs = {name: value for name, value in locals().items() if name in QUERY_PARAMETERS}
                try:
                    picture, _ = engine.imagine(gallery, _query_from_inputs(engine, **inputs))
                except Exception as error:
                    if not is_user_error(error):
                        raise
                    raise gr.Error(_message(error, engine), print_exception=False) from None
                return picture

            imagine_button.click(imagine, query_inputs, imagined, api_name="imagine", preprocess=False)
    return demo


def _message(error: BaseException, engine: SearchEngine | None = None) -> str:
    """The one line a client sees: the error's own words, with any server folder the app knows of left out (the
    engine's messages name ids and upload names; this is the backstop for a library message that names a file)."""
    message = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    folders = {get_upload_folder(), str(Path(get_upload_folder()).resolve())}
    if engine is not None:
        for gallery in engine.galleries.values():
            folders |= {str(gallery.root), str(gallery.shown_folder)}
            folders |= {str(served.index.location) for served in gallery.served if served.index.location}
    for folder in sorted(folders, key=len, reverse=True):
        message = re.sub(re.escape(folder.rstrip("/")) + r"/?", "<server>/", message)
    return message


def launch_app(
    engine: SearchEngine,
    host: str = "127.0.0.1",
    port: int | None = None,
    share: bool = False,
    concurrency_limit: int = CONCURRENCY,
    queue_size: int = QUEUE_SIZE,
    max_file_size: str | int | None = "50mb",
    **launch_kwargs,
):
    """Serve the page; only copies of the galleries' indexed images (and Gradio's own upload cache) are readable
    through it, never the image folders themselves.

    Queries wait in Gradio's queue (`queue_size` at most; more are refused at once) and run `concurrency_limit` at a
    time per event; whatever the limit, the engine runs the model work of its queries one at a time (the models and
    their caches are shared). Gradio's own start-up lines are replaced by ours: its hints name `launch()` arguments
    (`share=True`), not the options of `hf-cir app` (`--share`).
    """
    block = not launch_kwargs.pop("prevent_thread_lock", False)
    demo = build_app(engine)
    demo.queue(default_concurrency_limit=concurrency_limit, max_size=queue_size)
    demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        allowed_paths=[str(folder) for folder in engine.shown_folders],
        max_file_size=max_file_size,
        css=CSS,
        quiet=True,
        prevent_thread_lock=True,
        **launch_kwargs,
    )
    print(f"hf-cir app: open {demo.local_url}", file=sys.stderr, flush=True)
    if demo.share_url:
        print(f"hf-cir app: public link {demo.share_url}", file=sys.stderr, flush=True)
    elif not share:
        print("hf-cir app: no public link (hf-cir app --share opens one)", file=sys.stderr, flush=True)
    if block:
        demo.block_thread()
    return demo
