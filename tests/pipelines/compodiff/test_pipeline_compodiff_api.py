"""CompoDiffPipeline on the diffusers call API: generator lists, `latents`, `num_images_per_prompt`, step-end
callbacks, and the schedulers `CompoDiffScheduler.compatibles` names."""

import pytest
import torch
from diffusers import DDIMScheduler
from diffusers.callbacks import PipelineCallback

from hf_cir import CompoDiffPipeline, CompoDiffScheduler

STEPS = 4


@pytest.fixture
def embeds_kwargs(compodiff_tensors):
    """Two queries given as precomputed conditions (image + text), so only the prior runs."""
    text = compodiff_tensors["text.prompts_012"][:2]
    image = compodiff_tensors["s09.image_embeds"]
    return {
        "prompt_embeds": text,
        "negative_prompt_embeds": compodiff_tensors["text.neg_empty_x1"],
        "image_embeds": image.expand(2, -1).clone(),
        "num_inference_steps": STEPS,
    }


def one_query(kwargs, index):
    return {
        **kwargs,
        "prompt_embeds": kwargs["prompt_embeds"][index : index + 1],
        "image_embeds": kwargs["image_embeds"][index : index + 1],
    }


def generators(*seeds):
    return [torch.Generator().manual_seed(seed) for seed in seeds]


@pytest.mark.parametrize("use_context_cache", [True, False])
def test_generator_list_gives_each_embedding_its_own_noise(reference_pipeline, embeds_kwargs, use_context_cache):
    pipe = reference_pipeline
    pipe.use_context_cache = use_context_cache
    batched = pipe(generator=generators(3, 4), num_samples_per_prompt=2, **embeds_kwargs).image_embeds
    for index, seed in enumerate((3, 4)):
        alone = pipe(generator=generators(seed)[0], num_samples_per_prompt=2, **one_query(embeds_kwargs, index))
        torch.testing.assert_close(batched[index], alone.image_embeds[0], atol=1e-5, rtol=0)
    # A single generator keeps drawing the whole batch from one stream (the reference's order): not the same.
    single = pipe(generator=torch.Generator().manual_seed(3), num_samples_per_prompt=2, **embeds_kwargs).image_embeds
    assert not torch.allclose(single[1], batched[1], atol=1e-4)


def test_generator_list_with_a_scheduler_without_variance_noise(reference_pipeline, embeds_kwargs):
    from diffusers import DDPMScheduler

    pipe = CompoDiffPipeline(
        prior=reference_pipeline.prior,
        scheduler=DDPMScheduler(prediction_type="sample", beta_schedule="squaredcos_cap_v2", clip_sample=False),
    )
    pipe.set_progress_bar_config(disable=True)
    batched = pipe(generator=generators(1, 2), num_samples_per_prompt=1, **embeds_kwargs).image_embeds
    alone = pipe(generator=generators(2)[0], num_samples_per_prompt=1, **one_query(embeds_kwargs, 1)).image_embeds
    torch.testing.assert_close(batched[1], alone[0], atol=1e-5, rtol=0)


def test_generator_list_of_the_wrong_length_names_both_lengths(reference_pipeline, embeds_kwargs):
    with pytest.raises(ValueError, match=r"list of 3 generators.*returns 4 embeddings.*2 prompt"):
        reference_pipeline(generator=generators(0, 1, 2), num_images_per_prompt=2, **embeds_kwargs)
    with pytest.raises(ValueError, match=r"list of 1 generators.*returns 2 embeddings"):
        reference_pipeline(generator=generators(0), **embeds_kwargs)


def test_num_images_per_prompt_returns_independent_embeddings(reference_pipeline, embeds_kwargs):
    pipe = reference_pipeline
    out = pipe(generator=generators(0, 1, 2, 3), num_images_per_prompt=2, **embeds_kwargs).image_embeds
    assert out.shape == (4, pipe.prior.config.embedding_dim)
    # Row order: prompt by prompt; each row is a query of its own (its own samples, averaged).
    second_prompt = pipe(generator=generators(2, 3), num_images_per_prompt=2, **one_query(embeds_kwargs, 1))
    torch.testing.assert_close(out[2:], second_prompt.image_embeds, atol=1e-5, rtol=0)
    assert not torch.allclose(out[2], out[3], atol=1e-4)
    with pytest.raises(ValueError, match="num_images_per_prompt"):
        pipe(num_images_per_prompt=0, **embeds_kwargs)


def test_latents_replace_the_initial_noise(reference_pipeline, embeds_kwargs):
    pipe = reference_pipeline
    samples, dim = 2, pipe.prior.config.embedding_dim
    generator = torch.Generator().manual_seed(7)
    drawn = pipe(generator=generator, num_samples_per_prompt=samples, **embeds_kwargs).image_embeds
    # The same noise passed as `latents`, and the step noise from a generator in the same state.
    generator = torch.Generator().manual_seed(7)
    latents = torch.randn(2 * samples, dim, generator=generator)
    given = pipe(latents=latents, generator=generator, num_samples_per_prompt=samples, **embeds_kwargs).image_embeds
    torch.testing.assert_close(given, drawn, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match=r"`latents` has shape \(2, 64\); expected \(4, 64\)"):
        pipe(latents=torch.zeros(2, dim), num_samples_per_prompt=samples, **embeds_kwargs)


