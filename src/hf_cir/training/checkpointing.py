# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""Crash-safe checkpoints for Accelerate training loops, with the EMA saved and loaded by diffusers' `EMAModel`.

Layout of an output folder::

    output_dir/
        training_run.json          # which run owns the folder (script and identifying arguments)
        checkpoint-200/            # complete checkpoints only: accelerator.save_state + training_state.json
        checkpoint-400/
        .checkpoint-600.tmp/       # a checkpoint being written (or left by a killed run): never loaded, removed by the next save

A checkpoint is written into a hidden temporary folder, completed with `training_state.json`, and then renamed in
one `os.replace`; `find_latest_checkpoint` only considers complete folders, so a process killed while writing can
never leave a `latest` that does not load.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import struct
import warnings
import zipfile
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..utils import atomic_file
from ..utils.errors import one_line
from .outputs import (
    RUN_FILE_NAME,
    check_foreign_entries,
    claim_outputs,
    output_entry_matcher,
    owned_outputs,
    record_run,
    release_outputs,
)

__all__ = [
    "CHECKPOINT_PREFIX",
    "TRAINING_STATE_NAME",
    "check_output_dir",
    "create_ema",
    "find_latest_checkpoint",
    "list_checkpoints",
    "load_ema",
    "load_training_state",
    "register_checkpoint_hooks",
    "resolve_resume_checkpoint",
    "save_checkpoint",
    "save_ema",
    "verify_checkpoint",
]

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
TRAINING_STATE_NAME = "training_state.json"
_CHECKPOINT_RE = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoint folders of `output_dir`, oldest first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _CHECKPOINT_RE.match(child.name)
        if match and child.is_dir() and (child / TRAINING_STATE_NAME).is_file():
            found.append((int(match.group(1)), child))
    return [path for _, path in sorted(found)]


def find_latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The complete checkpoint with the highest step, or `None`.

    Example:

    ```python
    >>> import tempfile
    >>> from hf_cir.training import find_latest_checkpoint
    >>> find_latest_checkpoint(tempfile.mkdtemp()) is None
    True

    ```
    """
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1] if checkpoints else None


def load_training_state(checkpoint_dir: str | os.PathLike) -> dict:
    """Read a checkpoint's `training_state.json` (global step, log history, best metric, ...)."""
    path = Path(checkpoint_dir) / TRAINING_STATE_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{checkpoint_dir} is not a complete hf-cir checkpoint (no {TRAINING_STATE_NAME}).")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"The checkpoint file {path} is damaged ({one_line(error)}).") from None
    if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
        raise ValueError(f"The checkpoint file {path} is damaged (no integer `global_step`).")
    return state


def _safetensors_problem(path: Path) -> str | None:
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            return f"{size} bytes, shorter than a safetensors header"
        (header_size,) = struct.unpack("<Q", prefix)
        if header_size > size - 8:
            return f"its header claims {header_size} bytes, the file has {size - 8} after the prefix"
        try:
            header = json.loads(handle.read(header_size))
        except ValueError:
            return "its header is not JSON"
    if not isinstance(header, dict):
        return "its header is not a JSON object"
    ends = [
        entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__" and isinstance(entry, dict)
    ]
    expected = 8 + header_size + max(ends, default=0)
    if expected != size:
        return f"{size} bytes where its header describes {expected}: truncated or overwritten"
    return None


def _file_problem(path: Path) -> str | None:
    """What is wrong with one file of a checkpoint, or `None` (its format is checked, not its meaning)."""
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return _safetensors_problem(path)
    if suffix == ".json":
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            return f"not JSON: {one_line(error)}"
        return None
    if suffix in (".bin", ".pkl", ".pt", ".pth"):  # torch.save archives (zip), e.g. optimizer.bin, random_states_0.pkl
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
        except (OSError, zipfile.BadZipFile, EOFError) as error:
            return f"not a complete torch archive: {one_line(error)}"
        return f"its member {bad} fails its checksum" if bad else None
    return None


