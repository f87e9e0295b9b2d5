"""Benchmarks by name: each benchmark class registers itself with [`register_benchmark`] when its module is imported.

`hf_cir.evaluation` imports CIRR, CIRCO, FashionIQ and GeneCIS; `hf_cir.toy` registers the toy benchmark (it lives
with the toy world, a layer above evaluation). A benchmark of your own is one decorated class away.
"""

from __future__ import annotations

import os

from .base import Benchmark

__all__ = ["BENCHMARKS", "get_benchmark", "get_benchmark_class", "register_benchmark"]

# name -> benchmark class, filled by `register_benchmark` as the benchmark modules are imported.
BENCHMARKS: dict[str, type[Benchmark]] = {}


def register_benchmark(cls: type[Benchmark]) -> type[Benchmark]:
    """Class decorator: make `cls` available as `get_benchmark(cls.name)` and `hf-cir evaluate --benchmark NAME`.

    Example:

    ```python
    >>> from hf_cir.evaluation import BENCHMARKS, Benchmark, register_benchmark
    >>> @register_benchmark
    ... class MyBenchmark(Benchmark):
    ...     name = "my-benchmark"
    >>> BENCHMARKS["my-benchmark"].__name__
    'MyBenchmark'
    >>> del BENCHMARKS["my-benchmark"]
    ```
    """
    if not (isinstance(cls, type) and issubclass(cls, Benchmark)) or not cls.name:
        raise TypeError(f"register_benchmark takes a Benchmark subclass with a `name`, got {cls!r}.")
    registered = BENCHMARKS.get(cls.name)
    if registered is not None and registered.__qualname__ != cls.__qualname__:
        raise ValueError(f"A benchmark named {cls.name!r} is already registered ({registered.__module__}).")
    BENCHMARKS[cls.name] = cls
    return cls


def get_benchmark_class(name: str) -> type[Benchmark]:
    """The benchmark class registered as `name`.

    Example:

    ```python
    >>> from hf_cir.evaluation import get_benchmark_class
    >>> get_benchmark_class("cirr").__name__
    'CIRRBenchmark'
    ```
    """
    if name not in BENCHMARKS:
        hint = " (the toy benchmark registers itself with `import hf_cir.toy`)" if name == "toy" else ""
        raise ValueError(f"Unknown benchmark {name!r}; expected one of: {', '.join(sorted(BENCHMARKS))}{hint}.")
    return BENCHMARKS[name]


def get_benchmark(name: str, data_dir: str | os.PathLike | None = None, split: str = "val", **kwargs) -> Benchmark:
    """Build the benchmark `name` over `data_dir` (checked against the benchmark's layout).

    Example:

    ```python
    >>> from hf_cir.evaluation import get_benchmark
    >>> benchmark = get_benchmark("circo", "data/CIRCO", split="val")  # doctest: +SKIP
    ```
    """
    cls = get_benchmark_class(name)
    if data_dir is None and cls.needs_data_dir:
        raise ValueError(f"Benchmark {name!r} needs a data directory (--data-dir).")
    return cls(data_dir, split=split, **kwargs)
