"""Converting the reference checkpoint, saving, and loading through both routes in fresh processes."""

import ast
import json
import os
import shutil
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
import torch
from huggingface_hub import EvalResult, ModelCard
from safetensors.torch import load_file, save_file

from hf_cir.conversion.compodiff import (
    convert_compodiff_checkpoint,
    convert_compodiff_state_dict,
    load_original_checkpoint,
)
from hf_cir.hub import REMOTE_CODE_MODULES, make_remote_code_folder

TOLERANCE = 1e-5
# huggingface_hub is a hard dependency of diffusers and transformers.
ALLOWED_IMPORTS = {"torch", "numpy", "PIL", "transformers", "diffusers", "huggingface_hub", "__future__"} | set(
    sys.stdlib_module_names
)

# Runs in a fresh process: sampling cases s20 (image + mask, 4 samples) with precomputed conditions and s04
# (long prompt, through the text encoder and tokenizer), written to a safetensors file.
RUN_CASES = """
import json, sys, torch, warnings
from safetensors.torch import load_file, save_file
folder, fixtures, output = sys.argv[1:4]
{load}
pipe.set_progress_bar_config(disable=True)
tensors = load_file(fixtures + "/expected.safetensors")
cases = {{c["name"]: c for c in json.load(open(fixtures + "/cases.json"))["sampling_cases"]}}
results = {{}}
case = cases["s20"]
results["s20"] = pipe(
    prompt_embeds=tensors[case["inputs"]["prompt_embeds"]], negative_prompt_embeds=tensors[case["inputs"]["negative_prompt_embeds"]],
    image_embeds=tensors[case["inputs"]["image_embeds"]], mask_image=tensors[case["inputs"]["mask"]],
    num_samples_per_prompt=4, generator=torch.Generator().manual_seed(case["seed"]),
).image_embeds
case = cases["s04"]
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    results["s04"] = pipe(
        case["prompts"], negative_prompt=case["negative_prompt"], guidance_scale=7.5, image_guidance_scale=0.0,
        num_samples_per_prompt=2, generator=torch.Generator().manual_seed(case["seed"]),
    ).image_embeds
save_file(results, output, metadata={{
    "pipeline": type(pipe).__module__ + "." + type(pipe).__name__,
    "prior": type(pipe.prior).__module__,
    # hf-cir's pipeline and scheduler code: the folder's own copies must run instead. (With hf-cir installed the
    # module files import `hf_cir.utils`, optionally, for its input checks; `import hf_cir` registers its models.)
    "hf_cir_imported": str(any(m.startswith(("hf_cir.pipelines", "hf_cir.schedulers")) for m in sys.modules)),
}})
"""
PACKAGE_ROUTE = "from hf_cir import CompoDiffPipeline\npipe = CompoDiffPipeline.from_pretrained(folder)"
REMOTE_ROUTE = (
    "from diffusers import DiffusionPipeline\npipe = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)"
)


