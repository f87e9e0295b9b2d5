"""The model-family registry: what differs between LinCIR, CompoDiff and every family added later, in one table.

A family registers one [`ModelFamily`] with [`register_model_family`] (its module in `hf_cir/families/`, found and
imported by [`model_families`]). The table holds only names and `"module:attribute"` strings, so that reading it (the
command line's `--method` choices and `convert` subcommands, `hf-cir --help`) imports no deep-learning library; a
caller resolves the attribute it needs with [`ModelFamily.load`] when it runs. Callers never name a family: the
folder's files say which family it is ([`read_model_folder`]), the family says the rest.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "BASELINE_METHODS",
    "MODEL_FAMILIES",
    "QUERY_ARGUMENT_NAMES",
    "Converter",
    "ConverterArgument",
    "check_method",
    "MethodSpec",
    "ModelFamily",
    "ModelFolder",
    "family_of_method",
    "get_model_family",
    "method_spec",
    "methods_taking",
    "own_methods",
    "read_model_folder",
    "register_model_family",
]


@dataclass(frozen=True)
class MethodSpec:
    """What a retrieval method needs from a composed query: the one statement of each method's rules.

    Attributes:
        name: The method's name (`--method NAME`, the app's column key).
        label: How the app names it.
        text: `"required"`, `"optional"` or `"refused"`: the modification text.
        reference: `"required"`, `"optional"` or `"refused"`: the reference image (a file, an upload, a gallery id or
            a stored embedding). `"refused"` methods ignore no input silently: a given reference is an error.
        mask: Whether the method takes a mask of the region to change (it then needs the reference image itself).
        negative_text: Whether the method takes a negative text.
        image_embedding: Whether its query embedding is a CLIP image embedding (what a diffusers unCLIP decoder can
            picture: the app's *Imagine*).
        reference_pixels: Whether it composes from the reference image itself rather than from the reference's
            gallery embedding (MagicLens: its fusion reads the image's CLIP embedding, which a gallery row is not).
            Searches and evaluations then load the reference image; a stored or given embedding is refused.
        query_texts: Benchmark name -> a `str.format` template of the query text the method's own evaluation builds
            from the benchmark's annotation fields (`CIRQuery.fields`), e.g. `{"circo": "find {shared_concept} but
            {relative_caption}"}`; a benchmark not listed keeps its usual texts.
    """

    name: str
    label: str
    text: str = "required"
    reference: str = "required"
    mask: bool = False
    negative_text: bool = False
    image_embedding: bool = False
    reference_pixels: bool = False
    query_texts: tuple[tuple[str, str], ...] = ()

    def __post_init__(self):
        for name in ("text", "reference"):
            if getattr(self, name) not in _NEEDS:
                raise ValueError(f"MethodSpec.{name} must be one of {_NEEDS}, got {getattr(self, name)!r}.")
        if isinstance(self.query_texts, dict):  # kept as sorted pairs, so that the spec stays hashable
            object.__setattr__(self, "query_texts", tuple(sorted(self.query_texts.items())))
        for pair in self.query_texts:
            if not (isinstance(pair, tuple) and len(pair) == 2 and all(isinstance(part, str) for part in pair)):
                raise ValueError(f"MethodSpec.query_texts maps benchmark names to template strings, got {pair!r}.")

    def query_text_template(self, benchmark: str) -> str | None:
        """The template of this method's query text on `benchmark` (`None`: the benchmark's usual texts)."""
        return dict(self.query_texts).get(benchmark)

    @property
    def uses_reference(self) -> bool:
        """Whether a given reference image changes the method's query embedding."""
        return self.reference in ("required", "optional")

    def check(
        self,
        *,
        text: str | None = None,
        reference: bool = False,
        mask: bool = False,
        negative_text: str | None = None,
        reference_image: bool = True,
        names: dict[str, str] | None = None,
        label: str | None = None,
    ) -> None:
        """Raise a `ValueError` naming the argument when a query's inputs do not fit this method.

        Args:
            text: The modification text (`None`: not given).
            reference: Whether a reference is given (an image, a gallery id or a stored embedding).
            mask: Whether a mask is given.
            negative_text: The negative text (`None`: not given).
            reference_image: Whether the reference image itself (not only an embedding) can be had: a mask needs it.
            names: How the caller calls each input (`text`, `reference`, `mask`, `negative_text`), e.g. `--image`.
            label: How the caller calls the method, e.g. `--method lincir` (default: `method 'lincir'`).
        """
        names = {**QUERY_ARGUMENT_NAMES, **(names or {})}
        label = label or f"method {self.name!r}"
        for key, value in (("text", text), ("negative_text", negative_text)):
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"{names[key]} is empty; give the words, or leave {names[key]} out.")
        if mask and not (reference and reference_image):
            raise ValueError(
                f"{names['mask']}: a mask needs the reference image itself ({names['reference']}), not a stored "
                "embedding: it marks the region of the reference image to change."
            )
        if self.reference_pixels and reference and not reference_image:
            raise ValueError(
                f"{label} composes from the reference image itself ({names['reference']}), not from a stored "
                "embedding: give the image."
            )
        for key, given, allowed in (
            ("mask", mask, self.mask),
            ("negative_text", negative_text is not None, self.negative_text),
        ):
            if given and not allowed:
                what = key.replace("_", " ")
                takers = [spec.label for spec in _all_specs() if getattr(spec, key)]
                only = (
                    f" (only {' and '.join(takers)} take{'s' if len(takers) == 1 else ''} a {what})" if takers else ""
                )
                raise ValueError(f"{names[key]} does not apply to {label}: it does not take {what}s{only}.")
        if self.text == "required" and text is None:
            raise ValueError(f"{label} needs {names['text']}; only the image baseline works with an image alone.")
        if self.text == "refused" and text is not None:
            raise ValueError(f"{names['text']} does not apply to {label}: it ranks by the reference image alone.")
        if self.reference == "required" and not reference:
            raise ValueError(f"{label} needs {names['reference']}.")
        if self.reference == "refused" and reference:
            raise ValueError(f"{names['reference']} does not apply to {label}.")


