# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""Model cards of hf-cir folders, rendered from the Jinja templates in `model_cards/` through `huggingface_hub`.

One home for every card hf-cir writes: LinCIR ([`create_lincir_model_card`]), CompoDiff
([`create_compodiff_model_card`]), the "Training" section of a training run ([`training_details_markdown`], with
its [`equivalent_command`]) and the evaluation results of `hf-cir evaluate --update-model-card`
([`update_card_evaluation`]). The training scripts and the evaluation command only pass their values in.

What every card holds: `license`, `library_name`, `pipeline_tag`, `tags`, `model_name`, `base_model` when it is a
Hub id, and (after an evaluation) a `model-index` with the results of the model's own method only; baselines are
listed in the card's text, labelled as baselines. Cards never contain local absolute paths ([`portable_path`]).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from huggingface_hub import EvalResult, ModelCard, ModelCardData

if TYPE_CHECKING:
    from ..models.lincir import LinCIRModel

__all__ = [
    "COMPODIFF_TAGS",
    "LINCIR_LICENSE",
    "LINCIR_TAGS",
    "METHOD_CARD_INFO",
    "PIPELINE_TAG",
    "MethodCardInfo",
    "create_compodiff_model_card",
    "create_lincir_model_card",
    "equivalent_command",
    "evaluation_markdown",
    "is_hub_id",
    "method_card_info",
    "model_card_template_path",
    "portable_path",
    "render_model_card",
    "results_table",
    "training_arguments",
    "training_details_markdown",
    "update_card_evaluation",
    "write_model_card",
]

LINCIR_TAGS = ("composed-image-retrieval", "lincir", "clip")
# The license of the released LinCIR weights (navervision/lincir), for converted checkpoints and models trained
# from them; a phi trained by the user on their own data takes the license its training run names.
LINCIR_LICENSE = "cc-by-nc-4.0"
COMPODIFF_TAGS = ("composed-image-retrieval", "compodiff", "clip", "diffusion-prior", "hf-cir")
# The Hub task closest to composed image retrieval: both models return an embedding in CLIP's image space.
PIPELINE_TAG = "image-feature-extraction"
_EXAMPLE_TEXT = "is red and made of wood"
_COMPODIFF_EXAMPLE = {
    "prompt": "as a watercolor painting",
    "negative_prompt": "low quality",
    "guidance_scale": 7.5,
    "image_guidance_scale": 1.5,
}


@dataclass(frozen=True)
class MethodCardInfo:
    """What the card of a LinCIR-family model says about its method (`LinCIRConfig.method_name`).

    `summary` may use `{placeholder}` and `{replaced}` ("every" or "the first"), filled from the model's config.
    """

    title: str
    paper: str
    summary: str
    license: str
    license_note: str
    citation: str


