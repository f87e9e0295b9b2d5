"""The import graph of `hf_cir`: imports only point down the layers the README lists, and no module cycle exists.

Every `import` / `from ... import` in every module counts, also those inside functions (a lazy import is still a
dependency) and those guarded by `try`. No module locates a file above the package either (`Path(__file__).parents[N]`
or `.parent.parent...` climbing out of `hf_cir`): what the package reads ships inside it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import hf_cir

PACKAGE = Path(hf_cir.__file__).resolve().parent
# Lowest first; a module may import its own layer and the ones below, never one above.
LAYERS = (
    ("utils", "families"),  # `families`: the model-family registry, names and "module:attribute" strings only
    ("models", "schedulers"),
    ("pipelines", ""),  # "" is the package root `hf_cir/__init__.py` (it re-exports models, schedulers, pipelines)
    ("conversion", "hub"),
    ("retrieval",),
    ("evaluation",),
    ("training",),
    ("toy",),
    ("app",),
    ("commands", "cli", "__main__"),
)
LAYER_OF = {name: level for level, names in enumerate(LAYERS) for name in names}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, name: str) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
    return {m for m in found if m == "hf_cir" or m.startswith("hf_cir.")}


def _graph() -> dict[str, set[str]]:
    files = {
        _module_name(path): path
        for path in PACKAGE.rglob("*.py")
        if "checkpoints" not in path.relative_to(PACKAGE).parts
    }
    graph = {}
    for name, path in files.items():
        targets = set()
        for imported in _imports(path, name):
            while imported not in files and "." in imported:  # `hf_cir.pkg.Class` -> `hf_cir.pkg`
                imported = imported.rpartition(".")[0]
            if imported in files and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    return LAYER_OF[top]


def test_every_subpackage_has_a_layer():
    assert {_layer(module) for module in _graph()} and all(
        (module.split(".") + [""])[1] in LAYER_OF for module in _graph()
    )


def test_imports_only_point_down():
    upward = sorted(
        f"{source} imports {target}"
        for source, targets in _graph().items()
        for target in targets
        if _layer(target) > _layer(source)
    )
    assert not upward, "\n".join(upward)


def test_no_import_cycle():
    graph = _graph()
    cycles = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        # A package's `__init__` re-exporting its own submodules is not a dependency between concepts: skip it.
        for target in sorted(t for t in graph[module] if not t.startswith(module + ".")):
            if state.get(target) == 1:
                cycles.append(" -> ".join(path[path.index(target) :] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)


def test_the_check_sees_a_violation(tmp_path):
    # The checker itself can fail: an upward import in a (synthetic) models module is found and ranked upward.
    module = tmp_path / "bad.py"
    module.write_text("def lazy():\n    from ..commands import cli\n")
    imported = _imports(module, "hf_cir.models.bad")
    assert "hf_cir.commands" in imported and _layer("hf_cir.commands") > _layer("hf_cir.models.bad")


def _climbs_out(path: Path, depth: int) -> list[str]:
    """Expressions of `path` that reach above the package from `__file__`: `X.parents[N]` or N chained `.parent`.

    `depth` is the file's depth in the package (`hf_cir/hub/cards.py`: 2; its `parents[1]` is the package).
    """
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not any(isinstance(n, ast.Name) and n.id == "__file__" for n in ast.walk(node)):
            continue
        if (
            isinstance(node, ast.Subscript)
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "parents"
            and isinstance(node.slice, ast.Constant)
            and isinstance(node.slice.value, int)
            and node.slice.value >= depth
        ):
            found.append(f"line {node.lineno}: parents[{node.slice.value}]")
        if isinstance(node, ast.Attribute) and node.attr == "parent":
            chain, inner = 0, node
            while isinstance(inner, ast.Attribute) and inner.attr == "parent":
                chain, inner = chain + 1, inner.value
            if chain > depth:  # the first `.parent` is the file's own folder
                found.append(f"line {node.lineno}: {chain} x .parent")
    return found


def test_no_module_locates_files_above_the_package():
    climbing = {
        str(relative): found
        for path in sorted(PACKAGE.rglob("*.py"))
        if "checkpoints" not in (relative := path.relative_to(PACKAGE)).parts
        and (found := _climbs_out(path, len(relative.parts)))
    }
    assert not climbing, "\n".join(f"{path}: {', '.join(found)}" for path, found in climbing.items())


def test_the_climb_check_sees_a_climb(tmp_path):
    module = tmp_path / "cards.py"
    module.write_text(
        "from pathlib import Path\n"
        "INSIDE = Path(__file__).resolve().parents[1] / 'model_card_templates'\n"
        "A = Path(__file__).resolve().parents[3] / 'model_cards'\n"
        "B = Path(__file__).parent.parent.parent\n"
    )
    found = _climbs_out(module, 2)  # as if it were hf_cir/hub/cards.py
    assert sorted(found) == ["line 3: parents[3]", "line 4: 3 x .parent"]
