# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""
The Hub remote-code layout of saved folders, which load with `DiffusionPipeline.from_pretrained(folder,
trust_remote_code=True)` or `AutoModel` / `AutoProcessor.from_pretrained(folder, trust_remote_code=True)` in a
process that has no hf-cir installed.

The module files are copied verbatim from this package: they import only torch, numpy, PIL, transformers,
diffusers and the standard library, so the copy is the code (no second version to keep in sync). Folders written
by `CompoDiffPipeline.save_pretrained` already have the layout; [`make_remote_code_folder`] gives it to folders
written before (and to LinCIR folders saved without `auto_map`). `hf-cir export` runs it from the command line.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
from pathlib import Path

from ..families import model_families
from ..models.compodiff import modeling_compodiff
from ..models.lincir import configuration_lincir, modeling_lincir, processing_lincir
from ..pipelines.compodiff import pipeline_compodiff
from ..pipelines.compodiff.pipeline_compodiff import PACKAGE_MODULES_KEY, PEER_LIBRARIES, add_remote_code
from ..schedulers import scheduling_compodiff

__all__ = ["LINCIR_REMOTE_CODE", "REMOTE_CODE_MODULES", "make_remote_code_folder"]

# Every module that a remote-code folder may carry: each must stay self-contained (tested).
REMOTE_CODE_MODULES = (
    pipeline_compodiff,
    modeling_compodiff,
    scheduling_compodiff,
    configuration_lincir,
    modeling_lincir,
    processing_lincir,
)

# LinCIR: the files a remote-code folder carries and the `auto_map` entry of each JSON file that names them.
LINCIR_REMOTE_CODE = {
    "files": (configuration_lincir, modeling_lincir, processing_lincir),
    "auto_map": {
        "config.json": {
            "AutoConfig": "configuration_lincir.LinCIRConfig",
            "AutoModel": "modeling_lincir.LinCIRModel",
        },
        "processor_config.json": {"AutoProcessor": "processing_lincir.LinCIRProcessor"},
    },
}


def make_remote_code_folder(folder: str | os.PathLike, link: bool = False) -> Path:
    """
    Give a saved CompoDiff or LinCIR folder the remote-code layout, in place.

    With `link=True` the module files are relative symbolic links to this package's files instead of copies: for
    folders shipped inside the package (the toy checkpoints), whose code then cannot differ from the package's
    (a wheel stores the linked files' contents).

    - CompoDiff (`model_index.json`): the pipeline, prior and scheduler module files are copied and
      `model_index.json` names them (`_class_name: ["pipeline_compodiff", "CompoDiffPipeline"]`, `prior:
      ["modeling_compodiff", "CompoDiffPriorTransformer"]`, ...), exactly as `CompoDiffPipeline.save_pretrained`
      writes it; a diffusers scheduler keeps its diffusers entry. Folders that record the package's module paths
      (`["hf_cir.models.compodiff.modeling_compodiff", ...]`, the layout before remote code) are converted.
    - LinCIR (`config.json` with `model_type: lincir`): the configuration, modeling and processing files are
      copied and `auto_map` entries added to `config.json` and `processor_config.json`.

    Example:

    ```python
    >>> import json, shutil, tempfile
    >>> from hf_cir.hub import make_remote_code_folder
    >>> from hf_cir.toy import toy_checkpoint
    >>> folder = shutil.copytree(toy_checkpoint("lincir"), tempfile.mkdtemp() + "/lincir")
    >>> _ = make_remote_code_folder(folder)
    >>> json.load(open(f"{folder}/config.json"))["auto_map"]["AutoModel"]
    'modeling_lincir.LinCIRModel'

    ```
    """
    folder = Path(folder)
    family = _family_of_folder(folder)
    if family.remote_code is None:
        raise ValueError(f"{folder}: {family.title} folders have no remote-code layout.")
    family.load("remote_code")(folder)
    if link:
        _link_to_package(folder)
    return folder


def _family_of_folder(folder: Path):
    """The registered family of a saved folder (`hf_cir.families`), read from its `model_index.json` / `config.json`."""
    families = list(model_families().values())
    pipelines = [family for family in families if family.pipeline_class]
    if (folder / "model_index.json").is_file():
        class_name = json.loads((folder / "model_index.json").read_text()).get("_class_name")
        class_name = class_name[1] if isinstance(class_name, list) and len(class_name) == 2 else class_name
        # With one pipeline family, its exporter says what is wrong with another pipeline's folder.
        return next(
            (f for f in pipelines if f.pipeline_class == class_name), pipelines[0] if len(pipelines) == 1 else None
        ) or _not_a_family(folder, families)
    if (folder / "config.json").is_file():
        model_type = json.loads((folder / "config.json").read_text()).get("model_type")
        family = next((f for f in families if f.config_model_type and f.config_model_type == model_type), None)
        if family is not None:
            return family
    return _not_a_family(folder, families)


def _not_a_family(folder: Path, families):
    kinds = [
        f"a saved {f.title} pipeline (model_index.json)"
        if f.pipeline_class
        else f"a {f.title} model (config.json with model_type {f.config_model_type!r})"
        for f in families
    ]
    raise FileNotFoundError(f"{folder} is neither {' nor '.join(kinds)}.")


def _link_to_package(folder: Path) -> None:
    """Replace each module copy in `folder` by a relative symbolic link to the package file it copies."""
    sources = {Path(module.__file__).name: Path(module.__file__).resolve() for module in REMOTE_CODE_MODULES}
    for path in folder.rglob("*.py"):
        source = sources.get(path.name)
        if source is None or path.resolve() == source:
            continue
        if path.read_bytes() != source.read_bytes():
            raise ValueError(f"{path} is not a copy of {source}; refusing to replace it with a link.")
        path.unlink()
        path.symlink_to(os.path.relpath(source, path.parent))


def add_compodiff_remote_code(folder: Path) -> Path:
    """A saved CompoDiff folder in the remote-code layout (see [`make_remote_code_folder`])."""
    index = json.loads((folder / "model_index.json").read_text())
    class_name = index.get("_class_name")
    if class_name not in ("CompoDiffPipeline", ["pipeline_compodiff", "CompoDiffPipeline"]):
        raise ValueError(f"{folder} holds a {class_name!r}, not a CompoDiffPipeline.")
    recorded = index.get(PACKAGE_MODULES_KEY, {})
    classes = {"_class_name": pipeline_compodiff.CompoDiffPipeline}
    for name, entry in index.items():
        if name.startswith("_") or not isinstance(entry, list) or entry[0] in (*PEER_LIBRARIES, None):
            continue
        module = recorded.get(name, entry[0])
        if module.split(".")[0] != "hf_cir":
            raise ValueError(
                f"{folder}/model_index.json: component {name!r} is {entry}, which is not an hf-cir class; only "
                "hf-cir's own classes can be exported."
            )
        classes[name] = getattr(importlib.import_module(module), entry[1])
    return add_remote_code(folder, classes)


def add_lincir_remote_code(folder: Path) -> Path:
    """A saved LinCIR-family folder in the remote-code layout (see [`make_remote_code_folder`])."""
    for module in LINCIR_REMOTE_CODE["files"]:
        shutil.copyfile(module.__file__, folder / Path(module.__file__).name)
    for file_name, auto_map in LINCIR_REMOTE_CODE["auto_map"].items():
        path = folder / file_name
        if not path.is_file():
            raise FileNotFoundError(f"{folder} is not a complete LinCIR folder: no {file_name}.")
        config = json.loads(path.read_text())
        config["auto_map"] = {**config.get("auto_map", {}), **auto_map}
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        os.replace(temporary, path)
    return folder
