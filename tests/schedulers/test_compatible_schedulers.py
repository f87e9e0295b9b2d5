"""The multistep schedulers in `CompoDiffScheduler.compatibles` solve CompoDiff's sampling ODE.

CompoDiff's prior predicts x_0 and two-scale guidance combines x_0 predictions linearly, so the guided prediction is
itself an x_0 prediction: a solver with `prediction_type="sample"` integrates the same probability-flow ODE as
deterministic DDIM. Checked on the shipped toy CompoDiff: every solver gets closer to a 300-step DDIM solution as its
steps grow (measured relative errors at 3 / 10 / 50 steps: about 0.33 / 0.19 / 0.08).
"""

import pytest
import torch

from hf_cir import CompoDiffPipeline, CompoDiffScheduler
from hf_cir.toy import toy_checkpoint

MULTISTEP = [
    "DPMSolverMultistepScheduler",
    "DPMSolverSinglestepScheduler",
    "UniPCMultistepScheduler",
    "DEISMultistepScheduler",
]


@pytest.fixture(scope="module")
def toy_run():
    pipe = CompoDiffPipeline.from_pretrained(toy_checkpoint("compodiff"))
    size = pipe.image_processor.crop_size["height"]
    with torch.no_grad():
        image_embeds = pipe.encode_image(torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0)))

    def run(name, steps, **kwargs):
        candidate = CompoDiffPipeline(**pipe.components)
        candidate.set_progress_bar_config(disable=True)
        candidate.set_scheduler(name, **kwargs)
        return candidate(
            ["is red", "is a small blue circle"],
            image_embeds=image_embeds,
            num_inference_steps=steps,
            num_samples_per_prompt=1,
            guidance_scale=1.5,
            image_guidance_scale=2.0,
            generator=torch.Generator().manual_seed(0),
        ).image_embeds

    return run


def test_the_multistep_solvers_are_listed():
    names = {cls.__name__ for cls in CompoDiffScheduler().compatibles}
    assert set(MULTISTEP) | {"DDIMScheduler"} <= names


@pytest.mark.parametrize("name", MULTISTEP)
def test_solver_converges_to_the_ddim_solution(toy_run, name):
    reference = toy_run("DDIMScheduler", 300, timestep_spacing="trailing")
    errors = [((toy_run(name, steps) - reference).norm() / reference.norm()).item() for steps in (3, 10, 50)]
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.15, errors
