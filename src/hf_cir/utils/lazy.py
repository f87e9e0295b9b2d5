"""Lazy package attributes (PEP 562), so that `hf-cir --help` and `import hf_cir` import no deep-learning library.

A package lists what it exports and the submodule each name lives in; the submodule is imported the first time the
name is used, as transformers' and diffusers' own lazy modules do.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """`(__getattr__, __dir__)` for the package `package` whose attribute `name` is `exports[name]`'s `name`.

    Example:

    ```python
    >>> from hf_cir.utils.lazy import lazy_exports
    >>> getattr_, dir_ = lazy_exports("hf_cir.utils", {"atomic_file": ".io"})
    >>> getattr_("atomic_file").__module__, "atomic_file" in dir_()
    ('hf_cir.utils.io', True)
    ```
    """
    package_globals = importlib.import_module(package).__dict__

    def __getattr__(name: str) -> object:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name], package), name)
        package_globals[name] = value  # later lookups are plain attribute reads
        return value

    def __dir__() -> list[str]:
        return sorted(set(package_globals) | set(exports))

    return __getattr__, __dir__
