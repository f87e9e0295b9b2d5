"""CapturedSamplingLoop: the captured program gives the ordinary loop's numbers, and falls back cleanly.

On a CPU the CUDA-graph backend runs the ordinary loop; `backend="eager"` runs the very program a GPU captures
(copied scheduler, noise drawn ahead from the caller's generator, static buffers, the graph cache) without
capturing it, so its bit-exactness against the ordinary loop is checked here for every scheduler kind. The tests
marked `cuda` capture real graphs and run only where CUDA is available.
"""

import logging

import pytest
import torch

from hf_cir import CompoDiffPipeline, CompoDiffPriorTransformer, CompoDiffScheduler
from hf_cir.pipelines.compodiff.captured_sampling import CapturedSamplingLoop

TINY = {
    "embedding_dim": 32,
    "num_layers": 2,
    "num_attention_heads": 2,
    "attention_head_dim": 16,
    "num_cross_attention_heads": 2,
    "text_embed_dim": 24,
    "mask_size": 4,
}
LOGGER = "hf_cir.pipelines.compodiff.captured_sampling"
# (scheduler class name, kwargs): the reference DDIM with eta = 1, DDIM, DPM-Solver++ 2M, its SDE variant (draws
# float32 noise every step), UniPC (no noise).
SCHEDULERS = [
    ("CompoDiffScheduler", {}),
    ("DDIMScheduler", {}),
    ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    ("UniPCMultistepScheduler", {}),
]
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="captures CUDA graphs: needs a CUDA device")


