# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""
Turn a saved [`CompoDiffPipeline`] folder into the Hub remote-code layout, which loads with
`DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` in a process that has no hf-cir installed.

The three module files are copied verbatim from this package: they import only torch, numpy, PIL, transformers,
diffusers and the standard library, so the copy is the code (no second version to keep in sync). See
pipelines/compodiff/README.md.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..models.compodiff import modeling_compodiff
from ..pipelines.compodiff import pipeline_compodiff
from ..schedulers import scheduling_compodiff

__all__ = ["REMOTE_CODE_FILES", "make_remote_code_folder"]

# (module, where the file goes in the Hub folder, the model_index.json entry it serves, class name)
REMOTE_CODE_FILES = (
    (pipeline_compodiff, "pipeline_compodiff.py", "_class_name", "CompoDiffPipeline"),
    (modeling_compodiff, "prior/modeling_compodiff.py", "prior", "CompoDiffPriorTransformer"),
    (scheduling_compodiff, "scheduler/scheduling_compodiff.py", "scheduler", "CompoDiffScheduler"),
)


def make_remote_code_folder(folder: str | os.PathLike) -> Path:
    """
    Add the remote code to a folder written by `CompoDiffPipeline.save_pretrained` and point `model_index.json` at
    it (`_class_name: ["pipeline_compodiff", "CompoDiffPipeline"]`, `prior: ["modeling_compodiff", ...]`, and the
    scheduler likewise when it is a `CompoDiffScheduler`; a diffusers scheduler keeps its diffusers entry).

    Example:

    ```python
    >>> from hf_cir.hub import make_remote_code_folder
    >>> pipe.save_pretrained("compodiff-hub")  # doctest: +SKIP
    >>> make_remote_code_folder("compodiff-hub")  # doctest: +SKIP
    >>> # then, anywhere: DiffusionPipeline.from_pretrained("compodiff-hub", trust_remote_code=True)
    ```
    """
    folder = Path(folder)
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise FileNotFoundError(f"{folder} is not a saved pipeline folder: no model_index.json.")
    index = json.loads(index_path.read_text())
    if index.get("_class_name") not in ("CompoDiffPipeline", ["pipeline_compodiff", "CompoDiffPipeline"]):
        raise ValueError(f"{folder} holds a {index.get('_class_name')!r}, not a CompoDiffPipeline.")
    for module, relative_path, entry, class_name in REMOTE_CODE_FILES:
        if entry != "_class_name" and (not isinstance(index.get(entry), list) or index[entry][1] != class_name):
            continue  # e.g. a DDIMScheduler: diffusers loads it itself
        target = folder / relative_path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(module.__file__, target)
        stem = Path(relative_path).stem
        index[entry] = [stem, class_name]
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return folder