def run_fresh(tmp_path, load, folder, fixtures):
    script = tmp_path / "run_cases.py"
    script.write_text(textwrap.dedent(RUN_CASES.format(load=load)))
    output = tmp_path / "outputs.safetensors"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    result = subprocess.run(
        [sys.executable, str(script), str(folder), str(fixtures), str(output)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,  # not the repository: nothing importable by accident
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    from safetensors import safe_open

    with safe_open(str(output), "pt") as handle:
        metadata = handle.metadata()
    return load_file(str(output)), metadata


@pytest.fixture(scope="module")
def converted_folder(tmp_path_factory, reference_dir):
    folder = tmp_path_factory.mktemp("converted") / "compodiff-tiny"
    torch.set_num_threads(1)
    convert_compodiff_checkpoint(
        reference_dir / "compodiff" / "reference_checkpoint",
        text_encoder=str(reference_dir / "clip"),
        image_encoder=str(reference_dir / "clip"),
        output_dir=folder,
    )
    return folder


def check_outputs(outputs, compodiff_cases, compodiff_tensors, in_memory_pipeline, case_kwargs):
    cases = {case["name"]: case for case in compodiff_cases["sampling_cases"]}
    for name in ("s20", "s04"):
        expected = compodiff_tensors[cases[name]["expected"]["image_embeds"]]
        assert (outputs[name] - expected).abs().max() <= TOLERANCE, name
    # The reloaded pipeline gives exactly what the pipeline gave before saving.
    assert torch.equal(outputs["s20"], in_memory_pipeline(**case_kwargs(cases["s20"])).image_embeds)


def test_converted_folder_layout_and_card(converted_folder):
    files = {str(p.relative_to(converted_folder)) for p in converted_folder.rglob("*") if p.is_file()}
    assert "prior/diffusion_pytorch_model.safetensors" in files and "model_index.json" in files
    assert "text_encoder/model.safetensors" in files and "image_encoder/model.safetensors" in files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl"))]
    index = json.loads((converted_folder / "model_index.json").read_text())
    # The remote-code layout (as every CompoDiffPipeline.save_pretrained writes it), with the package's modules.
    assert index["prior"] == ["modeling_compodiff", "CompoDiffPriorTransformer"]
    assert index["_package_modules"]["prior"] == "hf_cir.models.compodiff.modeling_compodiff"
    assert {"pipeline_compodiff.py", "prior/modeling_compodiff.py", "scheduler/scheduling_compodiff.py"} <= files
    prior_config = json.loads((converted_folder / "prior" / "config.json").read_text())
    assert prior_config["text_embed_dim"] == 32 and prior_config["mask_size"] == 64  # inferred from shapes
    assert prior_config["num_cross_attention_heads"] == 8
    card = ModelCard.load(converted_folder / "README.md")
    assert card.data.license == "apache-2.0" and "composed-image-retrieval" in card.data.tags
    assert card.data.library_name == "diffusers"
    # The fixture's encoders are local folders: named in the text (never by absolute path), not `base_model`
    # (which holds Hub ids only).
    assert card.data.base_model is None and "clip` (last hidden state" in card.text
    assert str(converted_folder.parent) not in card.text
    assert "Transactions on Machine Learning Research" in card.text and "CompoDiffPipeline" in card.text


def test_package_route_in_fresh_process(
    tmp_path,
    converted_folder,
    compodiff_reference_dir,
    compodiff_cases,
    compodiff_tensors,
    reference_pipeline,
    case_kwargs,
):
    outputs, metadata = run_fresh(tmp_path, PACKAGE_ROUTE, converted_folder, compodiff_reference_dir)
    check_outputs(outputs, compodiff_cases, compodiff_tensors, reference_pipeline, case_kwargs)
    assert metadata["prior"] == "hf_cir.models.compodiff.modeling_compodiff"


def test_remote_code_route_in_fresh_process(
    tmp_path,
    converted_folder,
    compodiff_reference_dir,
    compodiff_cases,
    compodiff_tensors,
    reference_pipeline,
    case_kwargs,
):
    hub_folder = tmp_path / "hub"
    shutil.copytree(converted_folder, hub_folder)
    make_remote_code_folder(hub_folder)  # already in the layout: unchanged
    assert (hub_folder / "model_index.json").read_text() == (converted_folder / "model_index.json").read_text()
    index = json.loads((hub_folder / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline_compodiff", "CompoDiffPipeline"]
    assert index["prior"] == ["modeling_compodiff", "CompoDiffPriorTransformer"]
    assert (hub_folder / "scheduler" / "scheduling_compodiff.py").is_file()
    outputs, metadata = run_fresh(tmp_path, REMOTE_ROUTE, hub_folder, compodiff_reference_dir)
    check_outputs(outputs, compodiff_cases, compodiff_tensors, reference_pipeline, case_kwargs)
    assert metadata["hf_cir_imported"] == "False"
    assert metadata["pipeline"].endswith("pipeline_compodiff.CompoDiffPipeline")
    assert not metadata["prior"].startswith("hf_cir")


def _optional_imports(tree: ast.Module) -> set[ast.AST]:
    """Import statements inside a module-level `try:` whose handler catches ImportError (the code runs without them)."""
    optional = set()
    for node in tree.body:
        if isinstance(node, ast.Try) and any(
            isinstance(handler.type, ast.Name) and handler.type.id in ("ImportError", "ModuleNotFoundError")
            for handler in node.handlers
        ):
            optional |= {child for child in node.body if isinstance(child, (ast.Import, ast.ImportFrom))}
    return optional


def test_remote_code_files_are_self_contained():
    siblings = {module.__name__.rsplit(".", 1)[-1] for module in REMOTE_CODE_MODULES}
    for module in REMOTE_CODE_MODULES:
        relative_path = Path(module.__file__).name
        tree = ast.parse(open(module.__file__).read())
        imported = set()
        optional = _optional_imports(tree)
        for node in ast.walk(tree):
            if node in optional:
                # hf-cir's shared input checks, used when it is installed; only its bottom layer (utils) may be named.
                assert isinstance(node, ast.ImportFrom) and node.module.startswith("hf_cir.utils."), relative_path
            elif isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level:  # a sibling file of the same remote-code folder
                assert node.level == 1 and node.module in siblings, f"{relative_path}: from {node.module} import"
            elif isinstance(node, ast.ImportFrom):
                imported.add(node.module.split(".")[0])
        assert imported <= ALLOWED_IMPORTS, f"{relative_path} imports {imported - ALLOWED_IMPORTS}"


def test_make_remote_code_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a saved CompoDiff pipeline"):
        make_remote_code_folder(tmp_path)
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(ValueError, match="not a CompoDiffPipeline"):
        make_remote_code_folder(tmp_path)


def test_cli_convert_and_bare_state_dict(tmp_path, reference_dir, reference_prior):
    from hf_cir.cli import main

    state_dict, _ = load_original_checkpoint(reference_dir / "compodiff" / "reference_checkpoint")
    bare = tmp_path / "network.safetensors"  # a bare file, no config.json: every size from the shapes
    save_file({k: v.clone() for k, v in state_dict.items() if k.startswith("model.net.")}, str(bare))
    clip = str(reference_dir / "clip")
    argv = ["convert", "compodiff", "--checkpoint", str(bare), "--text-encoder", clip, "--image-encoder", clip]
    assert main(argv + ["--output-dir", str(tmp_path / "out")]) == 0
    loaded = load_file(str(tmp_path / "out" / "prior" / "diffusion_pytorch_model.safetensors"))
    expected = reference_prior[0].state_dict()
    assert set(loaded) == set(expected) and all(torch.equal(loaded[k], expected[k]) for k in expected)


@pytest.fixture
def reference_state_dict(reference_dir):
    return load_original_checkpoint(reference_dir / "compodiff" / "reference_checkpoint")


def test_conversion_errors(tmp_path, reference_state_dict):
    state_dict, config = reference_state_dict
    with pytest.raises(ValueError, match="Unexpected keys.*model.net.extra.weight"):
        convert_compodiff_state_dict({**state_dict, "model.net.extra.weight": torch.zeros(1)}, config)
    with pytest.raises(ValueError, match="Unexpected keys.*optimizer.step"):
        convert_compodiff_state_dict({**state_dict, "optimizer.step": torch.zeros(1)}, config)
    missing = {k: v for k, v in state_dict.items() if k != "model.net.transformer.layers.1.1.to_kv.weight"}
    with pytest.raises(ValueError, match="missing keys: model.net.transformer.layers.1.1.to_kv.weight"):
        convert_compodiff_state_dict(missing, config)
    bad_schedule = {**state_dict, "model.noise_scheduler.betas": state_dict["model.noise_scheduler.betas"] * 1.1}
    with pytest.raises(ValueError, match="noise schedule.*betas"):
        convert_compodiff_state_dict(bad_schedule, config)
    bad_rotary = {**state_dict, "model.net.transformer.layers.0.0.rotary_emb.freqs": torch.ones(8)}
    with pytest.raises(ValueError, match="rotary"):
        convert_compodiff_state_dict(bad_rotary, config)
    with pytest.raises(ValueError, match="embed_dim=128"):
        convert_compodiff_state_dict(state_dict, {**config, "embed_dim": 128})
    not_a_state_dict = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], not_a_state_dict)
    with pytest.raises(ValueError, match="state dict"):
        load_original_checkpoint(not_a_state_dict)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no weights"):
        load_original_checkpoint(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_original_checkpoint(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="nor a downloadable Hub repository"):  # offline in tests
        load_original_checkpoint("hf-cir-tests/no-such-compodiff")


def test_push_to_hub_renders_card_up_to_upload(monkeypatch, reference_pipeline):
    import huggingface_hub

    from hf_cir.hub import push_to_hub

    uploaded = {}

    def fake_upload(self, *, repo_id, folder_path, **kwargs):
        uploaded["files"] = sorted(os.listdir(folder_path))
        uploaded["card"] = ModelCard.load(os.path.join(folder_path, "README.md"))
        uploaded["repo_id"] = repo_id
        return "https://huggingface.co/me/compodiff-tiny"

    monkeypatch.setattr(
        huggingface_hub.HfApi, "create_repo", lambda *a, **k: types.SimpleNamespace(repo_id="me/compodiff-tiny")
    )
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", fake_upload)
    results = [
        EvalResult(
            task_type="image-retrieval",
            dataset_type="cirr",
            dataset_name="CIRR",
            metric_type="recall@10",
            metric_value=0.5,
        )
    ]
    push_to_hub(
        reference_pipeline, "me/compodiff-tiny", base_models=["openai/clip-vit-large-patch14"], eval_results=results
    )
    card = uploaded["card"]
    assert uploaded["repo_id"] == "me/compodiff-tiny" and "model_index.json" in uploaded["files"]
    assert card.data.license == "apache-2.0" and card.data.base_model == ["openai/clip-vit-large-patch14"]
    assert card.data.eval_results[0].metric_value == 0.5 and "model-index" in str(card)
    assert 'CompoDiffPipeline.from_pretrained("me/compodiff-tiny")' in card.text


def test_in_process_round_trip_is_exact_and_keeps_diffusers_schedulers(
    tmp_path, reference_pipeline, compodiff_cases, case_kwargs
):
    from diffusers import DDIMScheduler

    from hf_cir import CompoDiffPipeline

    case = next(c for c in compodiff_cases["sampling_cases"] if c["name"] == "s23")
    reference_pipeline.save_pretrained(tmp_path / "pipe")
    loaded = CompoDiffPipeline.from_pretrained(tmp_path / "pipe")
    loaded.set_progress_bar_config(disable=True)
    before = reference_pipeline(**case_kwargs(case)).image_embeds
    assert torch.equal(loaded(**case_kwargs(case)).image_embeds, before)
    assert not list((tmp_path / "pipe").rglob("*.bin"))

    ddim = CompoDiffPipeline(
        prior=reference_pipeline.prior,
        scheduler=DDIMScheduler(prediction_type="sample", beta_schedule="squaredcos_cap_v2", clip_sample=False),
    )
    ddim.save_pretrained(tmp_path / "ddim")
    make_remote_code_folder(tmp_path / "ddim")
    index = json.loads((tmp_path / "ddim" / "model_index.json").read_text())
    assert index["scheduler"] == ["diffusers", "DDIMScheduler"]
    assert index["prior"] == ["modeling_compodiff", "CompoDiffPriorTransformer"]
    assert not (tmp_path / "ddim" / "scheduler" / "scheduling_compodiff.py").exists()
    reloaded = CompoDiffPipeline.from_pretrained(tmp_path / "pipe")
    assert type(reloaded.scheduler).__name__ == "CompoDiffScheduler"
