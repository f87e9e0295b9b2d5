"""`hf-cir --help` and every `hf-cir <command> --help` import no deep-learning library (the speed itself is measured
in benchmarks/bench_cli_startup.py, not here), and `import hf_cir` stays light until a class is used."""

import subprocess
import sys

import pytest

from hf_cir.cli import COMMAND_MODULES

HEAVY = ("torch", "transformers", "diffusers", "gradio", "faiss", "datasets")
CHECK = """
import sys
from hf_cir.cli import main
try:
    main({argv!r})
except SystemExit:
    pass
heavy = sorted(name for name in {heavy!r} if name in sys.modules)
print("HEAVY:" + ",".join(heavy))
"""


@pytest.mark.parametrize("command", [None, *COMMAND_MODULES])
def test_help_imports_no_heavy_library(command):
    argv = ["--help"] if command is None else [command, "--help"]
    result = subprocess.run(
        [sys.executable, "-c", CHECK.format(argv=argv, heavy=HEAVY)], capture_output=True, text=True, timeout=120
    )
    assert "usage: hf-cir" in result.stdout, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "HEAVY:", result.stdout[-500:]


def test_import_hf_cir_is_light_and_classes_load_on_use():
    script = (
        "import sys, hf_cir\n"
        "assert 'torch' not in sys.modules, 'import hf_cir imported torch'\n"
        "from transformers import AutoConfig\n"
        "from hf_cir import LinCIRModel\n"  # the first use imports the model and registers it
        "assert AutoConfig.for_model('lincir').__class__.__name__ == 'LinCIRConfig'\n"
        "assert 'LinCIRModel' in dir(hf_cir)\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.stdout.strip().endswith("ok"), result.stderr[-2000:]
    with pytest.raises(AttributeError, match="has no attribute 'NoSuchThing'"):
        getattr(__import__("hf_cir"), "NoSuchThing")  # noqa: B009
