"""Make a Hub remote-code CompoDiff folder from a saved `CompoDiffPipeline` folder (see README.md here).

Usage:
    python pipelines/compodiff/make_hub_folder.py SAVED_PIPELINE_FOLDER [--output-dir HUB_FOLDER]

Without `--output-dir` the folder is changed in place.
"""

from __future__ import annotations

import argparse
import shutil
import sys

from hf_cir.hub import make_remote_code_folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="a folder written by CompoDiffPipeline.save_pretrained or `hf-cir convert`")
    parser.add_argument("--output-dir", default=None, help="write a copy here instead of changing FOLDER")
    args = parser.parse_args(argv)
    folder = args.folder
    if args.output_dir is not None:
        shutil.copytree(folder, args.output_dir)
        folder = args.output_dir
    make_remote_code_folder(folder)
    print(f"Hub remote-code layout ready in {folder}: DiffusionPipeline.from_pretrained(..., trust_remote_code=True)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
