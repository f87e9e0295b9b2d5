# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""Model cards that record how a model was trained, and pushing a training output folder to the Hub."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from ..hub import render_model_card
from ..utils import atomic_file

__all__ = ["push_output_to_hub", "training_arguments", "training_details_markdown", "write_training_model_card"]

logger = logging.getLogger(__name__)

# Arguments never written to a card (secrets) or meaningless outside this machine's run.
_HIDDEN_ARGUMENTS = {"hub_token", "local_rank"}

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


def training_details_markdown(script: str, args, data: dict | None = None, results: dict | None = None) -> str:
    """Markdown describing a training run (data, results, every argument, an equivalent command), for the
    `training_details` of the LinCIR and CompoDiff card templates.

    Example:

    ```python
    >>> from hf_cir.training import training_details_markdown
    >>> print(training_details_markdown("train_lincir.py", {"seed": 0}).splitlines()[0])
    Trained with hf-cir's `training/train_lincir.py`.

    ```
    """
    arguments = training_arguments(args)
    lines = [f"Trained with hf-cir's `training/{script}`.", ""]
    if data:
        lines += ["### Data", "", "| | |", "| --- | --- |"]
        lines += [f"| {key} | `{value}` |" for key, value in data.items()]
        lines.append("")
    if results:
        lines += ["### Results", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {key} | {value} |" for key, value in results.items()]
        lines.append("")
    lines += ["### Arguments", "", "| argument | value |", "| --- | --- |"]
    lines += [f"| `{key}` | `{json.dumps(value)}` |" for key, value in arguments.items()]
    command = " ".join(
        f"--{key} {json.dumps(value)}" for key, value in arguments.items() if value not in (None, False)
    )
    lines += ["", "Command (equivalent):", "", "```bash", f"accelerate launch training/{script} {command}", "```"]
    return "\n".join(lines)


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