def verify_checkpoint(checkpoint_dir: str | os.PathLike) -> None:
    """Check every file of a checkpoint before it is loaded: `training_state.json`, each safetensors file against its
    header, each torch archive (optimizer, scheduler, random states) against its checksums, each JSON file. Raises a
    `ValueError` naming the first damaged file.

    Example:

    ```python
    >>> import json, tempfile, pathlib
    >>> from hf_cir.training import verify_checkpoint
    >>> folder = pathlib.Path(tempfile.mkdtemp()) / "checkpoint-2"
    >>> folder.mkdir()
    >>> _ = (folder / "training_state.json").write_text(json.dumps({"global_step": 2}))
    >>> _ = (folder / "phi.safetensors").write_bytes(b"\\x10\\x00")
    >>> verify_checkpoint(folder)
    Traceback (most recent call last):
    ...
    ValueError: The checkpoint file ...phi.safetensors is damaged (2 bytes, shorter than a safetensors header).
    ```
    """
    root = Path(checkpoint_dir)
    load_training_state(root)
    for path in sorted(root.rglob("*")):
        if path.is_file():
            problem = _file_problem(path)
            if problem:
                raise ValueError(f"The checkpoint file {path} is damaged ({problem}).")


def check_output_dir(
    output_dir: str | os.PathLike,
    run_identity: dict,
    resume_from_checkpoint: str | None,
    overwrite: bool = False,
    may_write=None,
) -> None:
    """Refuse to mix two runs in one output folder, or to write over what hf-cir did not write; record this run's
    identity there.

    - an entry the run may write (`may_write`, by default the training entries: checkpoints, `best`, logs) that hf-cir
      did not write (`hf_cir.training.outputs`): an error naming it, `overwrite` or not;
    - checkpoints present and no `--resume_from_checkpoint`: an error (resume, overwrite, or pick another folder);
    - resuming a folder whose recorded run differs from this one (another script, model or data): an error naming
      the differing fields;
    - `overwrite=True` deletes earlier checkpoints first (hf-cir's own only).

    Call it on the main process only.
    """
    root = Path(output_dir)
    may_write = may_write or output_entry_matcher()
    owned = check_foreign_entries(root, may_write)
    checkpoints = [checkpoint for checkpoint in list_checkpoints(root) if checkpoint.name in owned]
    if overwrite:
        for checkpoint in checkpoints:
            shutil.rmtree(checkpoint)
        release_outputs(root, [checkpoint.name for checkpoint in checkpoints])
        checkpoints = []
    elif checkpoints and resume_from_checkpoint is None:
        raise ValueError(
            f"--output_dir {root} already holds checkpoints of a previous run ({', '.join(p.name for p in checkpoints)}). "
            "Pass --resume_from_checkpoint latest to continue it, --overwrite_output_dir to discard them, or choose "
            "another --output_dir."
        )
    run_file = root / RUN_FILE_NAME
    if run_file.is_file() and checkpoints:
        recorded = json.loads(run_file.read_text())
        differing = {
            key: (recorded.get(key), value) for key, value in run_identity.items() if recorded.get(key) != value
        }
        if differing:
            details = "; ".join(
                f"{key}: checkpoints have {old!r}, this run has {new!r}" for key, (old, new) in differing.items()
            )
            raise ValueError(
                f"--output_dir {root} holds checkpoints of another run ({details}). Choose another --output_dir, "
                "or pass --overwrite_output_dir to discard them."
            )
    record_run(root, run_identity, may_write)


def resolve_resume_checkpoint(output_dir: str | os.PathLike, resume_from_checkpoint: str | None) -> Path | None:
    """Turn `--resume_from_checkpoint` into a checkpoint folder.

    `"latest"` picks the newest complete checkpoint of `output_dir` whose files are intact (`verify_checkpoint`),
    saying which damaged ones it passed over (`None` if there is none: a fresh start); a path must be a complete,
    intact checkpoint folder, or a `ValueError`/`FileNotFoundError` says what is wrong with it.
    """
    if resume_from_checkpoint is None:
        return None
    if resume_from_checkpoint == "latest":
        damaged = []
        for checkpoint in reversed(list_checkpoints(output_dir)):
            try:
                verify_checkpoint(checkpoint)
            except ValueError as error:
                damaged.append(str(error))
                continue
            if damaged:
                logger.warning(f"{' '.join(damaged)} Resuming from the previous intact checkpoint, {checkpoint}.")
            return checkpoint
        if damaged:
            raise ValueError(f"{' '.join(damaged)} No intact checkpoint is left to resume from in {output_dir}.")
        return None
    path = Path(resume_from_checkpoint)
    if not path.exists() and not path.is_absolute() and (Path(output_dir) / path).exists():
        path = Path(output_dir) / path
    if not path.is_dir():
        raise FileNotFoundError(f"--resume_from_checkpoint {resume_from_checkpoint!r} does not exist.")
    if not (path / TRAINING_STATE_NAME).is_file():
        raise ValueError(
            f"--resume_from_checkpoint {resume_from_checkpoint!r} is not a complete checkpoint (no {TRAINING_STATE_NAME})."
        )
    verify_checkpoint(path)
    return path