METHOD_CARD_INFO = {
    "lincir": MethodCardInfo(
        title="LinCIR",
        paper="[Language-only Training of Zero-shot Composed Image Retrieval](https://arxiv.org/abs/2312.01998), "
        "Gu et al., CVPR 2024",
        summary="A small network, phi, maps the CLIP image embedding of the reference image to a pseudo-word "
        "embedding; that pseudo word replaces {replaced} `{placeholder}` in the text, and the CLIP text tower encodes "
        "the result in one forward pass. Phi is trained from text alone with the self-masking-projection loss; the "
        "CLIP towers stay frozen.",
        license=LINCIR_LICENSE,
        license_note="the license of the released LinCIR weights: non-commercial use only",
        citation="""@inproceedings{gu2024lincir,
  title     = {Language-only Training of Zero-shot Composed Image Retrieval},
  author    = {Gu, Geonmo and Chun, Sanghyuk and Kim, Wonjae and Kang, Yoohoon and Yun, Sangdoo},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2024}
}""",
    ),
    "searle": MethodCardInfo(
        title="SEARLE",
        paper="[Zero-Shot Composed Image Retrieval with Textual Inversion](https://arxiv.org/abs/2303.15247), "
        "Baldrati et al., ICCV 2023",
        summary="A textual inversion network, phi, maps the CLIP image embedding of the reference image to a "
        "pseudo-word embedding; that pseudo word replaces {replaced} `{placeholder}` in the text, and the CLIP text "
        "tower encodes the result in one forward pass. Phi is distilled from optimisation-based textual inversion "
        "(OTI) on unlabelled images; the CLIP towers stay frozen. Converted from the miccunifi/SEARLE release and "
        "run by hf-cir's `LinCIRModel`, which holds LinCIR, SEARLE and Pic2Word.",
        license="cc-by-nc-4.0",
        license_note="miccunifi/SEARLE makes all its material available under CC BY-NC 4.0: non-commercial use only",
        citation="""@inproceedings{baldrati2023zero,
  title     = {Zero-Shot Composed Image Retrieval with Textual Inversion},
  author    = {Baldrati, Alberto and Agnolucci, Lorenzo and Bertini, Marco and Del Bimbo, Alberto},
  booktitle = {Proceedings of the IEEE/CVF International Conference on Computer Vision (ICCV)},
  pages     = {15338--15347},
  year      = {2023}
}""",
    ),
    "pic2word": MethodCardInfo(
        title="Pic2Word",
        paper="[Pic2Word: Mapping Pictures to Words for Zero-shot Composed Image Retrieval]"
        "(https://arxiv.org/abs/2302.03084), Saito et al., CVPR 2023",
        summary="A mapping network (IM2TEXT) turns the CLIP image embedding of the reference image into a "
        "pseudo-word embedding; that pseudo word replaces {replaced} `{placeholder}` in the text, and the CLIP text "
        "tower encodes the result in one forward pass. The mapping network is trained on unlabelled images with a "
        "contrastive loss between the image and its pseudo-word caption; the CLIP towers stay frozen. Converted from "
        "the google-research/composed_image_retrieval release and run by hf-cir's `LinCIRModel`, which holds LinCIR, "
        "SEARLE and Pic2Word.",
        license="apache-2.0",
        license_note="the license of google-research/composed_image_retrieval, which releases the weights with no "
        "separate license",
        citation="""@article{saito2023pic2word,
  title   = {Pic2Word: Mapping Pictures to Words for Zero-shot Composed Image Retrieval},
  author  = {Saito, Kuniaki and Sohn, Kihyuk and Zhang, Xiang and Li, Chun-Liang and Lee, Chen-Yu and
             Saenko, Kate and Pfister, Tomas},
  journal = {CVPR},
  year    = {2023}
}""",
    ),
}


def method_card_info(method_name: str) -> MethodCardInfo:
    """The card facts of a LinCIR-family method; a method name of the user's own gets LinCIR's (the model class's).

    Example:

    ```python
    >>> from hf_cir.hub import method_card_info
    >>> method_card_info("pic2word").license
    'apache-2.0'

    ```
    """
    return METHOD_CARD_INFO.get(method_name, METHOD_CARD_INFO["lincir"])


def _phi_architecture(config) -> str:
    sizes = [config.projection_dim] + [config.phi_hidden_size] * config.phi_num_hidden_layers
    sizes.append(config.text_config.hidden_size)
    chain = " → ".join(str(size) for size in sizes)
    return f"{chain}, ReLU (Pic2Word's IM2TEXT)" if config.phi_type == "im2text" else f"{chain}, GELU"


_EVALUATION_BEGIN = "<!-- hf-cir evaluation -->"
_EVALUATION_END = "<!-- /hf-cir evaluation -->"


def is_hub_id(name: str | os.PathLike | None) -> bool:
    """Whether `name` looks like a Hub repository id (`"org/name"` or `"name"`) rather than an existing local path."""
    if name is None or Path(name).exists():
        return False
    parts = str(name).split("/")
    return 1 <= len(parts) <= 2 and all(parts) and not str(name).startswith((".", "~", "/"))


def portable_path(value: str | os.PathLike) -> str:
    """How a card names a file or folder: Hub ids and relative paths as given; an absolute local path relative to
    the working directory when it lies inside it, otherwise by its name alone. Cards never hold absolute paths.

    Example:

    ```python
    >>> import os
    >>> from hf_cir.hub import portable_path
    >>> portable_path("openai/clip-vit-large-patch14"), portable_path("data/captions.txt")
    ('openai/clip-vit-large-patch14', 'data/captions.txt')
    >>> portable_path(os.path.join(os.getcwd(), "runs", "lincir")), portable_path("/somewhere/else/captions.txt")
    ('runs/lincir', 'captions.txt')

    ```
    """
    text = os.fspath(value)
    if not os.path.isabs(text):
        return text
    path = Path(text)
    try:
        return path.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return path.name or text


