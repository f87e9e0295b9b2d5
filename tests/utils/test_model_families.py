"""The model-family registry is the only place that names a family (issue 21, `docs/adding-a-method.md`).

- Each registered family's files, listed from the registry, exist and lie in the places a family may add files to:
  a new family touches those files and its registration, nothing else.
- No module of `hf_cir.commands` or `hf_cir.app` names a family: no string that is a family's name, one of its methods
  or one of its classes, no family class as a name, no import of a family's module.
- The command line's `--method` choices and `convert` subcommands come from the registry: a family registered in a
  test appears in them without any other change.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
from pathlib import Path

import pytest

import hf_cir
from hf_cir.families import (
    MODEL_FAMILIES,
    Converter,
    ConverterArgument,
    MethodSpec,
    ModelFamily,
    model_families,
    register_model_family,
)

PACKAGE = Path(hf_cir.__file__).resolve().parent
REPOSITORY = PACKAGE.parents[1]
# Where a family's own files may live (relative to the repository).
FAMILY_PLACES = (
    "src/hf_cir/models/",
    "src/hf_cir/pipelines/",
    "src/hf_cir/schedulers/",
    "src/hf_cir/retrieval/adapters/",
    "src/hf_cir/hub/",
    "src/hf_cir/conversion/",
    "model_cards/",
)
# The modules that must never name a family.
FAMILY_BLIND = ("commands", "app")


def _family_words() -> tuple[set[str], set[str]]:
    """(strings that name a family: names, titles, methods and class names; module paths of family code)."""
    words, modules = set(), set()
    for family in model_families().values():
        words |= {family.name, family.title} | {spec.name for spec in family.methods}
        words |= {spec.label for spec in family.methods}
        for path in family._paths():
            module, _, attribute = path.partition(":")
            words.add(attribute.rpartition(".")[2])
            if not module.startswith(("hf_cir.hub.", "hf_cir.retrieval.models")):  # shared modules
                modules.add(module)
    return words, modules


def _named_families(path: Path, words: set[str], modules: set[str]) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in words:
            found.append(f"line {node.lineno}: the string {node.value!r}")
        elif isinstance(node, ast.Name) and node.id in words:
            found.append(f"line {node.lineno}: the name {node.id}")
        elif isinstance(node, ast.Attribute) and node.attr in words:
            found.append(f"line {node.lineno}: the attribute .{node.attr}")
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [alias.name for alias in node.names]
            imported = names if isinstance(node, ast.Import) else [f"{node.module}.{name}" for name in names]
            for name in imported + ([node.module] if isinstance(node, ast.ImportFrom) and node.module else []):
                if any(name == module or name.startswith(module + ".") for module in modules):
                    found.append(f"line {node.lineno}: imports {name}")
                if any(name.endswith("." + word) for word in words):
                    found.append(f"line {node.lineno}: imports {name}")
    return found


def test_each_family_lists_its_files_and_they_are_its_own():
    families = model_families()
    assert {"lincir", "compodiff"} <= set(families)
    for family in families.values():
        files = family.source_files()
        registration = f"src/hf_cir/families/{family.name}.py"
        assert (REPOSITORY / registration).is_file(), f"{family.name}: no registration module {registration}"
        for file in files:
            assert (REPOSITORY / file).is_file(), f"{family.name}: {file} is listed but does not exist"
            assert file.startswith(FAMILY_PLACES), f"{family.name}: {file} is not in a family's place"
        # The files a family touches never include the commands, the app or the retrieval internals.
        assert not [f for f in files if f.startswith(("src/hf_cir/commands/", "src/hf_cir/app/"))]
        for field in ("retrieval_model", "model_card", "save", "folder_kind"):
            assert family.load(field) is not None  # every part resolves
        assert (REPOSITORY / "docs/adding-a-method.md").is_file()


@pytest.mark.parametrize("layer", FAMILY_BLIND)
def test_commands_and_app_name_no_family(layer):
    words, modules = _family_words()
    named = {
        str(path.relative_to(PACKAGE)): found
        for path in sorted((PACKAGE / layer).rglob("*.py"))
        if (found := _named_families(path, words, modules))
    }
    assert not named, "\n".join(f"{path}: {'; '.join(found)}" for path, found in named.items())


def test_the_scan_sees_a_family_named(tmp_path):
    words, modules = _family_words()
    module = tmp_path / "bad.py"
    module.write_text(
        "from hf_cir.retrieval.adapters.compodiff import CompoDiffRetrievalModel\n"
        "def f(model):\n"
        "    return model.model_type == 'lincir' or isinstance(model, CompoDiffRetrievalModel)\n"
    )
    found = " ".join(_named_families(module, words, modules))
    assert "'lincir'" in found and "CompoDiffRetrievalModel" in found and "imports" in found


@pytest.fixture
def new_family():
    family = register_model_family(
        ModelFamily(
            name="newfam",
            title="NewFam",
            methods=(MethodSpec("newfam", "NewFam", reference="optional", negative_text=True),),
            config_model_type="newfam",
            retrieval_model="newfam_package.retrieval:NewFamRetrievalModel",
            model_classes=("newfam_package.modeling:NewFamModel",),
            model_card="newfam_package.card:create_card",
            card_template="newfam.md",
            save="newfam_package.card:save",
            folder_kind="newfam_package.card:NEWFAM_FOLDER",
            converters=(
                Converter(
                    "newfam",
                    "a released NewFam checkpoint",
                    "example: hf-cir convert newfam --weights w.bin --output-dir out",
                    "newfam_package.conversion:convert",
                    (ConverterArgument("--weights", "weights", "the released file", True),),
                ),
            ),
        )
    )
    yield family
    del MODEL_FAMILIES["newfam"]


def _subparser(parser: argparse.ArgumentParser, *names: str) -> argparse.ArgumentParser:
    for name in names:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


def test_a_registered_family_reaches_the_command_line(new_family, tmp_path):
    from hf_cir.cli import build_parser
    from hf_cir.families import read_model_folder
    from hf_cir.retrieval.query import ComposedQuery

    parser = build_parser()
    for command in ("search", "evaluate"):
        method = next(a for a in _subparser(parser, command)._actions if a.dest == "method")
        assert "newfam" in method.choices
    convert = _subparser(parser, "convert", "newfam")
    assert convert.parse_args(["--weights", "w.bin", "--output-dir", "out"]).weights == "w.bin"
    assert "NewFam" in _subparser(parser, "search").format_help()  # --negative-text names who takes it
    # A folder of the family is recognised, and its method's rules apply to queries.
    (tmp_path / "config.json").write_text('{"model_type": "newfam"}')
    assert read_model_folder(tmp_path).family is new_family
    ComposedQuery(text="is red", negative_text="blurry").check("newfam")
    with pytest.raises(ValueError, match="`mask` does not apply to method 'newfam'"):
        ComposedQuery(text="is red", image="a.png", mask="m.png").check("newfam")


def test_a_family_cannot_take_a_method_of_another(new_family):
    clash = dataclasses.replace(new_family, name="other", methods=(MethodSpec("lincir", "Clash"),))
    with pytest.raises(ValueError, match="already a method of lincir"):
        register_model_family(clash)
