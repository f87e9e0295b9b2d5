"""Silencing the progress bars of the libraries hf-cir drives: the one switch the `hf-cir` command (`--no-progress`)
and the training scripts (`--disable_tqdm`) share."""

from __future__ import annotations

import importlib

__all__ = ["disable_progress_bars"]

# Each library's own switch, by module and function name: nothing is imported that is not installed.
_SWITCHES = (
    ("transformers.utils.logging", "disable_progress_bar"),
    ("diffusers.utils.logging", "disable_progress_bar"),
    ("huggingface_hub.utils", "disable_progress_bars"),
    ("datasets.utils.logging", "disable_progress_bar"),
)


def disable_progress_bars() -> None:
    """Turn off the progress bars of transformers (loading and writing shards), diffusers (pipeline loading),
    datasets (map, loading) and huggingface_hub (downloads) in this process, through each library's own switch;
    a library that is not installed is skipped. hf-cir's own bars follow each command's `--no-progress`.

    Example:

    ```python
    >>> import transformers
    >>> from hf_cir.utils.progress import disable_progress_bars
    >>> disable_progress_bars()
    >>> transformers.utils.logging.is_progress_bar_enabled()
    False
    >>> transformers.utils.logging.enable_progress_bar()

    ```
    """
    for module_name, function_name in _SWITCHES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        getattr(module, function_name)()
