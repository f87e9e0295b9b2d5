# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""Telling the user's mistakes from hf-cir's bugs: the one rule the `hf-cir` command and the training scripts share.

A failure caused by the user's input or environment (a bad argument, a missing, unreadable or malformed file, a
refused pickle, a full disk) ends a program with one line, `<program>: error: <what is wrong>`, and exit status 2.
Anything else is a bug in hf-cir and keeps its traceback.
"""

from __future__ import annotations

import pickle

__all__ = ["USER_ERRORS", "is_user_error", "one_line"]

# Errors that are the user's input or environment, printed as one line instead of a traceback. The Python API raises
# ValueError / FileNotFoundError naming the argument; OSError covers unreadable files, permissions and full disks.
# TypeError, KeyError, AttributeError, ... from inside hf-cir are bugs: they keep their traceback.
USER_ERRORS = (ValueError, OSError, EOFError, pickle.UnpicklingError)

# Third-party errors that are about the input, checked by name so that --help imports none of these libraries.
_THIRD_PARTY_USER_ERRORS = (
    ("PIL", "DecompressionBombError"),
    ("safetensors", "SafetensorError"),
)


def is_user_error(error: BaseException) -> bool:
    """Whether `error` is about the user's input or environment (one line) rather than a bug (a traceback).

    Example:

    ```python
    >>> from hf_cir.utils.errors import is_user_error
    >>> is_user_error(FileNotFoundError("captions.txt")), is_user_error(TypeError("a bug"))
    (True, False)
    ```
    """
    if isinstance(error, ImportError):  # a missing optional dependency, not a broken hf-cir module
        return not str(getattr(error, "name", None) or "").startswith("hf_cir")
    if isinstance(error, USER_ERRORS):
        return True
    # Compared by (top-level package, class name) along the error's MRO: nothing is imported to decide.
    names = {(cls.__module__.partition(".")[0], cls.__qualname__) for cls in type(error).__mro__}
    return any(name in names for name in _THIRD_PARTY_USER_ERRORS)


def one_line(error: BaseException) -> str:
    """The error's message on one line (its lines joined with "; "), or its class name when it has none.

    Example:

    ```python
    >>> from hf_cir.utils.errors import one_line
    >>> one_line(ValueError("bad row 3\\n  expected a string"))
    'bad row 3; expected a string'
    ```
    """
    message = error.args[0] if isinstance(error, KeyError) and error.args else error
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    return "; ".join(lines) or type(error).__name__