def save_checkpoint(
    accelerator, output_dir: str | os.PathLike, step: int, state: dict, total_limit: int | None = None
) -> Path:
    """`accelerator.save_state` into `output_dir/checkpoint-{step}`, atomically; keep at most `total_limit`.

    Must be called on every process (each writes its own RNG state). Returns the checkpoint folder.
    """
    root = Path(output_dir)
    final = root / f"{CHECKPOINT_PREFIX}{step}"
    tmp = root / f".{CHECKPOINT_PREFIX}{step}.tmp"
    if accelerator.is_main_process:
        # Recorded as hf-cir's before anything is written; refused when a folder of that name is not hf-cir's.
        claim_outputs(root, [final.name, tmp.name])
        if tmp.exists():
            shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        with atomic_file(tmp / TRAINING_STATE_NAME, "w") as handle:
            json.dump({**state, "global_step": step}, handle, indent=2, sort_keys=True)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        owned = owned_outputs(root)
        removed = [tmp.name]
        if total_limit is not None and total_limit > 0:
            for old in list_checkpoints(root)[:-total_limit]:
                if old.name in owned:  # never a folder hf-cir did not write
                    shutil.rmtree(old, ignore_errors=True)
                    removed.append(old.name)
        for stale in root.glob(f".{CHECKPOINT_PREFIX}*.tmp"):  # half-written by a killed run; never loaded
            if stale.is_dir() and stale.name in owned and re.fullmatch(rf"\.{CHECKPOINT_PREFIX}\d+\.tmp", stale.name):
                shutil.rmtree(stale, ignore_errors=True)
                removed.append(stale.name)
        release_outputs(root, removed)
    accelerator.wait_for_everyone()
    return final


def save_ema(ema, names: Iterable[str], directory: str | os.PathLike, name: str = "ema.safetensors") -> None:
    """Save a diffusers `EMAModel` (`create_ema`) into `directory/name` with diffusers' own formats: for the EMA of
    a diffusers model, `EMAModel.save_pretrained` (a model folder holding the EMA weights, with the EMA's counters in
    its `config.json`); otherwise its `state_dict()` as safetensors, the weights named like the tracked module's
    parameters (`names`) and the counters as metadata (no pickle)."""
    if ema.model_cls is not None:
        ema.save_pretrained(str(Path(directory) / name))
        return
    names = list(names)
    state = ema.state_dict()
    shadows = state.pop("shadow_params")
    if len(names) != len(shadows):
        raise ValueError(f"{len(names)} parameter names for {len(shadows)} EMA weights.")
    tensors = {key: tensor.detach().contiguous().cpu() for key, tensor in zip(names, shadows)}
    metadata = {key: json.dumps(value) for key, value in state.items()}
    save_file(tensors, str(Path(directory) / name), metadata=metadata)


def load_ema(
    ema,
    names: Iterable[str],
    directory: str | os.PathLike,
    name: str = "ema.safetensors",
    legacy_names: Iterable[str] = (),
) -> None:
    """Restore what `save_ema` wrote into `ema` through `EMAModel.from_pretrained` / `EMAModel.load_state_dict`
    (the weights move to `ema`'s device).

    The format is read from what is on disk: a folder is an `EMAModel.save_pretrained` folder, a file is the
    safetensors form (weights named like the module's parameters, counters as metadata). When `name` is absent, the
    first of `legacy_names` present is read instead, so checkpoints written by an earlier hf-cir under another name
    (e.g. CompoDiff's `ema_prior.safetensors` file before the EMA became a `save_pretrained` folder) still resume.
    """
    from diffusers.training_utils import EMAModel

    candidates = [Path(directory) / name] + [Path(directory) / legacy for legacy in legacy_names]
    path = next((candidate for candidate in candidates if candidate.exists()), None)
    if path is None:
        raise FileNotFoundError(f"{directory} has no EMA weights ({name}); was the run started without --use_ema?")
    names = list(names)
    if path.is_dir():
        if ema.model_cls is None:
            raise ValueError(f"{path} is an EMAModel.save_pretrained folder, but this EMA tracks no diffusers model.")
        from diffusers.utils import logging as diffusers_logging

        verbosity = diffusers_logging.get_verbosity()
        diffusers_logging.set_verbosity_error()  # the EMA counters in config.json are not the model's: no warning
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*pass a pretrained model name or path to `from_config`")
                state = EMAModel.from_pretrained(str(path), model_cls=ema.model_cls, foreach=ema.foreach).state_dict()
        finally:
            diffusers_logging.set_verbosity(verbosity)
    else:
        from safetensors import safe_open

        tensors = load_file(str(path))
        with safe_open(str(path), "pt") as handle:
            metadata = handle.metadata() or {}
        missing = [key for key in names if key not in tensors]
        if missing:
            raise ValueError(f"EMA weights in {path} lack {missing}.")
        state = {key: json.loads(value) for key, value in metadata.items()}
        state["shadow_params"] = [tensors[key] for key in names]
    if len(state["shadow_params"]) != len(ema.shadow_params):
        raise ValueError(
            f"The EMA in {path} has {len(state['shadow_params'])} weights; this model has {len(ema.shadow_params)}."
        )
    device = ema.shadow_params[0].device if ema.shadow_params else None
    ema.load_state_dict(state)
    ema.to(device=device)


