"""`import hf_cir` registers the LinCIR family with transformers' Auto classes (issue 21): a fresh process that
never names an hf-cir class loads LinCIR, SEARLE and Pic2Word folders with `AutoModel` / `AutoProcessor` and no
`trust_remote_code`, non-interactively; `import hf_cir` itself still imports neither transformers nor torch."""

import os
import subprocess
import sys

import pytest

from hf_cir.conversion.pic2word import convert_pic2word_checkpoint
from hf_cir.conversion.searle import convert_searle_checkpoint
from hf_cir.toy import toy_checkpoint

LOAD = """
import sys
{import_hf_cir}
assert "transformers" not in sys.modules and "torch" not in sys.modules, "import hf_cir imported a heavy library"
from transformers import AutoConfig, AutoModel, AutoProcessor
for folder in sys.argv[1:]:
    model = AutoModel.from_pretrained(folder)
    processor = AutoProcessor.from_pretrained(folder)
    config = AutoConfig.from_pretrained(folder)
    print(type(model).__module__, type(model).__name__, type(processor).__name__, type(config).__name__,
          model.config.method_name)
"""


@pytest.fixture(scope="module")
def folders(reference_dir, tmp_path_factory):
    root, fixtures = tmp_path_factory.mktemp("auto"), reference_dir / "textual_inversion"
    clip = reference_dir / "clip"
    convert_searle_checkpoint(fixtures / "searle" / "SEARLE_tiny.pt", clip, root / "searle")
    convert_pic2word_checkpoint(fixtures / "pic2word" / "pic2word_tiny.pt", clip, root / "pic2word")
    return {"lincir": toy_checkpoint("lincir"), "searle": root / "searle", "pic2word": root / "pic2word"}


def _load(folders, tmp_path, import_hf_cir: bool):
    # A fresh HF_HOME: remote code, if it were used, would be copied there; stdin closed: no prompt can be answered.
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1"}
    script = LOAD.format(import_hf_cir="import hf_cir" if import_hf_cir else "")
    return subprocess.run(
        [sys.executable, "-c", script, *map(str, folders.values())],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def test_import_hf_cir_then_auto_classes_load_hf_cir_classes(folders, tmp_path):
    result = _load(folders, tmp_path, import_hf_cir=True)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines == [
        f"hf_cir.models.lincir.modeling_lincir LinCIRModel LinCIRProcessor LinCIRConfig {method}" for method in folders
    ]
    assert not (tmp_path / "hf_home" / "modules" / "transformers_modules").exists()  # no remote code was used


@pytest.mark.parametrize("method", ["lincir", "searle"])
def test_without_import_hf_cir_the_same_folders_do_not_load(folders, tmp_path, method):
    # The control: without the registration transformers does not know `lincir` (a folder without `auto_map`) or
    # asks for `trust_remote_code` (a converted folder carries one) and, not interactive, refuses.
    result = _load({method: folders[method]}, tmp_path, import_hf_cir=False)
    assert result.returncode != 0, result.stdout
    assert "does not recognize this architecture" in result.stderr or "trust_remote_code" in result.stderr
