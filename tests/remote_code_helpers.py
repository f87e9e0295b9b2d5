"""Load saved CompoDiff folders in a fresh Python process, with hf-cir importable or made absent, and run one query
(two prompts, an image and a mask through each folder's own encoders). One process loads several folders: the
imports (most of the time here) are paid once."""

import json
import os
import subprocess
import sys
import textwrap

import torch
from safetensors.torch import load_file

# The query every route runs: deterministic inputs made the same way in and out of process.
QUERY = """
import numpy as np, torch
from PIL import Image

def query(pipe):
    pipe.set_progress_bar_config(disable=True)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8))
    mask = Image.new("L", image.size, 0)
    mask.paste(255, (0, 0, 24, 40))
    generators = [torch.Generator().manual_seed(seed) for seed in (0, 1)]
    return pipe(
        ["a red cube", "a small blue ball"], image=[image, image], mask_image=[mask, mask], negative_prompt="blurry",
        num_inference_steps=4, num_samples_per_prompt=2, generator=generators,
    ).image_embeds
"""

# Makes hf-cir absent: any import of it fails as if it were not installed (the editable install stays on disk).
BLOCK_HF_CIR = """
import importlib.abc, sys

class _NoHfCir(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "hf_cir" or name.startswith("hf_cir."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, _NoHfCir())
try:
    import hf_cir  # noqa: F401
except ModuleNotFoundError:
    pass
else:
    raise SystemExit("hf_cir is still importable")
"""

SCRIPT = """
import json, sys
from diffusers import DiffusionPipeline
jobs, output = json.load(open(sys.argv[1])), sys.argv[2]
{block}
{preload}
{query}
results, metadata = {{}}, {{}}
for key, job in jobs.items():
    if job["loader"] == "package":
        from hf_cir import CompoDiffPipeline as loader
    else:
        loader = DiffusionPipeline
    kwargs = {{"custom_pipeline": job["custom_pipeline"]}} if job.get("custom_pipeline") else {{}}
    pipe = loader.from_pretrained(job["folder"], trust_remote_code=job["loader"] != "package", **kwargs)
    results[key] = query(pipe).contiguous()
    metadata[key] = {{
        "pipeline": type(pipe).__module__ + "." + type(pipe).__name__,
        "prior": type(pipe.prior).__module__,
        "scheduler": type(pipe.scheduler).__module__,
    }}
metadata["hf_cir_imported"] = any(m == "hf_cir" or m.startswith("hf_cir.") for m in sys.modules)
from safetensors.torch import save_file
save_file(results, output)
json.dump(metadata, open(output + ".json", "w"))
"""


def run_query(pipe) -> torch.Tensor:
    """The same query, in this process."""
    namespace = {}
    exec(QUERY, namespace)
    return namespace["query"](pipe)


def load_in_fresh_process(tmp_path, jobs: dict, hf_cir: bool, import_hf_cir: bool = False):
    """`(image_embeds by job, metadata by job)` of the query run in one fresh process on each job's folder.

    A job is `{"folder": path, "loader": "diffusers" | "package", "custom_pipeline": optional path}`: `diffusers`
    is `DiffusionPipeline.from_pretrained(folder, trust_remote_code=True[, custom_pipeline=...])`, `package` is
    `hf_cir.CompoDiffPipeline.from_pretrained(folder)`. `hf_cir=False` makes hf-cir absent in that process;
    `import_hf_cir=True` imports it first (as a user of a folder whose components name hf_cir modules must).
    """
    tmp_path.mkdir(parents=True, exist_ok=True)
    script, jobs_file = tmp_path / "load.py", tmp_path / "jobs.json"
    script.write_text(
        SCRIPT.format(
            block="" if hf_cir else BLOCK_HF_CIR,
            preload="import hf_cir.pipelines" if import_hf_cir else "",
            query=textwrap.dedent(QUERY),
        )
    )
    jobs_file.write_text(json.dumps({key: {k: str(v) for k, v in job.items()} for key, job in jobs.items()}))
    output = tmp_path / "outputs.safetensors"
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HOME=str(tmp_path / "hf_home"),  # remote-code modules are written under $HF_HOME/modules
    )
    result = subprocess.run(
        [sys.executable, str(script), str(jobs_file), str(output)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,  # not the repository: nothing importable by accident
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return load_file(str(output)), json.loads((tmp_path / "outputs.safetensors.json").read_text())


def assert_loaded_generically(embeds: torch.Tensor, metadata: dict, expected: torch.Tensor) -> None:
    """A folder loaded with `DiffusionPipeline.from_pretrained(..., trust_remote_code=True)` ran its own copy of
    the pipeline and prior modules and gave what `CompoDiffPipeline` gives."""
    torch.testing.assert_close(embeds, expected, atol=1e-6, rtol=0)
    assert metadata["pipeline"].split(".")[-2:] in (
        ["pipeline_compodiff", "CompoDiffPipeline"],
        ["pipeline", "CompoDiffPipeline"],
    )
    assert not metadata["prior"].startswith("hf_cir")