def _portable(value):
    if isinstance(value, str):
        return portable_path(value)
    if isinstance(value, (list, tuple)):
        return [_portable(item) for item in value]
    return value


def model_card_template_path(name: str) -> Path:
    """Path of the template `model_cards/{name}.md`, read from the package's `hf_cir/model_card_templates/` (in a
    source checkout a link to the repository's `model_cards/`, in a wheel a copy): nothing outside the package is
    looked up."""
    path = Path(__file__).resolve().parent.parent / "model_card_templates" / f"{name}.md"
    if not path.is_file():
        raise FileNotFoundError(f"No model card template named {name!r} (no {path}).")
    return path


def render_model_card(template: str, card_data: ModelCardData, **template_vars) -> ModelCard:
    """Render `model_cards/{template}.md` with `card_data` as its YAML header and `template_vars` in its body.

    Example:

    ```python
    >>> from huggingface_hub import ModelCardData
    >>> from hf_cir.hub import render_model_card
    >>> card = render_model_card("lincir", ModelCardData(license="mit"), model_id="me/lincir")
    >>> card.data.license, card.text.splitlines()[1]
    ('mit', '# me/lincir')

    ```
    """
    return ModelCard.from_template(card_data, template_path=str(model_card_template_path(template)), **template_vars)


def _eval_results(results: Iterable[EvalResult | Mapping] | None) -> list[EvalResult]:
    return [result if isinstance(result, EvalResult) else EvalResult(**result) for result in results or []]