def test_callback_on_step_end(reference_pipeline, embeds_kwargs):
    pipe = reference_pipeline
    seen = []

    def callback(pipe, step, timestep, callback_kwargs):
        seen.append((step, int(timestep), sorted(callback_kwargs)))
        pipe._guidance_scale += 1.0  # diffusers' callbacks change the guidance this way
        if step == pipe.num_timesteps - 1:
            return {"latents": torch.zeros_like(callback_kwargs["latents"])}
        return callback_kwargs

    out = pipe(guidance_scale=2.0, callback_on_step_end=callback, **embeds_kwargs).image_embeds
    assert out.abs().sum() == 0  # the returned latents replaced the pipeline's
    assert [s for s, _, _ in seen] == list(range(pipe.num_timesteps)) and pipe.num_timesteps == STEPS - 1
    assert [t for _, t, _ in seen] == pipe.scheduler.timesteps.tolist() and seen[0][2] == ["latents"]
    assert pipe.guidance_scale == 2.0 + pipe.num_timesteps

    # Changing the guidance from the callback changes the result; a PipelineCallback names its own inputs.
    class RaiseGuidance(PipelineCallback):
        tensor_inputs = ["latents"]

        def callback_fn(self, pipeline, step_index, timestep, callback_kwargs):
            pipeline._guidance_scale = 30.0
            return callback_kwargs

    plain = pipe(generator=generators(0, 1), **embeds_kwargs).image_embeds
    raised = pipe(generator=generators(0, 1), callback_on_step_end=RaiseGuidance(), **embeds_kwargs).image_embeds
    assert not torch.allclose(plain, raised, atol=1e-4)
    with pytest.raises(ValueError, match="callback_on_step_end_tensor_inputs.*prompt_embeds"):
        pipe(callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["prompt_embeds"], **embeds_kwargs)


def test_compatible_schedulers_run_from_the_compodiff_config(reference_pipeline, embeds_kwargs):
    compatibles = CompoDiffScheduler().compatibles
    assert DDIMScheduler in compatibles and CompoDiffScheduler not in compatibles  # only diffusers' own listed
    for scheduler_class in compatibles:
        pipe = CompoDiffPipeline(
            prior=reference_pipeline.prior, scheduler=scheduler_class.from_config(reference_pipeline.scheduler.config)
        )
        pipe.set_progress_bar_config(disable=True)
        assert pipe.scheduler.config.prediction_type == "sample" and pipe.scheduler.config.clip_sample is False
        first = pipe(generator=generators(0, 1), **embeds_kwargs).image_embeds
        second = pipe(generator=generators(0, 1), **embeds_kwargs).image_embeds
        assert torch.isfinite(first).all() and torch.equal(first, second), scheduler_class.__name__
    # DDIM made from the CompoDiff config is the documented explicit DDIM configuration.
    explicit = CompoDiffPipeline(
        prior=reference_pipeline.prior,
        scheduler=DDIMScheduler(prediction_type="sample", beta_schedule="squaredcos_cap_v2", clip_sample=False),
    )
    explicit.set_progress_bar_config(disable=True)
    from_config = CompoDiffPipeline(
        prior=reference_pipeline.prior, scheduler=DDIMScheduler.from_config(reference_pipeline.scheduler.config)
    )
    from_config.set_progress_bar_config(disable=True)
    torch.testing.assert_close(
        from_config(generator=generators(0, 1), **embeds_kwargs).image_embeds,
        explicit(generator=generators(0, 1), **embeds_kwargs).image_embeds,
        atol=0,
        rtol=0,
    )


def test_scheduler_trained_betas_and_clip_sample(tmp_path):
    betas = CompoDiffScheduler().betas.double().numpy()
    trained = CompoDiffScheduler(trained_betas=betas.tolist())
    torch.testing.assert_close(trained.alphas_cumprod, CompoDiffScheduler().alphas_cumprod, atol=1e-7, rtol=1e-5)
    trained.save_pretrained(tmp_path)
    assert CompoDiffScheduler.from_pretrained(tmp_path).betas.tolist() == trained.betas.tolist()
    with pytest.raises(ValueError, match="trained_betas.*1000 values"):
        CompoDiffScheduler(trained_betas=[0.1, 0.3])
    clipping = CompoDiffScheduler(clip_sample=True, clip_sample_range=0.5)
    clipping.set_timesteps(3)
    out = clipping.step(torch.full((1, 4), 3.0), clipping.timesteps[-1], torch.zeros(1, 4))
    assert out.pred_original_sample.max() == 0.5 and out.prev_sample.max() == 0.5  # last step returns x_0
