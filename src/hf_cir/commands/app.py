"""`hf-cir app`: a browser page (and HTTP API) for composed search on the toy default or your own galleries."""

from __future__ import annotations

import argparse
import sys

from ._common import USER_ERRORS, add_model_arguments, report_error, sampling_from_args

EXAMPLE = """example:
  hf-cir app                                   # the toy gallery with the shipped LinCIR and CompoDiff, offline
  hf-cir app --index photos-lincir.index photos-compodiff.index
  hf-cir app --index photos.index --model path/to/lincir --port 8080 --decoder path/to/stable-unclip

Open http://127.0.0.1:7860 (or the --port given). Every search of the page is also an API endpoint:
  from gradio_client import Client; Client("http://127.0.0.1:7860/").view_api()
Needs the app extra: pip install 'hf-cir[app]'.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "app",
        help="search galleries in the browser: methods side by side, masks, click a result to refine",
        description=(
            "Serve a Gradio page for composed image search. Without --index it serves the toy gallery with the "
            "shipped toy LinCIR and CompoDiff (built under --cache-dir on first use, offline). With --index it serves "
            "your galleries: indexes over the same image folder are shown together, each queried with the model that "
            "built it (or the matching --model)."
        ),
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--index", nargs="+", action="extend", default=None, help="index folders written by `hf-cir index`"
    )
    add_model_arguments(parser, required=False, multiple=True)
    parser.add_argument(
        "--decoder",
        default=None,
        help="a diffusers unCLIP pipeline folder (e.g. StableUnCLIPImg2ImgPipeline) to picture CompoDiff's query",
    )
    parser.add_argument(
        "--cache-dir", default=None, help="where the toy gallery is kept (default: ~/.cache/hf-cir/toy-gallery)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)")
    parser.add_argument("--port", type=int, default=None, help="port (default: 7860, or the next free one)")
    parser.add_argument("--share", action="store_true", help="also open a public Gradio share link (off by default)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        import gradio  # noqa: F401
    except ImportError:
        return report_error("app", ImportError("the app needs gradio: pip install 'hf-cir[app]'."))
    import torch

    from hf_cir.app.engine import SearchEngine, load_toy_engine
    from hf_cir.app.server import launch_app

    try:
        if args.port is not None and not 0 < args.port < 65536:
            raise ValueError(f"--port must be in 1..65535, got {args.port}.")
        decoder = _load_decoder(args.decoder, args.device) if args.decoder else None
        if args.index:
            engine = SearchEngine.from_folders(
                args.index,
                args.model,
                device=args.device,
                dtype=getattr(torch, args.dtype),
                sampling=sampling_from_args(args),
                decoder=decoder,
            )
        else:
            if args.model:
                raise ValueError(
                    "--model needs --index: build an index with `hf-cir index` and serve it with --index."
                )
            engine = load_toy_engine(
                args.cache_dir, device=args.device or "cpu", decoder=decoder, sampling=sampling_from_args(args)
            )
    except USER_ERRORS as error:
        return report_error("app", error)
    print(f"hf-cir app: serving the gallery {', '.join(engine.galleries)}", file=sys.stderr)
    launch_app(engine, host=args.host, port=args.port, share=args.share)
    return 0


def _load_decoder(path: str, device: str | None):
    from diffusers import DiffusionPipeline

    decoder = DiffusionPipeline.from_pretrained(path)
    if device:
        decoder = decoder.to(device)
    decoder.set_progress_bar_config(disable=True)
    return decoder
