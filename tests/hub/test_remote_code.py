"""Generic loading of every folder hf-cir writes for CompoDiff (save_pretrained, `hf-cir convert`, the shipped toy;
the training output is checked in tests/training/test_train_compodiff.py), folders of the layout before remote code,
`hf-cir export`, and the CompoDiff entry point in the top-level pipelines/ folder.

All folders are made first; one fresh process with hf-cir absent and one with it installed load them all."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from diffusers import DiffusionPipeline
from remote_code_helpers import BLOCK_HF_CIR, assert_loaded_generically, load_in_fresh_process, run_query

import hf_cir.models.compodiff.modeling_compodiff as modeling
import hf_cir.pipelines.compodiff.pipeline_compodiff as pipeline
import hf_cir.schedulers.scheduling_compodiff as scheduling
from hf_cir import CompoDiffPipeline
from hf_cir.cli import main
from hf_cir.hub import make_remote_code_folder
from hf_cir.toy import toy_checkpoint

REPOSITORY = Path(__file__).resolve().parents[2]
CUSTOM_PIPELINE = REPOSITORY / "pipelines" / "compodiff"
OLD_ENTRIES = {  # model_index.json entries of folders written before the remote-code layout
    "_class_name": "CompoDiffPipeline",
    "prior": ["hf_cir.models.compodiff.modeling_compodiff", "CompoDiffPriorTransformer"],
    "scheduler": ["hf_cir.schedulers.scheduling_compodiff", "CompoDiffScheduler"],
}
MODULE_FILES = {
    "pipeline_compodiff.py": pipeline,
    "prior/modeling_compodiff.py": modeling,
    "scheduler/scheduling_compodiff.py": scheduling,
}


def make_old_layout(folder: Path) -> Path:
    """Rewrite a saved folder as hf-cir wrote it before the remote-code layout."""
    index = json.loads((folder / "model_index.json").read_text())
    index.pop("_package_modules", None)
    index.update(OLD_ENTRIES)
    (folder / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True))
    for name in MODULE_FILES:
        (folder / name).unlink(missing_ok=True)
    return folder


def index_entries(folder: Path) -> dict:
    index = json.loads((folder / "model_index.json").read_text())
    index.pop("_name_or_path", None)  # where diffusers loaded it from
    return index


def one_thread_query(pipe):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as every test (conftest) and the fresh processes (OMP_NUM_THREADS=1) run
    try:
        return run_query(pipe)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def toy_pipeline():
    return CompoDiffPipeline.from_pretrained(toy_checkpoint("compodiff"))


@pytest.fixture(scope="module")
def toy_query(toy_pipeline):
    return one_thread_query(toy_pipeline)


@pytest.fixture(scope="module")
def folders(tmp_path_factory, toy_pipeline, reference_dir):
    """Every kind of folder: `saved` (save_pretrained), `resaved` (saved by the remote-code classes), `converted`
    (`convert_compodiff_checkpoint`, as `hf-cir convert compodiff`), `toy` (shipped), `old` (the layout before
    remote code) and `exported` (`hf-cir export old`)."""
    from hf_cir.conversion.compodiff import convert_compodiff_checkpoint

    root = tmp_path_factory.mktemp("folders")
    toy_pipeline.save_pretrained(root / "saved")
    DiffusionPipeline.from_pretrained(root / "saved", trust_remote_code=True).save_pretrained(root / "resaved")
    clip = str(reference_dir / "clip")
    convert_compodiff_checkpoint(
        reference_dir / "compodiff" / "reference_checkpoint",
        text_encoder=clip,
        image_encoder=clip,
        output_dir=root / "converted",
    )
    make_old_layout(Path(shutil.copytree(toy_checkpoint("compodiff"), root / "old")))
    assert main(["export", str(root / "old"), "--output-dir", str(root / "exported")]) == 0
    return {name: root / name for name in ("saved", "resaved", "converted", "old", "exported")} | {
        "toy": toy_checkpoint("compodiff")
    }


@pytest.fixture(scope="module")
def without_hf_cir(tmp_path_factory, folders):
    """Each folder loaded with `DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` where hf-cir is
    absent."""
    jobs = {name: {"folder": folders[name], "loader": "diffusers"} for name in folders if name != "old"}
    return load_in_fresh_process(tmp_path_factory.mktemp("absent"), jobs, hf_cir=False)


@pytest.fixture(scope="module")
def with_hf_cir(tmp_path_factory, folders):
    """With hf-cir installed: generic loading of a saved folder, the package route, and an old-layout folder
    through `custom_pipeline=pipelines/compodiff` (after `import hf_cir`, whose classes its components name)."""
    jobs = {
        "saved": {"folder": folders["saved"], "loader": "diffusers"},
        "package_saved": {"folder": folders["saved"], "loader": "package"},
        "custom_old": {"folder": folders["old"], "loader": "diffusers", "custom_pipeline": CUSTOM_PIPELINE},
    }
    return load_in_fresh_process(tmp_path_factory.mktemp("installed"), jobs, hf_cir=True, import_hf_cir=True)


def test_save_pretrained_writes_the_remote_code_layout(folders, toy_pipeline, toy_query):
    folder = folders["saved"]
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline_compodiff", "CompoDiffPipeline"]
    assert index["prior"] == ["modeling_compodiff", "CompoDiffPriorTransformer"]
    assert index["scheduler"] == ["scheduling_compodiff", "CompoDiffScheduler"]
    assert index["text_encoder"] == ["transformers", "CLIPTextModel"]
    assert index["_package_modules"] == {
        "_class_name": "hf_cir.pipelines.compodiff.pipeline_compodiff",
        "prior": "hf_cir.models.compodiff.modeling_compodiff",
        "scheduler": "hf_cir.schedulers.scheduling_compodiff",
    }
    for name, module in MODULE_FILES.items():  # verbatim copies of the package's modules, never a second version
        assert (folder / name).read_bytes() == Path(module.__file__).read_bytes(), name
    # The package's class loads it with the installed classes, running none of the folder's copies.
    loaded = CompoDiffPipeline.from_pretrained(folder)
    assert type(loaded) is CompoDiffPipeline and type(loaded.prior) is type(toy_pipeline.prior)
    assert torch.equal(one_thread_query(loaded), toy_query)


@pytest.mark.parametrize("name", ["saved", "resaved", "toy", "exported"])
def test_folders_load_without_hf_cir(without_hf_cir, name, toy_query):
    embeds, metadata = without_hf_cir
    assert metadata["hf_cir_imported"] is False
    assert_loaded_generically(embeds[name], metadata[name], toy_query)


def test_converted_folder_loads_without_hf_cir(without_hf_cir, folders):
    embeds, metadata = without_hf_cir
    expected = one_thread_query(CompoDiffPipeline.from_pretrained(folders["converted"]))
    assert_loaded_generically(embeds["converted"], metadata["converted"], expected)


def test_folders_load_with_hf_cir_installed(with_hf_cir, toy_query):
    embeds, metadata = with_hf_cir
    assert_loaded_generically(embeds["saved"], metadata["saved"], toy_query)
    torch.testing.assert_close(embeds["package_saved"], toy_query, atol=1e-6, rtol=0)
    assert metadata["package_saved"]["prior"] == "hf_cir.models.compodiff.modeling_compodiff"


def test_resaved_remote_code_folder_keeps_the_layout(folders):
    index = json.loads((folders["resaved"] / "model_index.json").read_text())
    assert index["prior"] == ["modeling_compodiff", "CompoDiffPriorTransformer"]
    assert "_package_modules" not in index  # classes loaded from a folder are not importable modules


def test_old_layout_keeps_loading_and_exports(folders, toy_query, capsys):
    old, exported = folders["old"], folders["exported"]
    assert json.loads((old / "model_index.json").read_text())["prior"] == OLD_ENTRIES["prior"]  # export made a copy
    assert torch.equal(one_thread_query(CompoDiffPipeline.from_pretrained(old)), toy_query)
    for weights in ("prior/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        assert (exported / weights).read_bytes() == (old / weights).read_bytes()
    assert index_entries(exported) == index_entries(folders["saved"])


def test_export_in_place_is_idempotent(tmp_path, folders, capsys):
    folder = Path(shutil.copytree(folders["old"], tmp_path / "old"))
    assert main(["export", str(folder)]) == 0
    assert "trust_remote_code=True" in capsys.readouterr().out
    index = (folder / "model_index.json").read_text()
    make_remote_code_folder(folder)
    assert (folder / "model_index.json").read_text() == index
    assert index_entries(folder) == index_entries(folders["exported"])


def test_export_errors(tmp_path, capsys):
    assert main(["export", str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err
    (tmp_path / "other").mkdir()
    assert main(["export", str(tmp_path / "other")]) == 2
    assert "neither a saved CompoDiff pipeline" in capsys.readouterr().err
    (tmp_path / "other" / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    assert main(["export", str(tmp_path / "other")]) == 2
    assert "not a CompoDiffPipeline" in capsys.readouterr().err


def test_pipelines_folder_compodiff_is_a_custom_pipeline(with_hf_cir, toy_query):
    # The entry point is the package's pipeline file itself (a link), not a copy. It serves folders without a
    # pipeline file of their own (diffusers prefers a folder's own file): here one of the layout before remote code.
    assert (CUSTOM_PIPELINE / "pipeline.py").read_bytes() == Path(pipeline.__file__).read_bytes()
    embeds, metadata = with_hf_cir
    torch.testing.assert_close(embeds["custom_old"], toy_query, atol=1e-6, rtol=0)
    assert metadata["custom_old"]["pipeline"].endswith("pipeline.CompoDiffPipeline")


def test_lincir_export_and_pipelines_folder_entry(tmp_path, capsys):
    import os
    import subprocess
    import sys
    import textwrap

    from PIL import Image

    from hf_cir import LinCIRModel, LinCIRProcessor

    folder = tmp_path / "lincir"
    assert main(["export", str(toy_checkpoint("lincir")), "--output-dir", str(folder)]) == 0
    assert "AutoModel.from_pretrained" in capsys.readouterr().out
    # pipelines/lincir/ holds the remote-code entry files: the package's own files, which export copies.
    for entry in sorted((REPOSITORY / "pipelines" / "lincir").glob("*.py")):
        assert (folder / entry.name).read_bytes() == entry.read_bytes(), entry.name
    assert len(list((REPOSITORY / "pipelines" / "lincir").glob("*.py"))) == 3
    assert json.loads((folder / "processor_config.json").read_text())["auto_map"] == {
        "AutoProcessor": "processing_lincir.LinCIRProcessor"
    }
    image = tmp_path / "image.png"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(image)
    processor = LinCIRProcessor.from_pretrained(folder)
    with torch.no_grad(), Image.open(image) as opened:
        expected = LinCIRModel.from_pretrained(folder).get_composed_features(**processor(images=opened, text="red"))
    script = textwrap.dedent(
        f"""
        import sys
        {textwrap.indent(BLOCK_HF_CIR, "        ").strip()}
        import torch
        from PIL import Image
        from transformers import AutoModel, AutoProcessor

        model = AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained({str(folder)!r}, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        with torch.no_grad():
            out = model.get_composed_features(**processor(images=Image.open({str(image)!r}), text="red"))
        assert not [m for m in sys.modules if m.startswith("hf_cir")]
        torch.save(out.pooler_output, {str(tmp_path / "out.pt")!r})
        """
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    actual = torch.load(tmp_path / "out.pt", weights_only=True)
    torch.testing.assert_close(actual, expected.pooler_output, atol=1e-6, rtol=0)
