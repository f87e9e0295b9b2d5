"""CompoDiffPipeline: parity with the reference sampler, the encoders, masks, other schedulers, bad inputs."""

import warnings

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler
from PIL import Image

from hf_cir import CompoDiffPipeline, CompoDiffPipelineOutput

TOLERANCE = 1e-5
CASES = [f"s{index:02d}" for index in range(27)]


def get_case(cases, name):
    return next(case for case in cases["sampling_cases"] if case["name"] == name)


@pytest.mark.parametrize("name", CASES)
def test_sampling_matches_reference(reference_pipeline, compodiff_cases, compodiff_tensors, case_kwargs, name):
    case = get_case(compodiff_cases, name)
    output = reference_pipeline(**case_kwargs(case))
    expected = compodiff_tensors[case["expected"]["image_embeds"]]
    assert isinstance(output, CompoDiffPipelineOutput)
    assert output.image_embeds.shape == expected.shape
    assert (output.image_embeds - expected).abs().max() <= TOLERANCE


@pytest.mark.parametrize("name", ["s01", "s05", "s10", "s23"])
def test_plain_path_matches_reference_and_fast_path(
    reference_pipeline, compodiff_cases, compodiff_tensors, case_kwargs, name
):
    case = get_case(compodiff_cases, name)
    fast = reference_pipeline(**case_kwargs(case)).image_embeds
    reference_pipeline.use_context_cache = False
    plain = reference_pipeline(**case_kwargs(case)).image_embeds
    expected = compodiff_tensors[case["expected"]["image_embeds"]]
    assert (plain - expected).abs().max() <= TOLERANCE
    assert (plain - fast).abs().max() <= TOLERANCE


@pytest.mark.parametrize("name", ["s00", "s04", "s10", "s21"])
def test_text_encoder_route_matches_reference(
    reference_pipeline, compodiff_cases, compodiff_tensors, case_kwargs, name
):
    case = get_case(compodiff_cases, name)
    kwargs = case_kwargs(case)
    prompt_key = kwargs.pop("prompt_embeds")
    kwargs.pop("negative_prompt_embeds")
    prompts = case["prompts"]
    long_prompt = any(len(reference_pipeline.tokenizer(p).input_ids) > 77 for p in prompts)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        output = reference_pipeline(prompts, negative_prompt=case["negative_prompt"], **kwargs).image_embeds
        embeds, negative = reference_pipeline.encode_prompt(prompts, case["negative_prompt"])
    # The reference truncates long prompts silently (keeping EOS); we warn, naming the prompt.
    assert any("truncated" in str(w.message) for w in caught) == long_prompt
    assert (output - compodiff_tensors[case["expected"]["image_embeds"]]).abs().max() <= TOLERANCE
    assert (embeds - prompt_key).abs().max() <= TOLERANCE
    assert negative.shape[0] == 1
    assert (negative[0] - compodiff_tensors[case["inputs"]["negative_prompt_embeds"]][0]).abs().max() <= TOLERANCE


def test_encode_prompt_keeps_no_state_between_calls(reference_pipeline):
    # No hidden cache: every call encodes its prompt and its negative prompt, so a changed text encoder always shows.
    calls = []
    handle = reference_pipeline.text_encoder.register_forward_hook(lambda m, i, o: calls.append(i))
    try:
        _, first = reference_pipeline.encode_prompt("a dog", "low quality")
        _, second = reference_pipeline.encode_prompt("a cat", "low quality")
        assert len(calls) == 4 and second is not first and torch.equal(first, second)
    finally:
        handle.remove()


