"""The toy build tools (`training/toy/`, not part of the installed package), imported by path for the tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

TOY_TOOLS = Path(__file__).resolve().parents[2] / "training" / "toy"


def load_toy_tool(name: str):
    """`training/toy/{name}.py` as a module (registered under its file name, as the build script imports it)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, TOY_TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
