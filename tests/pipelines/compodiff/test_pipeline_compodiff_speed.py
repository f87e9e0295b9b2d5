"""CompoDiff's speed controls: presets, lower precision, compatible schedulers by name, the text-encoding cache."""

import pytest
import torch
from diffusers import DPMSolverMultistepScheduler

from hf_cir import CompoDiffPipeline
from hf_cir.pipelines.compodiff.pipeline_compodiff import SAMPLING_PRESETS, TextEncodingCache
from hf_cir.toy import toy_checkpoint

TEXTS = ["is red", "is a small blue circle"]


@pytest.fixture()
def toy_pipe():
    pipe = CompoDiffPipeline.from_pretrained(toy_checkpoint("compodiff"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture()
def image_embeds(toy_pipe):
    size = toy_pipe.image_processor.crop_size["height"]
    with torch.no_grad():
        return toy_pipe.encode_image(torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0)))


def sample(pipe, image_embeds, **kwargs):
    return pipe(TEXTS, image_embeds=image_embeds, generator=torch.Generator().manual_seed(0), **kwargs).image_embeds


def quantized_linears(module):
    return [m for m in module.modules() if type(m).__module__.startswith("torch.ao.nn.quantized")]


def test_interactive_preset_in_one_line(toy_pipe, image_embeds):
    preset = SAMPLING_PRESETS["interactive"]
    steps, samples = preset["num_inference_steps"], preset["num_samples_per_prompt"]
    reference = sample(toy_pipe, image_embeds)
    defaults = {key: value for key, value in toy_pipe.config.items() if key.startswith("default_")}
    fp32 = CompoDiffPipeline(**toy_pipe.components, **defaults)  # the checkpoint's guidance, as `toy_pipe` samples
    fp32.set_progress_bar_config(disable=True)
    fp32.scheduler = DPMSolverMultistepScheduler.from_config(toy_pipe.scheduler.config, **preset["scheduler_kwargs"])
    expected = sample(fp32, image_embeds, num_inference_steps=steps, num_samples_per_prompt=samples)

    toy_pipe.apply_preset("interactive")
    assert type(toy_pipe.scheduler).__name__ == preset["scheduler"]
    for key, value in preset["scheduler_kwargs"].items():
        assert toy_pipe.scheduler.config[key] == value, key
    assert toy_pipe.default_num_inference_steps == preset["num_inference_steps"]
    assert toy_pipe.default_num_samples_per_prompt == preset["num_samples_per_prompt"]
    # int8 on a CPU: every linear layer of the repeated blocks, none outside them.
    blocks = len(toy_pipe.prior.transformer_blocks)
    assert len(quantized_linears(toy_pipe.prior.transformer_blocks)) == len(quantized_linears(toy_pipe.prior)) > blocks
    assert not quantized_linears(toy_pipe.prior.proj_out) and quantized_linears(toy_pipe.text_encoder)
    assert not quantized_linears(toy_pipe.image_encoder)  # stored gallery embeddings stay valid
    # A bounded text cache: the negative prompt every query shares is encoded once.
    assert toy_pipe.text_encoding_cache.max_entries == preset["text_encoding_cache"]
    fast = sample(toy_pipe, image_embeds)  # the preset's steps and samples
    misses = toy_pipe.text_encoding_cache.misses
    assert torch.equal(sample(toy_pipe, image_embeds), fast)  # cached encodings give the same query
    assert toy_pipe.text_encoding_cache.misses == misses and toy_pipe.text_encoding_cache.hits > 0
    assert torch.isfinite(fast).all()
    # int8 changes the numbers a little, not the answer: close to the float32 run of the same sampler ...
    assert torch.nn.functional.cosine_similarity(fast, expected).min() > 0.98
    assert not torch.equal(fast, expected)
    # ... and explicit arguments still win over the preset's defaults.
    assert sample(toy_pipe, image_embeds, num_samples_per_prompt=1).shape == reference.shape
    assert toy_pipe.num_timesteps == steps
    assert not torch.equal(sample(toy_pipe, image_embeds, num_inference_steps=steps + 1), fast)


def test_interactive_preset_keeps_a_cache_the_user_turned_on(toy_pipe):
    mine = toy_pipe.enable_text_encoding_cache(8)
    toy_pipe.apply_preset("interactive")
    assert toy_pipe.text_encoding_cache is mine and mine.max_entries == 8


def test_default_call_is_unchanged_by_the_new_defaults(toy_pipe, image_embeds):
    explicit = sample(toy_pipe, image_embeds, num_inference_steps=10, num_samples_per_prompt=2)
    assert torch.equal(sample(toy_pipe, image_embeds), explicit)