def test_image_and_mask_inputs(reference_pipeline, compodiff_tensors):
    pipe = reference_pipeline
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8))
    pixels = pipe.image_processor(images=image, return_tensors="pt").pixel_values
    with torch.no_grad():
        expected_embeds = pipe.image_encoder(pixel_values=pixels).image_embeds
        blank_embeds = pipe.image_encoder(pixel_values=torch.zeros_like(pixels)).image_embeds
    assert torch.allclose(pipe.encode_image(image), expected_embeds, atol=1e-6)
    assert pipe.encode_image([image, image]).shape == (2, pipe.prior.config.embedding_dim)
    text = compodiff_tensors["text.prompt_0"]
    common = dict(prompt_embeds=text, num_samples_per_prompt=1, num_inference_steps=3)

    def run(**kwargs):
        return pipe(generator=torch.Generator().manual_seed(0), **common, **kwargs).image_embeds

    # An empty mask is the zero mask; the image route equals passing its embedding.
    no_mask = run(image=image)
    assert torch.allclose(no_mask, run(image_embeds=expected_embeds), atol=1e-6)
    assert torch.allclose(run(image=image, mask_image=Image.new("L", image.size, 0)), no_mask, atol=1e-6)
    # A full mask zeroes every pixel of the preprocessed image and is all ones at the prior's side.
    full = run(image=image, mask_image=Image.new("L", image.size, 255))
    side = pipe.prior.config.mask_size
    assert torch.allclose(full, run(image_embeds=blank_embeds, mask_image=torch.ones(side, side)), atol=1e-6)
    # A rectangle: the masked pixels are zeroed, the others kept; the prior mask is binary with the same region.
    mask = Image.new("L", image.size, 0)
    mask.paste(255, (0, 0, 28, 40))  # left half
    pixel_mask, prior_mask = pipe._prepare_mask(mask, 1, [image], tuple(pixels.shape[-2:]))
    assert set(prior_mask.unique().tolist()) == {0.0, 1.0}
    assert prior_mask[0, :, : side // 2 - 2].all() and not prior_mask[0, :, side // 2 + 2 :].any()
    assert pixel_mask.shape[-2:] == pixels.shape[-2:]
    # Source weight mixes in the reference embedding.
    mixed = run(image=image, source_weight=0.25)
    assert torch.allclose(mixed, 0.75 * no_mask + 0.25 * expected_embeds, atol=1e-6)


def test_outputs_and_guidance_options(reference_pipeline, compodiff_tensors):
    text = compodiff_tensors["text.prompts_012"]
    kwargs = dict(prompt_embeds=text, num_inference_steps=4, num_samples_per_prompt=1)
    as_numpy = reference_pipeline(generator=torch.Generator().manual_seed(5), output_type="np", **kwargs)
    as_torch = reference_pipeline(generator=torch.Generator().manual_seed(5), return_dict=False, **kwargs)
    assert isinstance(as_numpy.image_embeds, np.ndarray) and isinstance(as_torch, tuple)
    np.testing.assert_allclose(as_numpy.image_embeds, as_torch[0].numpy(), atol=1e-6)
    # Plain 1.0 scales work (the reference crashes on them); one step runs the prior once.
    one = reference_pipeline(guidance_scale=1.0, image_guidance_scale=1.0, num_inference_steps=1, prompt_embeds=text)
    assert torch.isfinite(one.image_embeds).all()


def test_ddim_scheduler_runs(reference_pipeline, compodiff_tensors):
    pipe = CompoDiffPipeline(
        prior=reference_pipeline.prior,
        scheduler=DDIMScheduler(prediction_type="sample", beta_schedule="squaredcos_cap_v2", clip_sample=False),
    )
    pipe.set_progress_bar_config(disable=True)
    kwargs = dict(
        prompt_embeds=compodiff_tensors["text.prompt_0"],
        negative_prompt_embeds=compodiff_tensors["text.neg_empty_x1"],
        image_embeds=compodiff_tensors["s09.image_embeds"],
    )
    first = pipe(generator=torch.Generator().manual_seed(0), **kwargs).image_embeds
    second = pipe(generator=torch.Generator().manual_seed(0), **kwargs).image_embeds
    reference = reference_pipeline(generator=torch.Generator().manual_seed(0), **kwargs).image_embeds
    assert first.shape == (1, 64) and torch.isfinite(first).all() and torch.equal(first, second)
    assert len(pipe.scheduler.timesteps) == 10  # DDIM evaluates the prior at every step of its own grid
    assert not torch.allclose(first, reference, atol=1e-4)  # a different sampler, documented


def test_bad_inputs(reference_pipeline, compodiff_tensors):
    pipe = reference_pipeline
    text = compodiff_tensors["text.prompt_0"]
    image = Image.new("RGB", (40, 30), (10, 200, 30))
    cases = [
        (dict(prompt=["a", "b"], image=[image]), "2 prompt.*1 image"),
        (dict(prompt="a", image=[image, image]), "1 prompt.*2 image"),
        (dict(prompt_embeds=text, image_embeds=torch.zeros(2, 64)), "image_embeds"),
        (dict(prompt_embeds=text, mask_image=torch.ones(10, 10)), "mask_image.*needs a reference image"),
        (dict(prompt_embeds=text, image_embeds=torch.zeros(1, 64), mask_image=torch.ones(10, 10)), "mask_image.*size"),
        (
            dict(prompt_embeds=text, image_embeds=torch.zeros(1, 64), mask_image=torch.ones(1, 3, 64, 64)),
            "single channel",
        ),
        (dict(prompt="a", image=image, mask_image=Image.new("RGB", (40, 30))), "single channel"),
        (dict(prompt="a", image=image, mask_image=Image.new("L", (30, 40))), "size"),
        (dict(prompt_embeds=text, guidance_scale=-1.0), "guidance_scale"),
        (dict(prompt_embeds=text, image_guidance_scale=-0.5), "image_guidance_scale"),
        (dict(prompt_embeds=text, num_inference_steps=0), "num_inference_steps"),
        (dict(prompt_embeds=text, num_inference_steps=1001), "num_inference_steps"),
        (dict(prompt_embeds=text, output_type="pil"), "output_type"),
        (dict(prompt_embeds=text, num_samples_per_prompt=0), "num_samples_per_prompt"),
        (dict(prompt_embeds=text, source_weight=0.1), "source_weight"),
        (dict(prompt=["a", "b"], negative_prompt=["x", "y", "z"]), "negative_prompt"),
        (dict(prompt_embeds=text, negative_prompt_embeds=torch.zeros(2, 77, 32)), "negative_prompt_embeds"),
        (dict(), "prompt"),
    ]
    for kwargs, message in cases:
        kwargs.setdefault("num_inference_steps", 2)
        with pytest.raises(ValueError, match=message):
            pipe(**kwargs)
    with pytest.raises(FileNotFoundError, match="no such file"):
        pipe("a", image="/nonexistent/image.png")
