"""`hf-cir export`: give a saved CompoDiff or LinCIR folder the Hub remote-code layout."""

from __future__ import annotations

import argparse

EXAMPLE = """example (runs as written on the shipped toy LinCIR, toy:lincir):
  hf-cir export toy:lincir --output-dir lincir-hub         # a copy in the remote-code layout

with your own folders:
  hf-cir export compodiff-old --output-dir compodiff-hub
  hf-cir export lincir-large                               # in place

Then, anywhere (no hf-cir needed):
  DiffusionPipeline.from_pretrained("compodiff-hub", trust_remote_code=True)
  AutoModel.from_pretrained("lincir-large", trust_remote_code=True)

Folders written by CompoDiffPipeline.save_pretrained, `hf-cir convert compodiff` and the training scripts already
have the layout; this converts folders written before it (their model_index.json names hf_cir modules), and LinCIR
folders saved without `auto_map`.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="give a saved CompoDiff or LinCIR folder the Hub remote-code layout",
        description="Copy hf-cir's self-contained module files into a saved folder and point its configs at them.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("folder", help="a saved CompoDiffPipeline or LinCIR folder")
    parser.add_argument("--output-dir", default=None, help="write an exported copy here instead of changing FOLDER")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import shutil
    from pathlib import Path

    from hf_cir.hub.remote_code import make_remote_code_folder
    from hf_cir.utils.io import atomic_directory

    folder = Path(args.folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"FOLDER: no such folder: {folder}")
    if args.output_dir is None:
        make_remote_code_folder(folder)
        target = folder
    else:
        with atomic_directory(args.output_dir, argument="--output-dir") as tmp:
            shutil.copytree(folder, tmp, dirs_exist_ok=True)
            make_remote_code_folder(tmp)
        target = Path(args.output_dir)
    loader = "DiffusionPipeline" if (target / "model_index.json").is_file() else "AutoModel"
    print(f"{target}: remote-code layout ready; load it with {loader}.from_pretrained(..., trust_remote_code=True)")
    return 0
