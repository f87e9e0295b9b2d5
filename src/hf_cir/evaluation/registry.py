"""Benchmarks by name. Each entry is imported only when asked for, so a missing optional module breaks nothing else."""

from __future__ import annotations

import importlib
import os

from .base import Benchmark

__all__ = ["BENCHMARKS", "get_benchmark", "get_benchmark_class"]

# name -> "module:Class". `toy` is the procedural toy world (hf_cir.toy), which needs no data directory.
BENCHMARKS: dict[str, str] = {
    "cirr": "hf_cir.evaluation.cirr:CIRRBenchmark",
    "circo": "hf_cir.evaluation.circo:CIRCOBenchmark",
    "fashioniq": "hf_cir.evaluation.fashioniq:FashionIQBenchmark",
    "genecis": "hf_cir.evaluation.genecis:GeneCISBenchmark",
    "toy": "hf_cir.toy.benchmark:ToyBenchmark",
}


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
        raise ValueError(f"Unknown benchmark {name!r}; expected one of: {', '.join(BENCHMARKS)}.")
    module_name, _, class_name = BENCHMARKS[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ImportError(
            f"Benchmark {name!r} needs the module {module_name}, which cannot be imported: {error}"
        ) from error
    return getattr(module, class_name)


def get_benchmark(name: str, data_dir: str | os.PathLike | None = None, split: str = "val", **kwargs) -> Benchmark:
    """Build the benchmark `name` over `data_dir` (checked against the benchmark's layout).

    Example:

    ```python
    >>> from hf_cir.evaluation import get_benchmark
    >>> benchmark = get_benchmark("circo", "data/CIRCO", split="val")  # doctest: +SKIP
    ```
    """
    cls = get_benchmark_class(name)
    if data_dir is None and name != "toy":
        raise ValueError(f"Benchmark {name!r} needs a data directory (--data-dir).")
    return cls(data_dir, split=split, **kwargs)