def create_lincir_model_card(
    model: LinCIRModel,
    *,
    model_id: str | None = None,
    base_model: str | None = None,
    license: str | None = LINCIR_LICENSE,
    eval_results: Iterable[EvalResult | Mapping] | None = None,
    datasets: list[str] | None = None,
    tags: Iterable[str] = (),
    training_details: str | None = None,
    source: str | None = None,
    remote_code: bool = True,
    example_text: str = _EXAMPLE_TEXT,
) -> ModelCard:
    r"""
    Render `model_cards/lincir.md` for `model` through `huggingface_hub.ModelCard`.

    Args:
        model ([`LinCIRModel`]): The model the card describes (sizes, placeholder and template come from its config).
        model_id (`str`, *optional*): The Hub repository id, used as the title, `model_name` and in the usage snippet.
        base_model (`str`, *optional*): Hub id of the CLIP checkpoint (metadata `base_model`). Defaults to the name
            the towers were loaded from when it is a Hub id.
        license (`str`, *optional*, defaults to `"cc-by-nc-4.0"`): The license of the weights. The default is the
            license of the released LinCIR weights, right for converted checkpoints and models trained from them;
            `None` leaves the license unstated.
        eval_results (list of `huggingface_hub.EvalResult` or of dicts of its arguments, *optional*):
            Results of this model; they become the card's `model-index` and a table in the text.
        datasets (`list[str]`, *optional*): Hub ids of the training datasets.
        tags (iterable of `str`, *optional*): Extra tags beside composed-image-retrieval, the method's name
            (`config.method_name`: lincir, searle, pic2word) and clip.
        training_details (`str`, *optional*): Markdown for a "Training" section (e.g. the run's arguments).
        source (`str`, *optional*): Where the weights come from (e.g. the converted reference checkpoint).
        remote_code (`bool`, *optional*, defaults to `True`): Whether the folder ships its modeling files (what
            `save_pretrained` writes), so that the usage snippet loads it with `trust_remote_code=True`; otherwise
            the snippet imports hf-cir, which registers LinCIR with the Auto classes.
        example_text (`str`, *optional*): The modification text of the usage snippet (words the tokenizer knows).

    Example:

    ```python
    >>> from hf_cir import LinCIRModel
    >>> from hf_cir.hub import create_lincir_model_card
    >>> from hf_cir.toy import toy_checkpoint
    >>> model = LinCIRModel.from_pretrained(toy_checkpoint("lincir"))
    >>> card = create_lincir_model_card(model, model_id="me/lincir-toy", base_model="openai/clip-vit-large-patch14")
    >>> card.data.license, card.data.pipeline_tag, card.data.tags
    ('cc-by-nc-4.0', 'image-feature-extraction', ['composed-image-retrieval', 'lincir', 'clip'])

    ```
    """
    config = model.config
    method = method_card_info(config.method_name)
    if base_model is None and is_hub_id(config.text_config.name_or_path):
        base_model = config.text_config.name_or_path
    results = _eval_results(eval_results)
    method_tags = list(dict.fromkeys((LINCIR_TAGS[0], config.method_name, *LINCIR_TAGS[2:])))
    all_tags = method_tags + [tag for tag in tags if tag not in method_tags]
    card_data = ModelCardData(
        license=license,
        base_model=base_model,
        library_name="transformers",
        pipeline_tag=PIPELINE_TAG,
        tags=all_tags,
        datasets=datasets,
        model_name=model_id or method.title,
        eval_results=results or None,
    )
    if config.prompt_template is not None:
        example_prompt = config.prompt_template.replace("{}", example_text, 1)
    else:
        example_prompt = f"a photo of {config.placeholder_token} that {example_text}"
    return render_model_card(
        "lincir",
        card_data,
        model_id=model_id,
        usage_id=model_id or "path/to/this/folder",
        remote_code=remote_code,
        base_model_md=f"[{base_model}](https://huggingface.co/{base_model})" if base_model else "its CLIP checkpoint",
        method_title=method.title,
        method_paper=method.paper,
        method_summary=method.summary.format(
            placeholder=config.placeholder_token,
            replaced="the first" if config.placeholder_replacement == "first" else "every",
        ),
        phi_architecture=_phi_architecture(config),
        license_note=method.license_note if license == method.license else None,
        citation=method.citation,
        placeholder_token=config.placeholder_token,
        placeholder_token_id=config.placeholder_token_id,
        prompt_template=config.prompt_template,
        example_text=example_text,
        example_prompt=example_prompt,
        projection_dim=config.projection_dim,
        phi_hidden_size=config.phi_hidden_size,
        text_hidden_size=config.text_config.hidden_size,
        training_details=training_details,
        source=source,
        evaluation=evaluation_markdown(results) if results else None,
    )


def results_table(results: list[EvalResult], label: str = "Metric") -> str | None:
    """A markdown table of evaluation results (`None` when there are none)."""
    if not results:
        return None
    rows = [f"| Dataset | Split | {label} | Value |", "| --- | --- | --- | ---: |"]
    for r in results:
        split = r.dataset_split or ""
        rows.append(f"| {r.dataset_name} | {split} | {r.metric_name or r.metric_type} | {r.metric_value} |")
    return "\n".join(rows)


def evaluation_markdown(results: list[EvalResult], baselines: list[EvalResult] | None = None) -> str:
    """The card's evaluation block: this model's results (the same as its `model-index`) and, apart and labelled as
    such, the baselines measured beside it (never in the `model-index`). `update_card_evaluation` rewrites it.

    Example:

    ```python
    >>> from huggingface_hub import EvalResult
    >>> from hf_cir.hub import evaluation_markdown
    >>> row = dict(task_type="composed-image-retrieval", dataset_type="toy", dataset_name="toy", metric_type="recall@1")
    >>> text = evaluation_markdown([EvalResult(**row, metric_name="recall@1 (lincir)", metric_value=22.3)],
    ...                            [EvalResult(**row, metric_name="recall@1 (sum)", metric_value=21.0)])
    >>> "| toy |  | recall@1 (sum) | 21.0 |" in text.split("Baselines")[1]
    True

    ```
    """
    lines = [_EVALUATION_BEGIN, "This model's results (also in the card's metadata, `model-index`):", ""]
    lines.append(results_table(results) or "None yet.")
    if baselines:
        lines += [
            "",
            "Baselines on the same data with the same CLIP encoders, for comparison. They are not results of this "
            "model and are not in its `model-index`:",
            "",
            results_table(baselines, label="Baseline metric"),
        ]
    lines.append(_EVALUATION_END)
    return "\n".join(lines)


