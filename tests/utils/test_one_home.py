"""Concepts with one home (issue 21): no two modules of `hf_cir` define the same helper under the same name, and the
app classifies errors by the rule the command line uses."""

import ast
from collections import defaultdict
from pathlib import Path

import pytest

import hf_cir

PACKAGE = Path(hf_cir.__file__).resolve().parent
# Names that had twins: each must now be defined (assigned at module level or `def`ined) in exactly one module.
ONE_HOME = (
    "USER_ERRORS",
    "disable_progress_bars",
    "import_faiss",
    "_import_faiss",
    "training_details_markdown",
    "training_arguments",
    "write_model_card",
)


def _definitions() -> dict[str, list[str]]:
    found = defaultdict(list)
    for path in sorted(PACKAGE.rglob("*.py")):
        if "checkpoints" in path.relative_to(PACKAGE).parts:
            continue
        for node in ast.parse(path.read_text(), str(path)).body:
            names = []
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                names = [node.name]
            elif isinstance(node, ast.Assign):
                names = [target.id for target in node.targets if isinstance(target, ast.Name)]
            for name in names:
                found[name].append(str(path.relative_to(PACKAGE)))
    return found


@pytest.mark.parametrize("name", ONE_HOME)
def test_defined_once(name):
    homes = _definitions().get(name, [])
    assert len(homes) <= 1, f"{name} is defined in {homes}"


def test_the_app_and_the_command_line_agree_on_user_errors():
    pytest.importorskip("gradio")
    from hf_cir.app import server
    from hf_cir.commands import _common
    from hf_cir.utils import errors

    assert server.USER_ERRORS is _common.USER_ERRORS is errors.USER_ERRORS
    # A KeyError raised inside hf-cir is a bug for both (a traceback), a ValueError about the input is not.
    assert not errors.is_user_error(KeyError("row")) and errors.is_user_error(ValueError("`text` is empty"))
