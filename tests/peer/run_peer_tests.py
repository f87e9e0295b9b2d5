"""Run the peers' common test suites on hf-cir's classes (`make peer-test`).

    python tests/peer/run_peer_tests.py [--diffusers-src PATH] [--transformers-sdist FILE] [pytest arguments...]

transformers' suites come from the PyPI sdist of the installed transformers (downloaded once into
`$HF_CIR_PEER_CACHE`, default ~/.cache/hf-cir/peer); diffusers' from a diffusers source checkout (its sdist ships no
tests). Both are materialised into a temporary folder at test time (tests/peer/conftest.py), never into this
repository. Every test that does not apply is skipped with its reason; the report lists each skip (`-rs`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

PEER_DIR = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--diffusers-src", help="A diffusers source checkout (its tests/ folder is used).")
    parser.add_argument("--transformers-sdist", help="The transformers sdist to use instead of downloading it.")
    args, pytest_args = parser.parse_known_args(argv)
    env = dict(os.environ, HF_CIR_PEER_TESTS="1")
    if args.diffusers_src:
        if not (Path(args.diffusers_src) / "tests").is_dir():
            parser.error(f"--diffusers-src {args.diffusers_src}: expected a diffusers checkout with a tests/ folder.")
        env["DIFFUSERS_SRC"] = str(Path(args.diffusers_src).resolve())
    if args.transformers_sdist:
        env["TRANSFORMERS_SDIST"] = str(Path(args.transformers_sdist).resolve())
    # `-m ""`: the project's own `-m "not slow"` would deselect the suites' slow tests silently; they skip themselves
    # (with the reason printed) unless RUN_SLOW is set.
    command = [
        sys.executable,
        "-m",
        "pytest",
        str(PEER_DIR),
        "-p",
        "no:cacheprovider",
        "-rsxfE",
        "--timeout=600",
        "-m",
        "",
    ]
    return subprocess.call(command + pytest_args, env=env, cwd=PEER_DIR.parents[1])


if __name__ == "__main__":
    sys.exit(main())
