"""CompoDiffPipeline's input checks and the behaviours diffusers' own suites expect: bad masks are refused in
`check_inputs`, `output_type="latent"` returns the raw samples, switching schedulers warns about nothing of the
pipeline's own making and round-trips, and words the tokenizer does not know are named in a warning."""

import logging
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from hf_cir import CompoDiffPipeline
from hf_cir.toy.checkpoints import toy_checkpoint


@pytest.fixture(scope="module")
def pipe():
    pipe = CompoDiffPipeline.from_pretrained(toy_checkpoint("compodiff"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


IMAGE = Image.new("RGB", (32, 32), (220, 30, 30))


@pytest.mark.parametrize(
    "mask, message",
    [
        (torch.full((8, 8), float("nan")), "non-finite"),
        (np.full((8, 8), np.inf, dtype=np.float32), "non-finite"),
        (torch.tensor([[0.0, float("-inf")]]).repeat(8, 4), "non-finite"),
        (torch.full((8, 8), 255.0), r"values must lie in \[0, 1\].*got \[255, 255\]"),
        (-torch.ones(1, 8, 8), r"values must lie in \[0, 1\]"),
        (torch.zeros(2, 1, 1, 8, 8), r"must be \(H, W\), \(batch, H, W\) or \(batch, 1, H, W\)"),
        (torch.zeros(1, 0, 8), "not empty"),
        (np.array([["a", "b"]]), "real numbers"),
        (torch.zeros(8, 8, dtype=torch.complex64), "real numbers"),
        ("mask.png", "must be a PIL image"),
    ],
)
def test_bad_masks_are_refused_in_check_inputs(pipe, mask, message):
    with pytest.raises(ValueError, match=message):
        pipe("make it blue", image=IMAGE, mask_image=mask, num_inference_steps=2)


def test_good_masks_still_run(pipe):
    side = pipe.prior.config.mask_size
    for mask in (torch.ones(side, side), np.zeros((1, side, side), dtype=bool), Image.new("L", (32, 32), 255)):
        out = pipe("make it blue", image=IMAGE, mask_image=mask, num_inference_steps=2).image_embeds
        assert out.shape == (1, pipe.prior.config.embedding_dim) and torch.isfinite(out).all()


def test_latent_output_is_the_raw_samples(pipe):
    kwargs = dict(image=IMAGE, num_inference_steps=2, num_samples_per_prompt=3, num_images_per_prompt=2)
    latents = pipe(["make it blue"], generator=torch.Generator().manual_seed(0), output_type="latent", **kwargs)
    embeds = pipe(["make it blue"], generator=torch.Generator().manual_seed(0), **kwargs).image_embeds
    raw = latents.image_embeds
    assert isinstance(raw, torch.Tensor) and raw.shape == (2 * 3, pipe.prior.config.embedding_dim)
    # The returned embeddings are those samples averaged per query (rows grouped by returned embedding).
    assert torch.allclose(raw.view(2, 3, -1).mean(dim=1), embeds)
    # source_weight mixes the image into the embeddings only, not into the samples.
    mixed = pipe(["make it blue"], generator=torch.Generator().manual_seed(0), output_type="latent", source_weight=0.5,
                 **kwargs).image_embeds  # fmt: skip
    assert torch.equal(mixed, raw)


def _diffusers_warnings(caplog, action):
    import diffusers

    diffusers.utils.logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING, logger="diffusers"):
            caplog.clear()
            action()
        return [record.getMessage() for record in caplog.records if record.name.startswith("diffusers")]
    finally:
        diffusers.utils.logging.disable_propagation()


def test_apply_preset_warns_about_nothing_of_its_own_making(caplog):
    pipe = CompoDiffPipeline.from_pretrained(toy_checkpoint("compodiff"))
    messages = _diffusers_warnings(caplog, lambda: pipe.apply_preset("interactive"))
    assert type(pipe.scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert not [m for m in messages if "not expected" in m], messages


def test_scheduler_round_trip_through_a_compatible_keeps_the_configuration(caplog):
    pipe = CompoDiffPipeline.from_pretrained(toy_checkpoint("compodiff"))
    original = dict(pipe.scheduler.config)
    for name in ("DDIMScheduler", "DPMSolverMultistepScheduler", "UniPCMultistepScheduler"):
        messages = _diffusers_warnings(caplog, lambda name=name: pipe.set_scheduler(name))
        assert not [m for m in messages if "not expected" in m], messages
        assert pipe.scheduler.config.beta_schedule == original["beta_schedule"]  # the checkpoint's, not a default
        # Back to the reference's scheduler, which none of diffusers' solvers names among its `compatibles`.
        pipe.set_scheduler("CompoDiffScheduler")
        assert type(pipe.scheduler).__name__ == "CompoDiffScheduler"
        restored = dict(pipe.scheduler.config)
        assert {key: restored[key] for key in original if not key.startswith("_")} == {
            key: value for key, value in original.items() if not key.startswith("_")
        }
    with pytest.raises(ValueError, match="Unknown or incompatible scheduler 'NoSuchScheduler'"):
        pipe.set_scheduler("NoSuchScheduler")


def test_unknown_words_are_named_in_a_warning(pipe):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipe("make it teal", image=IMAGE, negative_prompt="a zorb", num_inference_steps=2)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert any("'teal'" in m and "unknown token" in m for m in messages), messages
    assert any("'zorb'" in m for m in messages), messages
    assert all(w.filename == __file__ for w in caught if "unknown token" in str(w.message))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # known words: no warning at all
        pipe("make it blue", image=IMAGE, num_inference_steps=2)
