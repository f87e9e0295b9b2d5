"""CompoDiff's sampling defaults belong to the checkpoint: `model_index.json` holds them, `__call__` uses them for
arguments left at None, they survive a save/load round trip, and a folder written before they existed loads with
the reference's defaults."""

from pathlib import Path

import pytest
import torch

from hf_cir import CompoDiffPipeline
from hf_cir.toy import toy_checkpoint

PREVIOUS = Path(__file__).resolve().parents[1] / "fixtures" / "previous_layout" / "compodiff"


def query(pipe, **kwargs):
    return pipe("make it blue", generator=torch.Generator().manual_seed(0), **kwargs).image_embeds


def test_a_folder_without_sampling_defaults_gets_the_references():
    pipe = CompoDiffPipeline.from_pretrained(PREVIOUS)
    assert "default_guidance_scale" not in (PREVIOUS / "model_index.json").read_text()
    assert (pipe.default_guidance_scale, pipe.default_image_guidance_scale) == (7.5, 1.5)
    assert (pipe.default_num_inference_steps, pipe.default_num_samples_per_prompt) == (10, 2)


def test_saved_defaults_round_trip_and_drive_the_call(tmp_path):
    pipe = CompoDiffPipeline.from_pretrained(toy_checkpoint("compodiff"))
    pipe.set_progress_bar_config(disable=True)
    pipe.set_sampling_defaults(guidance_scale=2.5, image_guidance_scale=1.25, num_inference_steps=6)
    pipe.save_pretrained(tmp_path / "saved")
    loaded = CompoDiffPipeline.from_pretrained(tmp_path / "saved")
    loaded.set_progress_bar_config(disable=True)
    assert loaded.config.default_guidance_scale == 2.5 and loaded.default_image_guidance_scale == 1.25
    assert loaded.default_num_inference_steps == 6 and loaded.default_num_samples_per_prompt == 2
    explicit = query(loaded, guidance_scale=2.5, image_guidance_scale=1.25, num_inference_steps=6)
    torch.testing.assert_close(query(loaded), explicit, rtol=0, atol=0)
    assert not torch.equal(query(loaded, guidance_scale=7.5), explicit)


def test_the_shipped_toy_compodiff_records_its_defaults():
    config = (toy_checkpoint("compodiff") / "model_index.json").read_text()
    for key in ("default_guidance_scale", "default_image_guidance_scale", "default_num_inference_steps"):
        assert key in config, key


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"guidance_scale": -1}, "`guidance_scale` must be >= 0"),
        ({"num_inference_steps": 0}, "`num_inference_steps` must be >= 1"),
        ({"num_samples_per_prompt": 1.5}, "`num_samples_per_prompt` must be an integer"),
        ({"image_guidance_scale": "2"}, "`image_guidance_scale` must be a number"),
    ],
)
def test_bad_sampling_defaults_are_refused(kwargs, message):
    pipe = CompoDiffPipeline.from_pretrained(toy_checkpoint("compodiff"))
    with pytest.raises(ValueError, match=message):
        pipe.set_sampling_defaults(**kwargs)
