"""Every `>>>` example in the docstrings of `hf_cir` runs here, so an example that drifts from the code fails CI.

Examples are written in Markdown code fences (```python ... ```), as in transformers and diffusers; the parser ends
an example's expected output at the closing fence. `# doctest: +SKIP` marks the few that need the Hub or files a
reader has (a converted release, their own photos); every other example runs on data the package ships (the toy
checkpoints in `hf_cir/toy/checkpoints`).
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
import types

import pytest

import hf_cir

_FENCE = re.compile(r"^[ \t]*```.*$", re.MULTILINE)
OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


class FencedDocTestParser(doctest.DocTestParser):
    """A doctest parser for Markdown docstrings: fence lines become blank lines (line numbers are kept)."""

    def parse(self, string, name="<string>"):
        return super().parse(_FENCE.sub("", string), name)


def _modules() -> list[str]:
    names = [hf_cir.__name__]
    for info in pkgutil.walk_packages(hf_cir.__path__, prefix=f"{hf_cir.__name__}."):
        if ".toy.checkpoints." in info.name or info.name.endswith("__main__"):
            continue
        names.append(info.name)
    return sorted(names)


def _examples() -> list[pytest.param]:
    finder = doctest.DocTestFinder(parser=FencedDocTestParser())
    params = []
    for name in _modules():
        module = importlib.import_module(name)
        for test in finder.find(module, name):
            if test.examples and test.name.startswith(name):
                params.append(pytest.param(test, id=test.name))
    return params


def run_examples(test: doctest.DocTest) -> doctest.TestResults:
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    test.globs = dict(test.globs)
    results = runner.run(test, out=lambda text: print(text, end=""))
    return results


@pytest.mark.parametrize("test", _examples())
def test_docstring_example(test):
    results = run_examples(test)
    assert results.failed == 0, f"{results.failed} of {results.attempted} examples of {test.name} failed (see stdout)"


def test_a_wrong_example_fails():
    module = types.ModuleType("hf_cir_example_module")
    module.__doc__ = "Example:\n\n```python\n>>> 1 + 1\n3\n```\n"
    (test,) = doctest.DocTestFinder(parser=FencedDocTestParser()).find(module, module.__name__)
    assert run_examples(test).failed == 1
    module.__doc__ = module.__doc__.replace("3\n", "2\n")
    (test,) = doctest.DocTestFinder(parser=FencedDocTestParser()).find(module, module.__name__)
    assert run_examples(test) == doctest.TestResults(failed=0, attempted=1)


def test_every_module_is_searched():
    names = _modules()
    assert {"hf_cir.models.lincir.modeling_lincir", "hf_cir.pipelines.compodiff.pipeline_compodiff"} <= set(names)
    assert len(_examples()) >= 40