_NEEDS = ("required", "optional", "ignored", "refused")
# How `MethodSpec.check` names a query's inputs unless the caller says otherwise (the Python API's arguments).
QUERY_ARGUMENT_NAMES = {
    "text": "`text`",
    "reference": "a reference image",
    "mask": "`mask`",
    "negative_text": "`negative_text`",
}


# The baselines every family offers, with its own image and text towers.
BASELINE_METHODS = ("image", "text", "sum")
_BASELINES = {
    "image": MethodSpec("image", "Image only (baseline)", text="refused"),
    "text": MethodSpec("text", "Text only (baseline)", reference="ignored"),
    "sum": MethodSpec("sum", "Image + text (baseline)"),
}


@dataclass(frozen=True)
class ConverterArgument:
    """One option of an `hf-cir convert NAME` subcommand: `argparse.add_argument(flag, dest=dest, ...)`; the
    converter function receives it as the keyword `dest`."""

    flag: str
    dest: str
    help: str
    required: bool = False


@dataclass(frozen=True)
class Converter:
    """A released checkpoint format and its converter, as `hf-cir convert NAME`.

    Attributes:
        name: The subcommand.
        help: One line for `hf-cir convert --help`.
        example: The subcommand's epilog.
        function: `"module:function"`: called with the arguments' `dest`s, `output_dir` and `push_to_hub` as keywords
            (and `overwrite` when `overwrite` is set); returns the converted model.
        arguments: The subcommand's options besides `--output-dir`, `--push-to-hub` and `--overwrite`.
        overwrite: Whether the function takes `overwrite` (the subcommand then has `--overwrite`).
    """

    name: str
    help: str
    example: str
    function: str
    arguments: tuple[ConverterArgument, ...]
    overwrite: bool = False


