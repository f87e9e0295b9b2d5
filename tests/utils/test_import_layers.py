"""The import graph of `hf_cir`: imports only point down the layers the README lists, and no module cycle exists.

Every `import` / `from ... import` in every module counts, also those inside functions (a lazy import is still a
dependency) and those guarded by `try`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import hf_cir

PACKAGE = Path(hf_cir.__file__).resolve().parent
# Lowest first; a module may import its own layer and the ones below, never one above.
LAYERS = (
    ("utils",),
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