def make_pipe(dtype=torch.float32, device="cpu") -> CompoDiffPipeline:
    torch.manual_seed(0)
    prior = CompoDiffPriorTransformer(**TINY).eval().to(device=device, dtype=dtype)
    pipe = CompoDiffPipeline(prior=prior, scheduler=CompoDiffScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def conditions(pipe, batch=2, text_only=False):
    generator = torch.Generator().manual_seed(1)
    device, dtype = pipe.prior.device, pipe.prior.dtype
    kwargs = {
        "prompt_embeds": torch.randn(batch, 7, TINY["text_embed_dim"], generator=generator).to(device, dtype),
        "negative_prompt_embeds": torch.randn(1, 7, TINY["text_embed_dim"], generator=generator).to(device, dtype),
    }
    if not text_only:
        kwargs["image_embeds"] = torch.randn(batch, TINY["embedding_dim"], generator=generator).to(device, dtype)
    return kwargs


def generator_for(kind, batch=2):
    if kind == "single":
        return torch.Generator().manual_seed(5)
    if kind == "list":
        return [torch.Generator().manual_seed(5 + i) for i in range(batch)]
    torch.manual_seed(5)  # None: torch's global generator, seeded
    return None


def sample(pipe, kind="single", batch=2, text_only=False, **kwargs):
    return pipe(
        generator=generator_for(kind, batch),
        num_samples_per_prompt=3,
        **conditions(pipe, batch, text_only),
        **{"num_inference_steps": 5, **kwargs},
    ).image_embeds


@pytest.mark.parametrize("name,scheduler_kwargs", SCHEDULERS)
@pytest.mark.parametrize("kind", ["single", "list", "none"])
def test_eager_program_is_bit_identical_to_the_ordinary_loop(name, scheduler_kwargs, kind):
    pipe = make_pipe()
    if name != "CompoDiffScheduler":
        pipe.set_scheduler(name, **scheduler_kwargs)
    ordinary = sample(pipe, kind)
    pipe.sampling_loop = CapturedSamplingLoop(backend="eager")
    first, again = sample(pipe, kind), sample(pipe, kind)
    assert torch.equal(first, ordinary) and torch.equal(again, ordinary)
    assert (pipe.sampling_loop.captures, pipe.sampling_loop.replays) == (1, 1)  # built once, then reused


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_eager_program_in_low_precision_draws_noise_as_the_scheduler_does(dtype):
    # DPM-Solver's SDE variant draws float32 noise for a bfloat16/float16 sample: the probe finds that dtype.
    pipe = make_pipe(dtype)
    for name, kwargs in (SCHEDULERS[0], SCHEDULERS[3]):
        if name != "CompoDiffScheduler":
            pipe.set_scheduler(name, **kwargs)
        pipe.sampling_loop = None
        ordinary = sample(pipe)
        pipe.sampling_loop = CapturedSamplingLoop(backend="eager")
        assert torch.equal(sample(pipe), ordinary) and torch.equal(sample(pipe), ordinary)
        # The program ran (no fallback to the ordinary loop): built once, then reused.
        assert (pipe.sampling_loop.captures, pipe.sampling_loop.replays) == (1, 1), name


def test_text_only_and_mask_and_images_per_prompt():
    pipe = make_pipe()
    loop = CapturedSamplingLoop(backend="eager")
    runs = [
        {"text_only": True},  # two guidance branches
        {"mask_image": torch.ones(2, 4, 4)},
        {"num_images_per_prompt": 2, "kind": "list", "batch": 2},
    ]
    for run in runs:
        kind, batch = run.pop("kind", "single"), run.pop("batch", 2)
        if kind == "list":
            run["generator"] = [torch.Generator().manual_seed(i) for i in range(4)]
            ordinary = pipe(num_samples_per_prompt=2, num_inference_steps=4, **conditions(pipe, batch), **run)
            pipe.sampling_loop = loop
            run["generator"] = [torch.Generator().manual_seed(i) for i in range(4)]
            captured = pipe(num_samples_per_prompt=2, num_inference_steps=4, **conditions(pipe, batch), **run)
            ordinary, captured = ordinary.image_embeds, captured.image_embeds
        else:
            ordinary = sample(pipe, kind, batch, **run)
            pipe.sampling_loop = loop
            captured = sample(pipe, kind, batch, **run)
        pipe.sampling_loop = None
        assert torch.equal(captured, ordinary)
    assert loop.captures == 3


def test_new_shapes_and_settings_build_new_programs_in_a_bounded_cache():
    pipe = make_pipe()
    pipe.sampling_loop = loop = CapturedSamplingLoop(max_graphs=2, backend="eager")
    sample(pipe)
    sample(pipe, guidance_scale=3.0)  # the scales are kernel arguments of a graph: a new program
    sample(pipe, batch=3)  # new shapes: a new program, the least recently used dropped
    assert (loop.captures, loop.replays, len(loop)) == (3, 0, 2)
    ordinary_pipe = make_pipe()
    for kwargs in ({"batch": 3}, {"num_inference_steps": 3}):
        assert torch.equal(sample(pipe, **kwargs), sample(ordinary_pipe, **kwargs))
    assert (loop.captures, loop.replays, len(loop)) == (4, 1, 2)
    pipe.set_scheduler("DPMSolverMultistepScheduler")  # another scheduler: another program
    ordinary_pipe.set_scheduler("DPMSolverMultistepScheduler")
    assert torch.equal(sample(pipe), sample(ordinary_pipe)) and loop.captures == 5
    loop.clear()
    assert len(loop) == 0


def test_cuda_graph_backend_on_a_cpu_runs_the_ordinary_loop_and_says_why_once(caplog):
    pipe = make_pipe()
    ordinary = sample(pipe)
    pipe.sampling_loop = loop = CapturedSamplingLoop()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert torch.equal(sample(pipe), ordinary) and torch.equal(sample(pipe), ordinary)
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert messages == [
        "CapturedSamplingLoop runs the ordinary sampling loop: CUDA graphs need a CUDA device and the prior runs on "
        "cpu."
    ]
    assert (loop.captures, loop.replays, len(loop)) == (0, 0, 0)


def test_what_cannot_be_captured_runs_the_ordinary_loop(caplog):
    pipe = make_pipe()
    pipe.sampling_loop = loop = CapturedSamplingLoop(backend="eager")
    # The plain path, and a step callback (the pipeline keeps callbacks on its own loop).
    pipe.use_context_cache = False
    with caplog.at_level(logging.INFO, logger=LOGGER):
        plain = sample(pipe)
    pipe.use_context_cache = True
    seen = []

    def callback(pipe, step, timestep, tensors):
        seen.append(step)
        return tensors

    ordinary = sample(make_pipe())
    assert torch.equal(sample(pipe, callback_on_step_end=callback), ordinary) and seen == [0, 1, 2, 3]
    torch.testing.assert_close(plain, ordinary, atol=1e-5, rtol=0)
    # A scheduler whose noise cannot be drawn ahead (DPM-Solver single-step SDE takes no `variance_noise`).
    pipe.set_scheduler("DPMSolverSinglestepScheduler", algorithm_type="sde-dpmsolver++")
    reference = make_pipe()
    reference.set_scheduler("DPMSolverSinglestepScheduler", algorithm_type="sde-dpmsolver++")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert torch.equal(sample(pipe, num_inference_steps=4), sample(reference, num_inference_steps=4))
        sample(pipe, num_inference_steps=4)
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(messages) == 2 and "use_context_cache" in messages[0]
    assert "DPMSolverSinglestepScheduler.step draws noise but takes no `variance_noise`" in messages[1]
    assert [r.levelname for r in caplog.records if r.name == LOGGER] == ["INFO", "WARNING"]
    assert loop.captures == 0


def test_invalid_arguments():
    with pytest.raises(ValueError, match="`max_graphs` must be a positive integer"):
        CapturedSamplingLoop(max_graphs=0)
    with pytest.raises(ValueError, match="`backend` must be one of"):
        CapturedSamplingLoop(backend="compile")


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name,scheduler_kwargs", [SCHEDULERS[0], SCHEDULERS[2], SCHEDULERS[3]])
def test_cuda_graph_replays_the_ordinary_loop(dtype, name, scheduler_kwargs):
    pipe = make_pipe(dtype, "cuda")
    if name != "CompoDiffScheduler":
        pipe.set_scheduler(name, **scheduler_kwargs)
    ordinary = sample(pipe)
    pipe.sampling_loop = loop = CapturedSamplingLoop()
    first = sample(pipe)  # the warm-up run of the capture
    replayed = [sample(pipe) for _ in range(2)]
    assert (loop.captures, loop.replays, len(loop)) == (1, 2, 1)  # replays count graphs only, never fallbacks
    # The same kernels on the same numbers; allow float32 rounding should a library pick another algorithm.
    tolerance = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}[dtype]
    for output in (first, *replayed):
        torch.testing.assert_close(output, ordinary, atol=tolerance, rtol=0)
    assert torch.equal(replayed[0], replayed[1])
    # A new generator seed is new noise through the same graph.
    assert not torch.equal(
        pipe(
            generator=torch.Generator().manual_seed(9),
            num_inference_steps=5,
            num_samples_per_prompt=3,
            **conditions(pipe),
        ).image_embeds,
        replayed[0],
    )