@dataclass(frozen=True)
class ModelFamily:
    """A model family: how its folders are recognised, its methods, and where its parts live.

    Every `"module:attribute"` string is resolved by [`ModelFamily.load`] only when a caller needs it.

    Attributes:
        name: The family's model type (`RetrievalModel.model_type`), e.g. `"lincir"`.
        title: The family's name in messages.
        methods: The family's own methods; the first is a folder's method unless `method_config_key` names another.
        config_model_type: A folder of this family has a `config.json` with this `model_type` (transformers models).
        pipeline_class: ... or a `model_index.json` whose `_class_name` is this (diffusers pipelines).
        method_config_key: The `config.json` key that names the folder's own method (one class, several methods).
        retrieval_model: The [`RetrievalModel`] subclass; its `from_pretrained(folder, device, dtype, **settings)`
            loads a folder.
        model_classes: The classes [`hf_cir.hub.save_pretrained`] recognises as this family.
        model_card: `function(model, **card_kwargs) -> huggingface_hub.ModelCard`.
        card_template: The Jinja template under `model_cards/` that `model_card` renders.
        save: `function(model, directory, processor)` writing the folder without its card.
        folder_kind: The `hf_cir.utils.io.ArtefactKind` of a saved folder (what `--overwrite` may replace).
        remote_code: `function(folder)` giving a saved folder the Hub remote-code layout (`hf-cir export`).
        auto_classes: transformers Auto class name -> `"module:Class"`, registered by `import hf_cir` once
            transformers is imported.
        converters: The `hf-cir convert` subcommands of the family's released checkpoints.
        sampling_options: Keyword settings its `retrieval_model` takes (the command line's sampling options).
        clip_text_baseline: Whether its `text` baseline is CLIP's projected text features (the app runs the baselines
            with such a model when it serves one).
        baselines: The baselines (of `BASELINE_METHODS`) its models run; MagicLens has no text-only embedding in its
            gallery space, so only `image`.
    """

    name: str
    title: str
    methods: tuple[MethodSpec, ...]
    retrieval_model: str
    model_classes: tuple[str, ...]
    model_card: str
    card_template: str
    save: str
    folder_kind: str
    config_model_type: str | None = None
    pipeline_class: str | None = None
    method_config_key: str | None = None
    remote_code: str | None = None
    auto_classes: dict[str, str] = field(default_factory=dict)
    converters: tuple[Converter, ...] = ()
    sampling_options: tuple[str, ...] = ()
    clip_text_baseline: bool = True
    baselines: tuple[str, ...] = BASELINE_METHODS

    @property
    def method_names(self) -> tuple[str, ...]:
        """The family's own methods, then the baselines it runs."""
        return tuple(spec.name for spec in self.methods) + self.baselines

    @property
    def default_method(self) -> str:
        return self.methods[0].name

    def load(self, attribute: str) -> Any:
        """Resolve the `"module:attribute"` string held in the field `attribute` (imports its module)."""
        return resolve(getattr(self, attribute))

    def is_instance(self, obj: Any) -> bool:
        """Whether `obj` is one of `model_classes`, decided by class names (nothing is imported)."""
        names = {f"{cls.__module__}:{cls.__qualname__}" for cls in type(obj).__mro__}
        short = {f"{cls.__module__.rpartition('.')[0]}:{cls.__qualname__}" for cls in type(obj).__mro__}
        return any(path in names or path in short for path in self.model_classes)

    def source_files(self) -> list[str]:
        """The repository files this family consists of (relative to the repository root): what a new family adds."""
        modules = {path.partition(":")[0] for path in self._paths()}
        files = sorted({_module_file(module) for module in modules})
        return files + [f"model_cards/{self.card_template}"]

    def _paths(self) -> list[str]:
        paths = [self.retrieval_model, *self.model_classes, self.model_card, self.save, self.folder_kind]
        paths += [self.remote_code] if self.remote_code else []
        paths += list(self.auto_classes.values()) + [converter.function for converter in self.converters]
        return paths


def resolve(path: str) -> Any:
    """`"package.module:attribute"` -> the attribute (its module imported)."""
    module, _, attribute = path.partition(":")
    value = importlib.import_module(module)
    for part in attribute.split(".") if attribute else []:
        value = getattr(value, part)
    return value


def _module_file(module: str) -> str:
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec(module.partition(".")[0])  # the top package only: nothing heavy is imported
    root = Path(next(iter(spec.submodule_search_locations)))
    relative = Path(*module.split(".")[1:])
    path = root / relative / "__init__.py" if (root / relative).is_dir() else root / relative.with_suffix(".py")
    return str(Path("src") / module.partition(".")[0] / path.relative_to(root))


# model type -> family, filled by `register_model_family` as the family modules are imported.
MODEL_FAMILIES: dict[str, ModelFamily] = {}


