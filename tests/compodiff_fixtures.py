"""Fixtures of the CompoDiff tests (a pytest plugin of tests/conftest.py): the reference fixtures, the converted
reference prior, the tiny CLIP towers."""

import json

import pytest
import torch
from safetensors.torch import load_file


@pytest.fixture(scope="session")
def compodiff_reference_dir(reference_dir):
    return reference_dir / "compodiff"


@pytest.fixture(scope="session")
def compodiff_cases(compodiff_reference_dir):
    return json.loads((compodiff_reference_dir / "cases.json").read_text())


@pytest.fixture(scope="session")
def compodiff_tensors(compodiff_reference_dir):
    return load_file(str(compodiff_reference_dir / "expected.safetensors"))


@pytest.fixture(scope="session")
def reference_prior(compodiff_reference_dir):
    """The reference checkpoint, converted: `(prior, scheduler)`."""
    from hf_cir.conversion.compodiff import (
        convert_compodiff_state_dict,
        load_original_checkpoint,
    )

    state_dict, config = load_original_checkpoint(compodiff_reference_dir / "reference_checkpoint")
    return convert_compodiff_state_dict(state_dict, config)


@pytest.fixture(scope="session")
def clip_components(tiny_clip_dir):
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPTextModel, CLIPVisionModelWithProjection

    return {
        "text_encoder": CLIPTextModel.from_pretrained(tiny_clip_dir, dtype=torch.float32).eval(),
        "tokenizer": AutoTokenizer.from_pretrained(tiny_clip_dir),
        "image_encoder": CLIPVisionModelWithProjection.from_pretrained(tiny_clip_dir, dtype=torch.float32).eval(),
        "image_processor": AutoImageProcessor.from_pretrained(tiny_clip_dir),
    }


@pytest.fixture
def reference_pipeline(reference_prior, clip_components):
    from hf_cir import CompoDiffPipeline

    prior, scheduler = reference_prior
    pipe = CompoDiffPipeline(prior=prior, scheduler=scheduler, **clip_components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def case_kwargs(compodiff_tensors):
    """`case_kwargs(case)`: the pipeline arguments of a sampling case, with its precomputed conditions."""
    return lambda case: _case_kwargs(case, compodiff_tensors)


def _case_kwargs(case, tensors):
    inputs = case["inputs"]
    kwargs = {
        "prompt_embeds": tensors[inputs["prompt_embeds"]],
        "negative_prompt_embeds": tensors[inputs["negative_prompt_embeds"]],
        "num_inference_steps": case["num_inference_steps"],
        "guidance_scale": case["guidance_scale"],
        "image_guidance_scale": case["image_guidance_scale"],
        "num_samples_per_prompt": case["num_samples_per_prompt"],
        "generator": torch.Generator().manual_seed(case["seed"]),
    }
    if inputs.get("image_embeds"):
        kwargs["image_embeds"] = tensors[inputs["image_embeds"]]
    if inputs.get("mask"):
        kwargs["mask_image"] = tensors[inputs["mask"]]
    return kwargs
