# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""Small helpers shared by the benchmark scripts: timing, memory bandwidth, machine description, tables."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Timing:
    """Wall-clock seconds of repeated calls: the best (least disturbed by other processes) and the median."""

    best: float
    median: float
    repeats: int

    @property
    def best_ms(self) -> float:
        return 1e3 * self.best

    @property
    def median_ms(self) -> float:
        return 1e3 * self.median


def synchronize(device: str | torch.device | None) -> None:
    """Wait for queued kernels on `device` (a no-op on CPU) so that wall-clock time measures the work."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1, device: str | torch.device | None = None):
    """Time `fn()` `repeats` times after `warmup` untimed calls.

    Example:

    ```python
    >>> t = measure(lambda: sum(range(1000)), repeats=3)
    >>> t.repeats, t.best <= t.median
    (3, True)
    ```
    """
    if repeats < 1:
        raise ValueError(f"`repeats` must be at least 1, got {repeats}.")
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return Timing(best=min(times), median=statistics.median(times), repeats=repeats)


def read_bandwidth(tensor: torch.Tensor, repeats: int = 5) -> float:
    """Memory read bandwidth in GB/s (1e9 bytes) measured by summing `tensor` (one streaming pass over it).

    Pass a tensor much larger than the last-level cache (e.g. the gallery itself), so that the pass reads memory.

    Example:

    ```python
    >>> import torch
    >>> read_bandwidth(torch.ones(1 << 20), repeats=2) > 0
    True
    ```
    """
    nbytes = tensor.numel() * tensor.element_size()
    timing = measure(lambda: tensor.sum(), repeats=repeats, device=tensor.device)
    return nbytes / timing.best / 1e9


def machine_description() -> dict[str, Any]:
    """CPU model and cores, torch version and threads, and the GPU when there is one."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    try:
        with open("/proc/meminfo") as handle:
            info["memory_gb"] = round(int(handle.readline().split()[1]) / 1e6, 1)
    except (OSError, ValueError, IndexError):
        pass
    try:  # other processes' load disturbs CPU timings: record it beside them
        with open("/proc/loadavg") as handle:
            info["load_avg_1min"] = float(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A GitHub-markdown table of `rows` (dicts); floats get 3 significant decimals, missing cells stay empty.

    Example:

    ```python
    >>> print(format_table([{"method": "exact", "ms": 1.23456}, {"method": "faiss"}]))
    | method | ms |
    |---|---|
    | exact | 1.23 |
    | faiss |  |
    ```
    """
    if not rows:
        return ""
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))

    def cell(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, float):
            if value != value:  # NaN
                return "nan"
            magnitude = abs(value)
            if magnitude >= 100:
                return f"{value:.0f}"
            if magnitude >= 10:
                return f"{value:.1f}"
            if magnitude >= 0.01 or value == 0:
                return f"{value:.2f}"
            return f"{value:.2e}"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(cell(row.get(column)) for column in columns) + " |")
    return "\n".join(lines)


def write_json(path: str | os.PathLike | None, payload: dict[str, Any]) -> None:
    """Write the results as JSON when a path is given (for the README and for machines)."""
    if path is None:
        return
    with open(path, "w") as handle:
        json.dump(payload, handle, indent=1, default=str)
        handle.write("\n")


def parse_dtype(name: str) -> torch.dtype:
    """`"float32"|"fp32"|"float16"|"fp16"|"bfloat16"|"bf16"` to a torch dtype, with a clear error otherwise."""
    names = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "float16": torch.float16,
        "fp16": torch.float16,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
    }
    if name not in names:
        raise ValueError(f"Unknown dtype {name!r}; expected one of {', '.join(names)}.")
    return names[name]


def parse_batch_configs(parser, configs: Sequence[str]) -> list[tuple[int, int]]:
    """`["1x4", "32x2"]` -> `[(1, 4), (32, 2)]` (batch x samples per prompt); a malformed one is a usage error."""
    try:
        parsed = [tuple(int(part) for part in config.lower().split("x")) for config in configs]
        if any(len(config) != 2 or min(config) < 1 for config in parsed):
            raise ValueError
    except ValueError:
        parser.error(f"--configs must look like 1x4 (batch x samples), got {list(configs)}")
    return parsed