def register_model_family(family: ModelFamily) -> ModelFamily:
    """Make `family` known to every command, the app, the evaluation, saving and conversion.

    Example:

    ```python
    >>> from hf_cir.families import MODEL_FAMILIES, MethodSpec, ModelFamily, register_model_family
    >>> family = register_model_family(ModelFamily(
    ...     name="my-family", title="Mine", methods=(MethodSpec("mine", "Mine"),), config_model_type="my-family",
    ...     retrieval_model="my_package.retrieval:MyRetrievalModel", model_classes=("my_package.model:MyModel",),
    ...     model_card="my_package.card:create_card", card_template="mine.md", save="my_package.card:save",
    ...     folder_kind="my_package.card:MY_FOLDER"))
    >>> MODEL_FAMILIES["my-family"].default_method
    'mine'
    >>> del MODEL_FAMILIES["my-family"]

    ```
    """
    if not isinstance(family, ModelFamily) or not family.methods:
        raise TypeError(f"register_model_family takes a ModelFamily with at least one method, got {family!r}.")
    if (family.config_model_type is None) == (family.pipeline_class is None):
        raise ValueError(f"Family {family.name!r}: give exactly one of `config_model_type` and `pipeline_class`.")
    unknown = [name for name in family.baselines if name not in BASELINE_METHODS]
    if unknown:
        raise ValueError(f"Family {family.name!r}: unknown baselines {unknown}; expected some of {BASELINE_METHODS}.")
    registered = MODEL_FAMILIES.get(family.name)
    if registered is not None and registered != family:
        raise ValueError(f"A model family named {family.name!r} is already registered.")
    taken = {
        spec.name: other.name
        for other in MODEL_FAMILIES.values()
        if other.name != family.name
        for spec in other.methods
    }
    for spec in family.methods:
        if spec.name in _BASELINES or spec.name in taken:
            owner = taken.get(spec.name, "the baselines")
            raise ValueError(f"Family {family.name!r}: method {spec.name!r} is already a method of {owner}.")
    MODEL_FAMILIES[family.name] = family
    return family


def _families() -> dict[str, ModelFamily]:
    from . import model_families

    return model_families()


def get_model_family(name: str) -> ModelFamily:
    """The family registered under the model type `name`."""
    families = _families()
    if name not in families:
        raise ValueError(f"Unknown model family {name!r}; expected one of: {', '.join(families)}.")
    return families[name]


def method_spec(method: str) -> MethodSpec:
    """The rules of `method`: a family's own method or a baseline.

    Example:

    ```python
    >>> from hf_cir.families import method_spec
    >>> method_spec("image").text, method_spec("compodiff").mask
    ('refused', True)
    ```
    """
    for family in _families().values():
        for spec in family.methods:
            if spec.name == method:
                return spec
    if method in _BASELINES:
        return _BASELINES[method]
    raise ValueError(f"Unknown method {method!r}; expected one of: {', '.join(all_methods())}.")


def family_of_method(method: str) -> ModelFamily | None:
    """The family whose own method `method` is (`None` for a baseline)."""
    method_spec(method)  # raises for an unknown method
    return next((f for f in _families().values() if method in (s.name for s in f.methods)), None)


def _all_specs() -> list[MethodSpec]:
    return [spec for family in _families().values() for spec in family.methods] + list(_BASELINES.values())


def methods_taking(input_name: str) -> list[str]:
    """The labels of the methods that take `input_name` (`"mask"` or `"negative_text"`), e.g. `["CompoDiff"]`."""
    return [spec.label for spec in _all_specs() if getattr(spec, input_name)]


def own_methods() -> tuple[str, ...]:
    """Every family's own methods (no baseline)."""
    return tuple(spec.name for family in _families().values() for spec in family.methods)


def all_methods() -> tuple[str, ...]:
    """Every method: each family's own, then the baselines."""
    return tuple(spec.name for family in _families().values() for spec in family.methods) + BASELINE_METHODS


def check_method(methods: tuple[str, ...], owner: str, method: str | None, option: str = "Method") -> str:
    """`method` (`None`: `methods[0]`, the model's own) if the model `owner`, which runs `methods`, runs it."""
    method = methods[0] if method is None else method
    if method not in all_methods():
        raise ValueError(f"Unknown method {method!r}; expected one of: {', '.join(all_methods())}.")
    if method not in methods:
        if option.startswith("-") or method in BASELINE_METHODS:  # a command-line option, or a baseline it lacks
            shown = method if option.startswith("-") else repr(method)
            raise ValueError(
                f"{option} {shown} does not apply to the {methods[0]} model {owner}; it supports: {', '.join(methods)}."
            )
        raise ValueError(
            f"{option} {method!r} needs a {method} model, but {owner} is a {methods[0]} model; it supports: "
            f"{', '.join(methods)}."
        )
    return method


