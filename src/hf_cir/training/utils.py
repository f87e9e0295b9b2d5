# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""Small pieces shared by the training scripts."""

from __future__ import annotations

import contextlib
import importlib
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "import_callable",
    "isolated_rng",
    "load_pretrained",
    "mixed_precision_dtype",
    "resolve_seed",
]


def import_callable(spec: str, argument: str = "--validation_fn") -> Callable:
    """Import `"package.module:attribute"` (or a file path `"path/to/file.py:attribute"`)."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"{argument} must look like 'package.module:function' or 'file.py:function', got {spec!r}.")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise FileNotFoundError(f"{argument}: {path} does not exist.")
            module_spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
        target = getattr(module, attribute)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"{argument} {spec!r} cannot be imported: {error}") from error
    if not callable(target):
        raise ValueError(f"{argument} {spec!r} is not callable.")
    return target


def load_pretrained(cls, source: tuple[str, str | None], **kwargs):
    """`cls.from_pretrained` of a `(name_or_path, subfolder)` source (e.g. a pipeline component, or a standalone
    folder when `subfolder` is `None`), as the encoder sources of the CompoDiff scripts name them.

    Example:

    ```python
    >>> import tempfile
    >>> from transformers import CLIPTextConfig
    >>> from hf_cir.training import load_pretrained
    >>> folder = tempfile.mkdtemp()
    >>> CLIPTextConfig(hidden_size=32).save_pretrained(f"{folder}/text_encoder")
    >>> load_pretrained(CLIPTextConfig, (folder, "text_encoder")).hidden_size
    32

    ```
    """
    name, subfolder = source
    if subfolder:
        return cls.from_pretrained(name, subfolder=subfolder, **kwargs)
    return cls.from_pretrained(name, **kwargs)


def mixed_precision_dtype(mixed_precision: str | None) -> torch.dtype:
    """The dtype frozen weights are cast to under a mixed-precision mode (`"fp16"`, `"bf16"`, `"no"`)."""
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed_precision or "no", torch.float32)


def resolve_seed(accelerator, seed: int | None) -> int:
    """`seed`, or one random seed drawn on the main process and shared with every process (recorded so that a
    resumed run continues with it)."""
    if seed is not None:
        return int(seed)
    from accelerate.utils import broadcast_object_list

    drawn = [int.from_bytes(os.urandom(4), "little") if accelerator.is_main_process else None]
    broadcast_object_list(drawn)
    return drawn[0]


@contextlib.contextmanager
def isolated_rng() -> Iterator[None]:
    """Run a block (e.g. a validation) without changing the torch, numpy and Python random streams of training."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)
