"""Folders saved by hf-cir before the issue-10 moves (commit cb68ad2) still load and give the same outputs.

`tests/fixtures/previous_layout/` was written by that commit's code (`make_previous_layout_folders.py` there says
how): its `model_index.json` records `hf_cir.models.compodiff.modeling_compodiff` and
`hf_cir.schedulers.scheduling_compodiff`, its LinCIR `config.json` an `auto_map` to `modeling_lincir.LinCIRModel`.
"""

import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoModel, AutoProcessor

import hf_cir.models  # noqa: F401  (registers LinCIR with the Auto classes)
from hf_cir import CompoDiffPipeline, CompoDiffPriorTransformer, CompoDiffScheduler, LinCIRModel

TEXT = "is red and small"


def test_previous_layout_folders_load_and_reproduce(reference_dir):
    folder = reference_dir.parent / "previous_layout"
    expected = load_file(str(folder / "expected.safetensors"))
    image = Image.new("RGB", (32, 32), (200, 40, 40))

    model = AutoModel.from_pretrained(folder / "lincir").eval()
    processor = AutoProcessor.from_pretrained(folder / "lincir")
    assert isinstance(model, LinCIRModel)
    with torch.no_grad():
        query = model.get_composed_features(**processor(images=image, text=TEXT))
    query = getattr(query, "pooler_output", query)  # a tensor before issue 12, CLIP's output object after it
    torch.testing.assert_close(query, expected["lincir_query"], rtol=0, atol=1e-6)

    pipe = CompoDiffPipeline.from_pretrained(folder / "compodiff")
    assert isinstance(pipe.prior, CompoDiffPriorTransformer) and isinstance(pipe.scheduler, CompoDiffScheduler)
    pipe.set_progress_bar_config(disable=True)
    sample = pipe(
        TEXT, image=image, num_inference_steps=3, num_samples_per_prompt=2, generator=torch.manual_seed(0)
    ).image_embeds
    torch.testing.assert_close(sample, expected["compodiff_query"], rtol=0, atol=1e-5)