@dataclass(frozen=True)
class ModelFolder:
    """A model folder or Hub repository, read once: its family and its own method."""

    name_or_path: str
    family: ModelFamily
    method: str

    @property
    def methods(self) -> tuple[str, ...]:
        """What the folder's model runs: its own method, then its family's baselines."""
        return (self.method,) + self.family.baselines

    def check_method(self, method: str | None, option: str = "Method") -> str:
        """`method` (`None`: the folder's own) if the folder's model runs it, else a `ValueError`."""
        return check_method(self.methods, self.name_or_path, method, option)


def read_model_folder(name_or_path: str | os.PathLike) -> ModelFolder:
    """Which family a model folder (or Hub id) belongs to and which method it implements, from its
    `model_index.json` (`_class_name`) or `config.json` (`model_type`, and the family's `method_config_key`).

    Example:

    ```python
    >>> from hf_cir.families import read_model_folder
    >>> from hf_cir.toy import toy_checkpoint
    >>> folder = read_model_folder(toy_checkpoint("compodiff"))
    >>> folder.family.name, folder.method
    ('compodiff', 'compodiff')

    ```
    """
    families = list(_families().values())
    files = _model_files(name_or_path)
    expected = "; ".join(
        f"{f.title}: "
        + (
            f"model_index.json with _class_name {f.pipeline_class!r}"
            if f.pipeline_class
            else f"config.json with model_type {f.config_model_type!r}"
        )
        for f in families
    )
    if "model_index.json" in files:
        class_name = _read_json(files["model_index.json"]).get("_class_name")
        if isinstance(class_name, list) and len(class_name) == 2:  # [module, class] of a custom-pipeline folder
            class_name = class_name[1]
        family = next((f for f in families if f.pipeline_class and f.pipeline_class == class_name), None)
        if family is None:
            raise ValueError(
                f"Model {name_or_path}: model_index.json names the pipeline {class_name!r}; hf-cir runs {expected}."
            )
        return ModelFolder(str(name_or_path), family, family.default_method)
    if "config.json" in files:
        config = _read_json(files["config.json"])
        model_type = config.get("model_type")
        family = next((f for f in families if f.config_model_type and f.config_model_type == model_type), None)
        if family is None:
            raise ValueError(
                f"Model {name_or_path}: config.json has model_type {model_type!r}; hf-cir runs {expected}. A plain "
                "CLIP checkpoint becomes a LinCIR model with `LinCIRModel.from_clip`."
            )
        method = config.get(family.method_config_key, family.default_method) if family.method_config_key else None
        return ModelFolder(str(name_or_path), family, method or family.default_method)
    raise ValueError(
        f"Model {name_or_path}: neither "
        + " nor ".join(f"a {f.title} model" for f in families)
        + f" (hf-cir runs {expected})."
    )


def _read_json(path: Path) -> dict:
    import json

    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"Cannot read {path}: {error}") from error
    return data if isinstance(data, dict) else {}


def _model_files(name_or_path: str | os.PathLike) -> dict[str, Path]:
    """The `model_index.json` / `config.json` of a model folder or Hub repository (those that exist)."""
    from pathlib import Path

    path = Path(name_or_path)
    files: dict[str, Path] = {}
    if path.is_dir():
        for name in ("model_index.json", "config.json"):
            if (path / name).is_file():
                files[name] = path / name
    elif path.exists() or str(name_or_path).startswith((".", "/", "~")) or str(name_or_path).count("/") > 1:
        raise FileNotFoundError(f"Model {name_or_path}: no such folder.")
    else:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import LocalEntryNotFoundError, RemoteEntryNotFoundError

        errors = []
        for name in ("model_index.json", "config.json"):
            try:
                files[name] = Path(hf_hub_download(str(name_or_path), name))
                break
            except RemoteEntryNotFoundError:  # the repository exists but has no such file
                continue
            except LocalEntryNotFoundError as error:  # offline and not cached
                errors.append(f"{name}: not in the local cache and the Hub is unreachable ({error})")
            except Exception as error:  # offline, unknown repo, gated, ...
                errors.append(f"{name}: {type(error).__name__}: {error}")
        if not files and errors:
            raise OSError(
                f"Model {name_or_path!r} is not a local folder and could not be read from the Hub: "
                + "; ".join(errors)
            )
    return files
