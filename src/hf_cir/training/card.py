# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""The license of a training run's card, and pushing a training output folder to the Hub. The card's Training section
is `hf_cir.hub.training_details_markdown` (re-exported here with `training_arguments`)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from huggingface_hub import ModelCard

from ..hub import is_hub_id, training_arguments, training_details_markdown

__all__ = [
    "declared_license",
    "push_output_to_hub",
    "resolve_training_license",
    "training_arguments",
    "training_details_markdown",
]

logger = logging.getLogger(__name__)

# What a training output folder uploads: the model, never the training state.
_UPLOAD_IGNORE = ["checkpoint-*", ".*", "*/.*", "logs/*", "best/*", "training_run.json", "training_log.jsonl"]


def declared_license(name_or_path: str | os.PathLike | None) -> str | None:
    """The license that the model card of a checkpoint declares: the `README.md` of a local folder (or of the
    pipeline folder around a component subfolder), or the card of a Hub id (`None` when the Hub cannot be reached).

    Example:

    ```python
    >>> from hf_cir.toy import toy_checkpoint
    >>> from hf_cir.training import declared_license
    >>> declared_license(toy_checkpoint("clip")), declared_license(None)
    ('apache-2.0', None)

    ```
    """
    if name_or_path is None:
        return None
    path = Path(name_or_path)
    if path.exists():
        folders = [path] if path.is_dir() else [path.parent]
        if (folders[0].parent / "model_index.json").is_file():  # a component of a pipeline folder
            folders.append(folders[0].parent)
        for folder in folders:
            if (folder / "README.md").is_file():
                license = ModelCard.load(folder / "README.md").data.license
                if license:
                    return license
        return None
    if not is_hub_id(name_or_path):
        return None
    try:
        return ModelCard.load(str(name_or_path)).data.license
    except Exception:  # offline, private, no card: nothing declared that we can read
        return None


def resolve_training_license(license: str | None, starting_points: list) -> str | None:
    """The license of a trained model's card: `--license` when given; otherwise the license declared by the first
    checkpoint the training started from that declares one (`declared_license`). So a model trained from a
    converted LinCIR release (CC BY-NC 4.0) keeps its license, and one trained from a CLIP checkpoint takes
    the CLIP checkpoint's. `None` (and a warning) when nothing is declared: the card then states no license.

    Example:

    ```python
    >>> from hf_cir.toy import toy_checkpoint
    >>> from hf_cir.training import resolve_training_license
    >>> resolve_training_license(None, [toy_checkpoint("clip")]), resolve_training_license("mit", [])
    ('apache-2.0', 'mit')

    ```
    """
    if license:
        return license
    for source in starting_points:
        declared = declared_license(source)
        if declared:
            logger.info("No --license given: the card takes %s, the license %s declares.", declared, source)
            return declared
    logger.warning(
        "No --license given and no starting checkpoint (%s) declares one: the model card states no license. "
        "Pass --license (e.g. apache-2.0, mit) to state one.",
        ", ".join(str(source) for source in starting_points if source) or "none",
    )
    return None


def push_output_to_hub(
    output_dir: str | os.PathLike,
    repo_id: str,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str = "Upload model trained with hf-cir",
):
    """Create `repo_id` (if needed) and upload the model files of a training output folder, without checkpoints,
    logs or hidden files. Returns the commit info of `huggingface_hub.upload_folder`."""
    from huggingface_hub import create_repo, upload_folder

    if not Path(output_dir, "README.md").is_file():
        raise FileNotFoundError(f"{output_dir} has no README.md model card; save the model before pushing it.")
    repo_id = create_repo(repo_id, exist_ok=True, token=token, private=private).repo_id
    return upload_folder(
        repo_id=repo_id,
        folder_path=str(output_dir),
        commit_message=commit_message,
        ignore_patterns=_UPLOAD_IGNORE,
        token=token,
    )