def _baselines_in(text: str) -> list[EvalResult]:
    """The baseline rows of an evaluation block that `evaluation_markdown` wrote into a card's text."""
    if _EVALUATION_BEGIN not in text or "Baselines on the same data" not in text:
        return []
    block = text.split(_EVALUATION_BEGIN, 1)[1].split(_EVALUATION_END, 1)[0].split("Baselines on the same data", 1)[1]
    found = []
    for line in block.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 4 or cells[0] in ("Dataset", "---"):
            continue
        try:
            value = float(cells[3])
        except ValueError:
            continue
        found.append(
            EvalResult(
                task_type="composed-image-retrieval",
                dataset_type=cells[0],
                dataset_name=cells[0],
                dataset_split=cells[1] or None,
                metric_type=cells[2].rsplit(" (", 1)[0],
                metric_name=cells[2],
                metric_value=value,
            )
        )
    return found


_METHOD_SUFFIX = re.compile(r"\(([^()]+)\)$")


def _method_of(result: EvalResult) -> str | None:
    match = _METHOD_SUFFIX.search(result.metric_name or "")
    return match.group(1) if match else None


def update_card_evaluation(
    card: ModelCard,
    results: Iterable[EvalResult],
    baselines: Iterable[EvalResult] = (),
    model_method: str | None = None,
    model_name: str | None = None,
) -> ModelCard:
    """Merge evaluation results into `card`: `results` (the model's own method) into its `model-index`, `baselines`
    into the labelled baseline table of its text. An entry replaces an earlier one for the same dataset, split and
    metric name; others stay. Entries of another method that an older hf-cir wrote into the `model-index` (their
    metric name ends with `(method)`, not `(model_method)`) move to the baselines. Keeps `model_name` (or sets it to
    `model_name` when the card has none). Returns the updated card (its text keeps everything else).

    Example:

    ```python
    >>> from huggingface_hub import EvalResult, ModelCard
    >>> from hf_cir.hub import update_card_evaluation
    >>> row = dict(task_type="composed-image-retrieval", dataset_type="toy", dataset_name="toy", metric_type="recall@1")
    >>> card = update_card_evaluation(ModelCard("---\\nlicense: mit\\n---\\n# Mine\\n"),
    ...                               [EvalResult(**row, metric_name="recall@1 (lincir)", metric_value=22.3)],
    ...                               [EvalResult(**row, metric_name="recall@1 (sum)", metric_value=21.0)],
    ...                               model_method="lincir", model_name="mine")
    >>> [entry.metric_name for entry in card.data.eval_results], card.data.model_name
    (['recall@1 (lincir)'], 'mine')

    ```
    """
    data = card.data
    if not data.model_name:
        data.model_name = model_name
    if not data.model_name:
        raise ValueError("The card has no model_name; pass `model_name` (the model-index needs one).")

    def key(entry: EvalResult) -> tuple:
        return entry.dataset_name, entry.dataset_split, entry.metric_name

    def merge(old: list[EvalResult], new: list[EvalResult]) -> list[EvalResult]:
        replaced = {key(entry) for entry in new}
        return [entry for entry in old if key(entry) not in replaced] + new

    own, moved = [], []
    for entry in data.eval_results or []:
        method = _method_of(entry)
        (moved if model_method and method and method != model_method else own).append(entry)
    own = merge(own, list(results))
    text = card.text
    baseline_rows = merge(merge(_baselines_in(text), moved), list(baselines))
    data.eval_results = own or None
    block = evaluation_markdown(own, baseline_rows)
    if _EVALUATION_BEGIN in text and _EVALUATION_END in text:
        before, rest = text.split(_EVALUATION_BEGIN, 1)
        text = before + block + rest.split(_EVALUATION_END, 1)[1]
    else:
        section = f"## Evaluation\n\n{block}\n"
        if "\n## Citation" in text:
            before, after = text.split("\n## Citation", 1)
            text = f"{before.rstrip()}\n\n{section}\n## Citation{after}"
        else:
            text = f"{text.rstrip()}\n\n{section}"
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{text}")