@requires_cuda
def test_cuda_graph_with_a_cuda_generator_and_the_global_generator():
    pipe = make_pipe(torch.float32, "cuda")
    for kind in ("none", "cuda"):

        def run(kind=kind):
            generator = torch.Generator("cuda").manual_seed(3) if kind == "cuda" else generator_for("none")
            return pipe(generator=generator, num_inference_steps=5, **conditions(pipe)).image_embeds

        pipe.sampling_loop = None
        ordinary = run()
        pipe.sampling_loop = CapturedSamplingLoop()
        for _ in range(3):
            torch.testing.assert_close(run(), ordinary, atol=1e-5, rtol=0)


def test_autocast_runs_the_ordinary_loop_and_inference_mode_is_part_of_the_key(caplog):
    pipe = make_pipe()
    pipe.sampling_loop = CapturedSamplingLoop(backend="eager")
    with torch.autocast("cpu", dtype=torch.bfloat16), caplog.at_level("INFO"):
        sample(pipe)
    assert pipe.sampling_loop.captures == 0 and "autocast is on" in caplog.text
    with torch.inference_mode():
        inside = sample(pipe)
    outside = sample(pipe)  # its own program: the first one's buffers are inference tensors
    assert pipe.sampling_loop.captures == 2 and torch.equal(inside, outside)
