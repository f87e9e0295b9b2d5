"""Where the shipped toy checkpoints live."""

from __future__ import annotations

from pathlib import Path

__all__ = ["default_checkpoints_dir", "toy_checkpoint"]


def default_checkpoints_dir() -> Path:
    """The folder of the toy checkpoints shipped inside the package: `hf_cir/toy/checkpoints/{clip,lincir,compodiff}`."""
    return Path(__file__).resolve().parent / "checkpoints"


def toy_checkpoint(name: str) -> Path:
    """The shipped toy checkpoint `name` ("clip", "lincir" or "compodiff"); a clear error when it is missing.

    Example:

    ```python
    >>> from hf_cir.toy.checkpoints import toy_checkpoint
    >>> toy_checkpoint("clip").name
    'clip'
    ```
    """
    if name not in ("clip", "lincir", "compodiff"):
        raise ValueError(f"Unknown toy checkpoint {name!r}; expected 'clip', 'lincir' or 'compodiff'.")
    path = default_checkpoints_dir() / name
    if not (path / ("model_index.json" if name == "compodiff" else "config.json")).is_file():
        raise FileNotFoundError(f"The toy {name} checkpoint is missing from {path}: run `make toy-models`.")
    return path