def equivalent_command(
    script: str,
    arguments: Mapping,
    parser: argparse.ArgumentParser | None = None,
    launcher: str = "accelerate launch",
) -> str:
    """A shell command that runs `script` with `arguments` again: every argument whose value differs from the
    `parser`'s default, spelled so that the parser reads back the same value (`--flag` / `--no-flag` for booleans,
    one word per list item, shell quoting). Local absolute paths become [`portable_path`]s. Without a `parser`,
    `None` and `False` are taken to be the defaults.

    Example:

    ```python
    >>> import argparse
    >>> from hf_cir.hub import equivalent_command
    >>> parser = argparse.ArgumentParser()
    >>> _ = parser.add_argument("--train_file", nargs="+")
    >>> _ = parser.add_argument("--use_ema", action=argparse.BooleanOptionalAction, default=True)
    >>> _ = parser.add_argument("--learning_rate", type=float, default=1e-4)
    >>> print(equivalent_command("training/train.py", {"train_file": ["a b.txt"], "use_ema": False,
    ...                                                  "learning_rate": 1e-4}, parser))
    accelerate launch training/train.py \\
      --train_file 'a b.txt' \\
      --no-use_ema

    ```
    """
    words = []
    for name, value in arguments.items():
        default = parser.get_default(name) if parser is not None else None
        if value == default and type(value) is type(default):
            continue
        if value is None or (value is False and parser is None):
            continue  # nothing to write for these: the default (or a value no option can set)
        flag = f"--{name}"
        if isinstance(value, bool):
            words.append(flag if value else f"--no-{name}")
        elif isinstance(value, (list, tuple)):
            words.append(" ".join([flag, *(shlex.quote(str(item)) for item in _portable(list(value)))]))
        else:
            words.append(f"{flag} {shlex.quote(str(_portable(value)))}")
    return " \\\n  ".join([f"{launcher} {script}", *words])


# Arguments never written to a card: secrets, and what only this machine's run means (resuming does not change
# the result: it is bit-identical).
_HIDDEN_ARGUMENTS = {"hub_token", "local_rank", "resume_from_checkpoint"}


def training_arguments(args: Mapping | argparse.Namespace) -> dict:
    """The run's arguments as a JSON-safe dict, secrets removed (`argparse.Namespace` or dict).

    Example:

    ```python
    >>> import argparse
    >>> from hf_cir.hub import training_arguments
    >>> training_arguments(argparse.Namespace(learning_rate=1e-4, hub_token="secret"))
    {'learning_rate': 0.0001}

    ```
    """
    values = dict(args) if isinstance(args, Mapping) else vars(args)
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


def write_model_card(card: ModelCard | str, folder: str | os.PathLike) -> Path:
    """Write `card` as `folder/README.md`, atomically: the one writer of every card hf-cir saves (saving, conversion,
    training, `hf-cir evaluate --update-model-card`).

    Example:

    ```python
    >>> import tempfile
    >>> from hf_cir.hub import write_model_card
    >>> path = write_model_card("# A model", tempfile.mkdtemp())
    >>> path.name, path.read_text()
    ('README.md', '# A model')

    ```
    """
    from ..utils import atomic_file

    path = Path(folder) / "README.md"
    with atomic_file(path, "w") as handle:
        handle.write(str(card))
    return path


