"""Model families by name: each family registers itself with [`register_model_family`] in its own module of this
package (`hf_cir/families/<family>.py`), found and imported the first time the table is read.

Nothing here imports a deep-learning library: a family's parts are `"module:attribute"` strings, resolved by
[`ModelFamily.load`] when a caller runs them. See `docs/adding-a-method.md`.
"""

from __future__ import annotations

import importlib
import os

from .registry import (
    BASELINE_METHODS,
    MODEL_FAMILIES,
    QUERY_ARGUMENT_NAMES,
    Converter,
    ConverterArgument,
    MethodSpec,
    ModelFamily,
    ModelFolder,
    all_methods,
    check_method,
    family_of_method,
    get_model_family,
    method_spec,
    methods_taking,
    own_methods,
    read_model_folder,
    register_model_family,
    resolve,
)

__all__ = [
    "BASELINE_METHODS",
    "MODEL_FAMILIES",
    "QUERY_ARGUMENT_NAMES",
    "Converter",
    "ConverterArgument",
    "MethodSpec",
    "ModelFamily",
    "ModelFolder",
    "all_methods",
    "check_method",
    "family_of_method",
    "get_model_family",
    "method_spec",
    "methods_taking",
    "own_methods",
    "model_families",
    "read_model_folder",
    "register_model_family",
    "resolve",
]

# Modules of this package that are not a family's registration.
_NOT_FAMILIES = {"registry"}
_loaded = False


def model_families() -> dict[str, ModelFamily]:
    """Every registered family by model type (the built-in ones imported on first use), in registration order.

    Example:

    ```python
    >>> from hf_cir.families import model_families
    >>> {"compodiff", "lincir"} <= set(model_families())
    True
    ```
    """
    global _loaded
    if not _loaded:
        _loaded = True
        names = {name[:-3] for folder in __path__ for name in os.listdir(folder) if name.endswith(".py")}
        for name in sorted(names - _NOT_FAMILIES):
            if not name.startswith("_"):
                importlib.import_module(f"{__name__}.{name}")
    return MODEL_FAMILIES