def test_precision_and_scheduler_errors(toy_pipe):
    with pytest.raises(ValueError, match="Unknown preset 'fastest'"):
        toy_pipe.apply_preset("fastest")
    with pytest.raises(ValueError, match="`precision` must be one of"):
        toy_pipe.set_precision("int4")
    with pytest.raises(ValueError, match="`components` may name"):
        toy_pipe.set_precision("int8", components=("image_encoder",))
    with pytest.raises(ValueError, match="incompatible scheduler 'EulerAncestralDiscreteScheduler'"):
        toy_pipe.set_scheduler("EulerAncestralDiscreteScheduler")
    toy_pipe.set_precision("bfloat16", components=("prior",))
    assert toy_pipe.prior.dtype == torch.bfloat16 and toy_pipe.text_encoder.dtype == torch.float32
    toy_pipe.set_precision("float32")
    toy_pipe.set_precision("int8", components=("text_encoder",))
    with pytest.raises(ValueError, match="already int8-quantised: reload"):
        toy_pipe.set_precision("float16", components=("text_encoder",))


def test_set_scheduler_by_name_round_trip(toy_pipe):
    toy_pipe.set_scheduler("UniPCMultistepScheduler")
    assert type(toy_pipe.scheduler).__name__ == "UniPCMultistepScheduler"
    assert toy_pipe.scheduler.config.prediction_type == "sample"


def count_text_encoder_calls(pipe):
    calls = []
    handle = pipe.text_encoder.register_forward_hook(lambda module, args, kwargs_or_output: calls.append(1))
    return calls, handle


def test_text_encoding_cache_is_off_by_default_and_reuses_texts(toy_pipe, image_embeds):
    assert toy_pipe.text_encoding_cache is None
    uncached = sample(toy_pipe, image_embeds)
    cache = toy_pipe.enable_text_encoding_cache(max_entries=8)
    calls, handle = count_text_encoder_calls(toy_pipe)
    try:
        first = sample(toy_pipe, image_embeds)
        assert len(calls) == 2 and cache.misses == 3  # the prompts in one pass, the negative prompt in another
        second = sample(toy_pipe, image_embeds)
        assert len(calls) == 2 and cache.hits == 3  # nothing encoded again
    finally:
        handle.remove()
    torch.testing.assert_close(first, uncached, atol=1e-6, rtol=0)
    assert torch.equal(first, second)
    embeds, _ = toy_pipe.encode_prompt(TEXTS)
    embeds.mul_(0)  # the caller's tensor is a copy: the cache is not altered
    assert torch.equal(sample(toy_pipe, image_embeds), first)


def test_text_encoding_cache_is_bounded_and_invalidated(toy_pipe):
    cache = toy_pipe.enable_text_encoding_cache(max_entries=2)
    toy_pipe.encode_prompt(["a", "b"], "")  # the prompts, then the negative prompt: "a" is dropped
    assert len(cache) == 2 and "a" not in cache and "b" in cache and "" in cache
    toy_pipe.encode_prompt(["a", "b", "c"], "")  # more texts than the cache holds: encoded without it
    assert len(cache) == 2 and "a" not in cache and "c" not in cache
    toy_pipe.encode_prompt("d", "")
    assert len(cache) == 2 and "d" in cache and "" in cache
    toy_pipe.set_precision("int8", components=("text_encoder",))
    assert len(cache) == 0  # quantised in place: emptied
    toy_pipe.encode_prompt("d", "")
    toy_pipe.text_encoder = CompoDiffPipeline.from_pretrained(toy_checkpoint("compodiff")).text_encoder
    calls, handle = count_text_encoder_calls(toy_pipe)
    try:
        toy_pipe.encode_prompt("d", "")  # another encoder object: its own encodings, not the old ones
    finally:
        handle.remove()
    assert len(calls) == 2
    with pytest.raises(ValueError, match="`max_entries` must be a positive integer"):
        TextEncodingCache(0)


def test_a_full_text_cache_keeps_the_hits_of_the_call_that_adds_texts(toy_pipe):
    cache = toy_pipe.enable_text_encoding_cache(max_entries=2)
    toy_pipe._encode_texts(["a", "b"], torch.device("cpu"))  # full: "a" the least recently used
    uncached = CompoDiffPipeline(**toy_pipe.components)
    uncached.text_encoding_cache = None
    expected = uncached._encode_texts(["a", "c"], torch.device("cpu"))
    found = toy_pipe._encode_texts(["a", "c"], torch.device("cpu"))  # a hit and a new text on a full cache
    torch.testing.assert_close(found, expected, atol=1e-6, rtol=0)
    assert "a" in cache and "c" in cache and "b" not in cache