def create_ema(module: torch.nn.Module, use_ema: bool, decay: float, device: torch.device | str):
    """A diffusers `EMAModel` of `module`'s parameters on `device` (`--use_ema`, `--ema_decay`), or `None`. For a
    diffusers model (`ModelMixin`) it knows the model's class and config, so that `save_ema` can use
    `EMAModel.save_pretrained`.

    Example:

    ```python
    >>> import torch
    >>> from hf_cir.training import create_ema
    >>> create_ema(torch.nn.Linear(2, 2), True, 0.9999, "cpu").decay
    0.9999

    ```
    """
    if not use_ema:
        return None
    from diffusers import ModelMixin
    from diffusers.training_utils import EMAModel

    model_kwargs = {"model_cls": type(module), "model_config": module.config} if isinstance(module, ModelMixin) else {}
    ema = EMAModel(module.parameters(), decay=decay, **model_kwargs)
    ema.to(device)
    return ema


def register_checkpoint_hooks(
    accelerator,
    weights_name: str,
    *,
    submodule: str | None = None,
    ema=None,
    ema_weights_name: str | None = None,
    legacy_ema_weights_names: tuple[str, ...] = (),
) -> None:
    """Make `accelerator.save_state`/`load_state` keep only the trained weights, as safetensors: the prepared
    model's `submodule` (e.g. LinCIR's `"phi"`; the whole model when `None`) in `weights_name`, and its EMA
    (`create_ema`) under `ema_weights_name` (`save_ema`: an `EMAModel.save_pretrained` folder for a diffusers model,
    else a safetensors file). Frozen weights (e.g. CLIP towers) are not saved. On loading, an EMA saved by an earlier
    hf-cir under one of `legacy_ema_weights_names` is read when `ema_weights_name` is absent (see `load_ema`).

    Example:

    ```python
    >>> import os, tempfile, torch
    >>> from accelerate import Accelerator
    >>> from hf_cir.training import register_checkpoint_hooks
    >>> accelerator = Accelerator(cpu=True)
    >>> model = accelerator.prepare(torch.nn.Linear(2, 2))
    >>> register_checkpoint_hooks(accelerator, "model.safetensors")
    >>> folder = tempfile.mkdtemp()
    >>> _ = accelerator.save_state(folder)
    >>> sorted(name for name in os.listdir(folder) if name.endswith(".safetensors"))
    ['model.safetensors']

    ```
    """
    if ema is not None and ema_weights_name is None:
        raise ValueError("register_checkpoint_hooks: pass ema_weights_name with ema.")

    def trained(model) -> torch.nn.Module:
        model = accelerator.unwrap_model(model)
        return getattr(model, submodule) if submodule else model

    def save_model_hook(models, weights, directory):
        if accelerator.is_main_process:
            for saved in models:
                module = trained(saved)
                save_file(module.state_dict(), os.path.join(directory, weights_name))
                if ema is not None:
                    save_ema(ema, [name for name, _ in module.named_parameters()], directory, ema_weights_name)
        while weights:  # accelerate would save them again as model.safetensors
            weights.pop()

    def load_model_hook(models, directory):
        while models:
            module = trained(models.pop())
            module.load_state_dict(load_file(os.path.join(directory, weights_name)))
            if ema is not None:
                names = [name for name, _ in module.named_parameters()]
                load_ema(ema, names, directory, ema_weights_name, legacy_names=legacy_ema_weights_names)

    accelerator.register_save_state_pre_hook(save_model_hook)
    accelerator.register_load_state_pre_hook(load_model_hook)
