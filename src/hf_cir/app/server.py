"""The page of `hf-cir app` (Gradio Blocks) over a [`SearchEngine`], and its API.

The page's queries are the API: the Search button calls the endpoint `/search`, the Imagine button `/imagine`;
both take the same inputs (`gradio_client.Client(url).predict(..., api_name="/search")`) and `/search` answers the
JSON of [`SearchEngine.search`]. Everything else (rendering results, picking a reference) is page-only.

Only this module imports gradio (`pip install hf-cir[app]`).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from ..utils import load_image
from .engine import Query, SearchEngine, load_upload, mask_from_strokes

__all__ = ["build_app", "launch_app", "USER_ERRORS"]

# Errors that are the user's input: shown as one message on the page (and returned to API clients).
USER_ERRORS = (ValueError, FileNotFoundError, KeyError, OSError)
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


def _file_path(value: Any) -> str | None:
    """The server path inside a Gradio file payload (a path string, a FileData dict, or None)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value or None
    if isinstance(value, dict):
        return value.get("path") or None
    return getattr(value, "path", None)


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
    reference_id = (reference_id or "").strip() or None
    background = _file_path(reference.get("background"))
    image = load_upload(background, "reference image") if background is not None else None
    if reference_id is not None:
        picked = load_image(engine.gallery(gallery).image_path(reference_id), name="reference_id")
        if image is not None:
            # The page sends the editor's picture with the id of the gallery picture it was set to: the stored
            # embedding is used only while the picture is still that gallery image, pixel for pixel.
            if image.size == picked.size and image.tobytes() == picked.tobytes():
                image = None
            else:
                reference_id = None
    mask_image = None
    mask_path = _file_path(mask)
    if mask_path is not None:
        mask_image = load_upload(mask_path, "mask").convert("L")
    else:
        strokes = [_open_rgba(path) for path in map(_file_path, reference.get("layers") or []) if path]
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
    """A number input (`None` or "" when not given); a clear error for anything else."""
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a number, got {value!r}.") from None
    if kind is int:
        if not number.is_integer():
            raise ValueError(f"`{name}` must be a whole number, got {value!r}.")
        return int(number)
    return number


def _open_rgba(path: str) -> Image.Image:
    """A painted layer keeps its transparency (the mask is where it is opaque)."""
    try:
        with Image.open(path) as opened:
            return opened.convert("RGBA")
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"`mask layer`: {Path(path).name} is not a readable image ({error}).") from error


def _reference_size(engine: SearchEngine, gallery: str | None, reference_id: str | None):
    if reference_id is None:
        return None
    return load_image(engine.gallery(gallery).image_path(reference_id), name="reference_id").size


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
        return [(str(gallery.root / gallery.ids[row]), gallery.ids[row]) for row in chosen]

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
                )
                negative_text = gr.Textbox(label="What it should not be (CompoDiff only, optional)")
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
            except USER_ERRORS as error:
                raise gr.Error(_message(error), print_exception=False) from None

        def show(result: dict | None):
            if not result:
                return [gr.update()] * (2 + len(result_galleries))
            updates = [result["query"]["reference_id"] or "", _format_timings(result)]
            shown = list(result["columns"].values())
            for position in range(len(result_galleries)):
                if position < len(shown):
                    column = shown[position]
                    items = [(hit["image_path"], f"#{hit['rank']} · {hit['score']:.2f}") for hit in column["hits"]]
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
                return editor_value(hit["image_path"]), hit["id"]

            return pick

        for position, result_gallery in enumerate(result_galleries):
            result_gallery.select(pick_from(position), answer, [reference, reference_id], api_visibility="private")

        def pick_browsed(gallery_name: str, evt: gr.SelectData):
            gallery = engine.gallery(gallery_name)
            image_id = browse_items(gallery)[evt.index][1]
            return editor_value(str(gallery.image_path(image_id))), image_id

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
                lambda: (editor_value(str(first.root / example[0])), example[0], example[1]),
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
                except USER_ERRORS as error:
                    raise gr.Error(_message(error), print_exception=False) from None
                return picture

            imagine_button.click(imagine, query_inputs, imagined, api_name="imagine", preprocess=False)
    return demo


def _message(error: BaseException) -> str:
    return str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)


def launch_app(
    engine: SearchEngine,
    host: str = "127.0.0.1",
    port: int | None = None,
    share: bool = False,
    concurrency_limit: int = 1,
    max_file_size: str | int | None = "50mb",
    **launch_kwargs,
):
    """Serve the page; only the galleries' image folders (and Gradio's own upload cache) are readable through it.

    Queries wait in Gradio's queue and run `concurrency_limit` at a time per event (one by default); whatever the
    limit, the engine runs the model work of its queries one at a time (the models and their caches are shared).
    """
    demo = build_app(engine)
    demo.queue(default_concurrency_limit=concurrency_limit)
    return demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        allowed_paths=[str(Path(root)) for root in engine.roots],
        max_file_size=max_file_size,
        css=CSS,
        **launch_kwargs,
    )
