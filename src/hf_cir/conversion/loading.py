# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""The one load path of every converter (`hf-cir convert lincir|searle|pic2word|compodiff|...`).

Released checkpoints and the transformers components they are converted with are read here, and every failure is a
`FileNotFoundError` or `ValueError` of one line that names the argument, the file and what was expected, instead of
a library's message without a file name (safetensors' "Error while deserializing header") or an essay (torch's
"Weights only load failed ...").
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["load_checkpoint_file", "load_pretrained_component"]

# The longest piece of a library's own message kept in ours: its first line, cut here.
_MAX_DETAIL = 160


def _detail(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    first = lines[0] if lines else type(error).__name__
    return first if len(first) <= _MAX_DETAIL else first[: _MAX_DETAIL - 3] + "..."


def _looks_like_safetensors(path: Path) -> bool:
    """Whether `path` is a safetensors file: by its name, or by its start (an 8-byte header length, then `{`)."""
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as handle:
        start = handle.read(9)
    return len(start) == 9 and start[8:9] == b"{" and not start.startswith((b"PK", b"\x80"))


def load_checkpoint_file(path: str | os.PathLike, argument: str, expected: str) -> Any:
    """
    Read a released checkpoint file: safetensors (a dict of tensors) or a torch pickle, the latter with
    `torch.load(..., weights_only=True)` (no code in the file runs).

    Args:
        path: The file.
        argument: How the caller's argument is called, for the message (e.g. `"phi_checkpoint"`).
        expected: What the file should hold, for the message (e.g. `"the released lincir_large.pt"`).

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: `path` is a folder, is empty, or is not a readable safetensors file or weights-only torch pickle.

    Example:

    ```python
    >>> import tempfile
    >>> from hf_cir.conversion.loading import load_checkpoint_file
    >>> empty = tempfile.NamedTemporaryFile(suffix=".safetensors").name
    >>> _ = open(empty, "wb")
    >>> load_checkpoint_file(empty, "checkpoint", "a CompoDiff state dict")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: `checkpoint` ....safetensors is empty (0 bytes); expected a CompoDiff state dict.
    ```
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"`{argument}`: no such file: {path}")
    if not path.is_file():
        raise ValueError(f"`{argument}` {path} is not a file; expected {expected}.")
    if path.stat().st_size == 0:
        raise ValueError(f"`{argument}` {path} is empty (0 bytes); expected {expected}.")
    if _looks_like_safetensors(path):
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as error:  # safetensors raises its own SafetensorError, or OSError for unreadable files
            raise ValueError(
                f"`{argument}` {path} is not a readable safetensors file ({_detail(error)}); expected {expected}."
            ) from error
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a corrupt or foreign file fails anywhere inside the unpickler
        raise ValueError(
            f"`{argument}` {path} is not a torch checkpoint that loads with `weights_only=True` ({_detail(error)}); "
            f"expected {expected}."
        ) from error


def load_pretrained_component(
    load: Callable[[str], Any], name_or_path: str | os.PathLike, argument: str, expected: str
) -> Any:
    """
    `load(name_or_path)` (a `from_pretrained`) for a component a converter needs (text or image encoder, tokenizer,
    image processor, CLIP), with one line naming the argument when it fails.

    Raises:
        ValueError: `name_or_path` is a file (a folder or a Hub id is expected), or loading failed.

    Example:

    ```python
    >>> from transformers import CLIPTextModel
    >>> from hf_cir.conversion.loading import load_pretrained_component
    >>> from hf_cir.toy import toy_checkpoint
    >>> load_pretrained_component(  # doctest: +ELLIPSIS
    ...     CLIPTextModel.from_pretrained, f"{toy_checkpoint('clip')}/config.json", "text_encoder", "a CLIPTextModel"
    ... )
    Traceback (most recent call last):
    ...
    ValueError: `text_encoder` .../config.json is a file; expected a CLIPTextModel: a folder (config.json and weights) or a Hub id.
    ```
    """
    if os.path.isfile(name_or_path):
        raise ValueError(
            f"`{argument}` {name_or_path} is a file; expected {expected}: a folder (config.json and weights) or a Hub id."
        )
    try:
        return load(str(name_or_path))
    except ImportError:  # a missing optional dependency: its own message says what to install
        raise
    except Exception as error:  # transformers raises OSError, ValueError, RuntimeError, ... for a wrong folder
        raise ValueError(f"`{argument}` {name_or_path}: could not load {expected} ({_detail(error)}).") from error
