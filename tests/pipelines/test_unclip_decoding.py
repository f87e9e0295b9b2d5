"""Decoding CLIP image embeddings (CompoDiff's queries) with a diffusers unCLIP pipeline: tiny random components."""

import functools

import numpy as np
import pytest
import torch
from diffusers import StableUnCLIPImg2ImgPipeline
from tiny_unclip import make_tiny_stable_unclip

from hf_cir.pipelines.unclip_decoding import decode_image_embeds, decoder_embedding_dim

DIM = 16


@pytest.fixture(scope="module")
def decoder():
    pipeline = make_tiny_stable_unclip(DIM)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def _decode(decoder, embeds, seed=0):
    return decode_image_embeds(decoder, embeds, generator=torch.Generator().manual_seed(seed), num_inference_steps=2)


def test_decodes_one_picture_per_embedding(decoder):
    embeds = torch.randn(2, DIM, generator=torch.Generator().manual_seed(1))
    pictures = _decode(decoder, embeds)
    assert len(pictures) == 2
    assert pictures[0].mode == "RGB" and pictures[0].size == (16, 16)


def test_the_embedding_drives_the_picture(decoder):
    first, second = torch.randn(2, DIM, generator=torch.Generator().manual_seed(2)) * 5
    same = [np.asarray(_decode(decoder, first.unsqueeze(0))[0]) for _ in range(2)]
    other = np.asarray(_decode(decoder, second.unsqueeze(0))[0])
    np.testing.assert_array_equal(same[0], same[1])  # deterministic with a seeded generator
    assert np.abs(same[0].astype(int) - other.astype(int)).max() > 0


def test_the_embedding_reaches_the_pipeline_as_image_embeds(decoder, monkeypatch):
    seen = {}
    call = StableUnCLIPImg2ImgPipeline.__call__

    @functools.wraps(call)  # keeps the signature that `decode_image_embeds` reads
    def spy(self, *args, **kwargs):
        seen.update(kwargs)
        return call(self, *args, **kwargs)

    monkeypatch.setattr(StableUnCLIPImg2ImgPipeline, "__call__", spy)
    embeds = torch.randn(1, DIM)
    _decode(decoder, embeds)
    torch.testing.assert_close(seen["image_embeds"], embeds)
    assert seen["num_inference_steps"] == 2 and seen.get("image") is None


def test_dimension_read_from_the_config_and_checked(decoder):
    assert decoder_embedding_dim(decoder) == DIM
    with pytest.raises(ValueError, match=f"size {DIM + 1}.*{DIM}-d CLIP image embeddings"):
        decode_image_embeds(decoder, torch.randn(1, DIM + 1))


def test_a_pipeline_without_embedding_input_is_refused():
    class TextToImage:
        def __call__(self, prompt=None, generator=None, output_type="pil"):
            raise AssertionError("never called")

    with pytest.raises(ValueError, match="does not generate from CLIP image embeddings"):
        decode_image_embeds(TextToImage(), torch.randn(1, DIM))
