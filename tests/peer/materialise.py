"""Materialise the peers' common test suites into a temporary folder at test time (never into this repository).

transformers: the `tests/*.py` files of the PyPI sdist of the *installed* transformers version, fetched with
`pip download --no-deps --no-binary :all: transformers==<version>` (cached) or taken from `$TRANSFORMERS_SDIST`.
The sdist does not ship `tests/generation/`, `tests/exporters/`, `tests/utils/` nor the repository's
`utils/fetch_hub_objects_for_ci.py`, which `test_modeling_common.py`, `test_configuration_common.py` and
`test_processing_common.py` import. Small stand-ins written here (our own code) take their place; what they leave
out is listed in `TRANSFORMERS_STUBS` and in tests/peer/README.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

# Package name of the materialised `tests/` folder: its files import each other relatively (`from .utils...`).
TRANSFORMERS_TESTS_PACKAGE = "transformers_tests"

# Stand-ins for the modules the sdist's common test files import but the sdist leaves out. Each one says what the
# real module holds and what running without it means.
TRANSFORMERS_STUBS = {
    # Real module: the export tests (`torch.export` of every model class), mixed into ModelTesterMixin. Without it
    # the `test_torch_export*` tests do not exist in this run.
    "exporters/test_export.py": (
        '"""Stand-in: the sdist has no tests/exporters; ModelTesterMixin runs without its export tests."""\n\n\n'
        "class ExportTesterMixin:\n"
        "    pass\n"
    ),
    # Real module: GenerationTesterMixin (for models that can `generate`). ModelTesterMixin only checks with
    # `issubclass` that a non-generative model's test does not inherit it; LinCIR cannot generate.
    "generation/test_utils.py": (
        '"""Stand-in: the sdist has no tests/generation; only `issubclass` checks use this class."""\n\n\n'
        "class GenerationTesterMixin:\n"
        "    pass\n"
    ),
    # Real module: `config_common_kwargs`, non-default values of PreTrainedConfig's common attributes, used by
    # ConfigTester.check_config_arguments_init (which returns early for composite configs such as LinCIR's).
    "utils/test_configuration_utils.py": (
        '"""Stand-in: the sdist has no tests/utils; non-default values of common PreTrainedConfig attributes."""\n\n'
        "config_common_kwargs = {\n"
        '    "return_dict": False,\n'
        '    "output_hidden_states": True,\n'
        '    "dtype": "float16",\n'
        '    "chunk_size_feed_forward": 5,\n'
        '    "architectures": ["LinCIRModel"],\n'
        '    "problem_type": "regression",\n'
        '    "tie_word_embeddings": False,\n'
        "}\n"
    ),
}

# Stand-in for the repository's utils/fetch_hub_objects_for_ci.py, which downloads the Hub files named in
# test_processing_common.MODALITY_INPUT_DATA: here the URLs stay URLs (only chat-template tests open them).
FETCH_HUB_OBJECTS_STUB = (
    '"""Stand-in: the Hub is unreachable here; URLs are returned unchanged."""\n\n\n'
    "def url_to_local_path(url, *args, **kwargs):\n"
    "    return url\n"
)


def installed_version(distribution: str) -> str:
    from importlib.metadata import version

    return version(distribution)


def cache_dir() -> Path:
    """Where downloaded sdists are kept between runs (`$HF_CIR_PEER_CACHE`, default ~/.cache/hf-cir/peer)."""
    return Path(os.environ.get("HF_CIR_PEER_CACHE", Path.home() / ".cache" / "hf-cir" / "peer"))


def transformers_sdist() -> Path:
    """The sdist of the installed transformers: `$TRANSFORMERS_SDIST`, the cache, or a fresh `pip download`."""
    version = installed_version("transformers")
    if os.environ.get("TRANSFORMERS_SDIST"):
        path = Path(os.environ["TRANSFORMERS_SDIST"])
        if not path.is_file():
            raise FileNotFoundError(
                f"TRANSFORMERS_SDIST={path} is not a file (expected transformers-{version}.tar.gz)."
            )
        return path
    target = cache_dir() / f"transformers-{version}.tar.gz"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
        command += ["--dest", str(target.parent), f"transformers=={version}"]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0 or not target.is_file():
            raise RuntimeError(
                f"Could not download the transformers {version} sdist from PyPI ({' '.join(command)}):\n"
                f"{result.stdout[-2000:]}{result.stderr[-2000:]}"
            )
    return target


def materialise_transformers_tests(root: Path) -> Path:
    """Extract the sdist's top-level `tests/*.py` into `root/transformers_tests/`, add the stand-ins, and put `root`
    on `sys.path`. Returns the package folder."""
    version = installed_version("transformers")
    package = root / TRANSFORMERS_TESTS_PACKAGE
    package.mkdir(parents=True, exist_ok=True)
    prefix = f"transformers-{version}/tests/"
    with tarfile.open(transformers_sdist()) as archive:
        members = [
            member
            for member in archive.getmembers()
            if member.isfile() and member.name.startswith(prefix) and "/" not in member.name[len(prefix) :]
        ]
        if not any(member.name.endswith("/test_modeling_common.py") for member in members):
            raise RuntimeError(f"The transformers {version} sdist has no tests/test_modeling_common.py.")
        for member in members:
            source = archive.extractfile(member)
            (package / Path(member.name).name).write_bytes(source.read())
    (package / "__init__.py").touch()
    for relative, text in TRANSFORMERS_STUBS.items():
        path = package / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "__init__.py").touch()
        path.write_text(text)
    # test_processing_common.py looks for it in `<tests>/../utils`.
    (root / "utils").mkdir(exist_ok=True)
    (root / "utils" / "fetch_hub_objects_for_ci.py").write_text(FETCH_HUB_OBJECTS_STUB)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return package


def make_root() -> Path:
    return Path(tempfile.mkdtemp(prefix="hf-cir-peer-"))


# Package name of the materialised diffusers `tests/` folder (its files import each other relatively).
DIFFUSERS_TESTS_PACKAGE = "diffusers_tests"
# pytest's own marks: never re-registered from the materialised sources.
PYTEST_BUILTIN_MARKS = {"filterwarnings", "parametrize", "skip", "skipif", "usefixtures", "xfail"}


def diffusers_source() -> Path | None:
    """The diffusers source checkout named by `$DIFFUSERS_SRC` (a folder holding diffusers' `tests/`), or None.

    diffusers' sdist ships no tests, so the suites come from a checkout of the GitHub repository, e.g.
    `git --git-dir=<diffusers.git> archive <commit> tests | tar -x -C <folder>`.
    """
    if not os.environ.get("DIFFUSERS_SRC"):
        return None
    path = Path(os.environ["DIFFUSERS_SRC"]).expanduser()
    if not (path / "tests" / "pipelines" / "test_pipelines_common.py").is_file():
        raise FileNotFoundError(
            f"DIFFUSERS_SRC={path} is not a diffusers source checkout: no tests/pipelines/test_pipelines_common.py."
        )
    return path


def materialise_diffusers_tests(root: Path) -> Path | None:
    """Copy the `.py` files of `$DIFFUSERS_SRC/tests` into `root/diffusers_tests/` and put `root` on `sys.path`.
    Returns the package folder, or None when `$DIFFUSERS_SRC` is not set. diffusers' own `conftest.py` is left out
    (it puts the checkout's `src/` first on `sys.path`; the installed diffusers is the one under test)."""
    source = diffusers_source()
    if source is None:
        return None
    package = root / DIFFUSERS_TESTS_PACKAGE
    for path in sorted((source / "tests").rglob("*.py")):
        relative = path.relative_to(source / "tests")
        if relative.name == "conftest.py":
            continue
        target = package / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    for folder in [package, *(p for p in package.rglob("*") if p.is_dir())]:
        (folder / "__init__.py").touch()
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return package


def marker_names_used(package: Path) -> set[str]:
    """Every `pytest.mark.<name>` the materialised files use (their own conftest registers only some of them, and
    this project runs pytest with `--strict-markers`)."""
    import re

    names = set()
    for path in package.rglob("*.py"):
        names |= set(re.findall(r"pytest\.mark\.([A-Za-z_][A-Za-z0-9_]*)", path.read_text(errors="replace")))
    return names - PYTEST_BUILTIN_MARKS
