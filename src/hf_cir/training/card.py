# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""Model cards that record how a model was trained, and pushing a training output folder to the Hub."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from ..hub import is_hub_id, render_model_card
from ..hub import training_details_markdown as hub_training_details_markdown
from ..utils import atomic_file

__all__ = [
    "declared_license",
    "push_output_to_hub",
    "resolve_training_license",
    "training_arguments",
    "training_details_markdown",
    "write_training_model_card",
]

logger = logging.getLogger(__name__)

# Arguments never written to a card: secrets, and what only this machine's run means (resuming does not change
# the result: it is bit-identical).
_HIDDEN_ARGUMENTS = {"hub_token", "local_rank", "resume_from_checkpoint"}

# What a training output folder uploads: the model, never the training state.
_UPLOAD_IGNORE = ["checkpoint-*", ".*", "*/.*", "logs/*", "best/*", "training_run.json", "training_log.jsonl"]


def training_arguments(args) -> dict:
    """The run's arguments as a JSON-safe dict, secrets removed (`argparse.Namespace` or dict).

    Example:

    ```python
    >>> import argparse
    >>> from hf_cir.training import training_arguments
    >>> training_arguments(argparse.Namespace(learning_rate=1e-4, hub_token="secret"))
    {'learning_rate': 0.0001}

    ```
    """
    values = vars(args) if not isinstance(args, dict) else dict(args)
    safe = {}
    for key, value in sorted(values.items()):
        if key in _HIDDEN_ARGUMENTS or key.startswith("_"):
            continue
        if isinstance(value, Path):
            value = str(value)
        try:
            json.dumps(value)
        except TypeError:
            value = repr(value)
        safe[key] = value
    return safe


def training_details_markdown(
    script: str, args, data: dict | None = None, results: dict | None = None, parser=None
) -> str:
    """Markdown describing a training run (data, results, every argument without secrets, and the command that
    reruns it, spelled for `parser`: the script's own `argparse` parser), for the `training_details` of the LinCIR
    and CompoDiff card templates. See `hf_cir.hub.training_details_markdown`.

    Example:

    ```python
    >>> from hf_cir.training import training_details_markdown
    >>> print(training_details_markdown("train_lincir.py", {"seed": 0}).splitlines()[0])
    Trained with hf-cir's `training/train_lincir.py`.

    ```
    """
    return hub_training_details_markdown(script, training_arguments(args), data, results, parser)


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


def write_training_model_card(
    output_dir: str | os.PathLike,
    template: str,
    card_data: ModelCardData,
    script: str,
    args,
    data: dict | None = None,
    results: dict | None = None,
    **template_vars,
) -> ModelCard:
    """Write `output_dir/README.md`: a card template (`model_cards/{template}.md`) followed by a Training section
    that lists the data and every argument of the run (for models without a card builder of their own; LinCIR and
    CompoDiff outputs use their builders with `training_details=training_details_markdown(...)`).

    If the template cannot be rendered (e.g. it is missing from this installation), a short generic card is used.

    Example:

    ```python
    >>> import tempfile
    >>> from huggingface_hub import ModelCardData
    >>> from hf_cir.training import write_training_model_card
    >>> card = write_training_model_card(tempfile.mkdtemp(), "no-such-template", ModelCardData(license="apache-2.0"),
    ...                                  "train_lincir.py", {"learning_rate": 1e-4})
    >>> "learning_rate" in card.text
    True

    ```
    """
    try:
        card = render_model_card(template, card_data, **template_vars)
        text = str(card)
    except Exception as error:  # a missing or incompatible template must not lose a finished training run
        logger.warning("Could not render the %r model card template (%s); writing a generic card.", template, error)
        header = card_data.to_yaml()
        title = template_vars.get("model_id") or Path(output_dir).name
        text = f"---\n{header}\n---\n\n# {title}\n\nA {template} model trained with hf-cir.\n"
    section = training_details_markdown(script, args, data, results)
    card = ModelCard(text.rstrip() + "\n\n## Training\n\n" + section + "\n")
    with atomic_file(Path(output_dir) / "README.md", "w") as handle:
        handle.write(str(card))
    return card


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