def training_details_markdown(
    script: str,
    arguments: Mapping | argparse.Namespace,
    data: Mapping | None = None,
    results: Mapping | None = None,
    parser: argparse.ArgumentParser | None = None,
) -> str:
    """Markdown describing a training run of `training/{script}`: its data, results, every argument (the run's
    `argparse.Namespace` or a dict; secrets left out, see [`training_arguments`]), and the [`equivalent_command`]
    that reruns it (from a checkout of hf-cir, in the run's working directory), spelled for `parser` (the script's
    own parser). Local paths appear as [`portable_path`]s. The `training_details` of every card template.

    Example:

    ```python
    >>> from hf_cir.hub import training_details_markdown
    >>> print(training_details_markdown("train_lincir.py", {"seed": 0}).splitlines()[0])
    Trained with hf-cir's `training/train_lincir.py`.

    ```
    """
    arguments = training_arguments(arguments)
    lines = [f"Trained with hf-cir's `training/{script}`.", ""]
    if data:
        lines += ["### Data", "", "| | |", "| --- | --- |"]
        lines += [f"| {key} | `{_portable(value)}` |" for key, value in data.items()]
        lines.append("")
    if results:
        lines += ["### Results", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {key} | {value} |" for key, value in results.items()]
        lines.append("")
    lines += ["### Arguments", "", "| argument | value |", "| --- | --- |"]
    lines += [f"| `{key}` | `{json.dumps(_portable(value))}` |" for key, value in arguments.items()]
    command = equivalent_command(f"training/{script}", arguments, parser)
    lines += [
        "",
        "Command (equivalent; local paths are relative to the run's working directory, or their names when outside "
        "it):",
        "",
        "```bash",
        command,
        "```",
    ]
    return "\n".join(lines)


def _name_of(component) -> str:
    name = getattr(getattr(component, "config", None), "_name_or_path", None) or getattr(
        component, "name_or_path", None
    )
    return portable_path(name) if name else type(component).__name__


def create_compodiff_model_card(
    pipeline,
    model_id: str | None = None,
    base_models: list[str] | None = None,
    eval_results: list[EvalResult] | None = None,
    source: str | None = None,
    training_details: str | None = None,
    results_table: str | None = None,
    datasets: list[str] | None = None,
    license: str | None = "apache-2.0",
    example: Mapping | None = None,
) -> ModelCard:
    """
    Render the card of a [`CompoDiffPipeline`]: `license` (`None` leaves it unstated), base models (default: the
    encoders' names that are Hub ids), tags, usage, citation (Gu et al., TMLR 2024), and a model-index block when
    `eval_results` (this model's own) are given. `example` overrides the usage snippet's `prompt`,
    `negative_prompt`, `guidance_scale` and `image_guidance_scale` (e.g. words and scales that suit the model).

    Example:

    ```python
    >>> from hf_cir import CompoDiffPipeline
    >>> from hf_cir.hub import create_compodiff_model_card
    >>> from hf_cir.toy import toy_checkpoint
    >>> pipe = CompoDiffPipeline.from_pretrained(toy_checkpoint("compodiff"))
    >>> card = create_compodiff_model_card(pipe, model_id="me/compodiff-toy")
    >>> card.data.model_name, card.data.pipeline_tag, card.data.library_name
    ('me/compodiff-toy', 'image-feature-extraction', 'diffusers')

    ```
    """
    results = _eval_results(eval_results)
    if base_models is None:
        base_models = [
            getattr(getattr(component, "config", None), "_name_or_path", None)
            for component in (pipeline.text_encoder, pipeline.image_encoder)
        ]
    hub_ids = list(dict.fromkeys(str(name) for name in base_models if name and is_hub_id(name)))
    prior_config = pipeline.prior.config
    card_data = ModelCardData(
        license=license,
        library_name="diffusers",
        pipeline_tag=PIPELINE_TAG,
        base_model=hub_ids or None,
        tags=list(COMPODIFF_TAGS),
        datasets=datasets,
        model_name=model_id or "CompoDiff",
        eval_results=results or None,
    )
    evaluation = results_table or (evaluation_markdown(results) if results else None)
    example = {**_COMPODIFF_EXAMPLE, **(example or {})}
    return render_model_card(
        "compodiff",
        card_data,
        model_id=model_id,
        usage_id=model_id or "path/to/compodiff",
        text_encoder=_name_of(pipeline.text_encoder) if pipeline.text_encoder is not None else "none",
        image_encoder=_name_of(pipeline.image_encoder) if pipeline.image_encoder is not None else "none",
        embedding_dim=prior_config.embedding_dim,
        num_layers=prior_config.num_layers,
        num_attention_heads=prior_config.num_attention_heads,
        attention_head_dim=prior_config.attention_head_dim,
        text_embed_dim=prior_config.text_embed_dim,
        mask_size=prior_config.mask_size,
        num_train_timesteps=getattr(
            pipeline.scheduler.config, "num_train_timesteps", prior_config.num_train_timesteps
        ),
        source=source,
        training_details=training_details,
        evaluation=evaluation,
        example=example,
    )
