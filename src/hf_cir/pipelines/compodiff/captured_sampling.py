# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""
CompoDiff's denoising loop captured once per fixed shape and replayed as one CUDA graph (no per-kernel launches).

On a GPU at small batches CompoDiff's sampling waits on kernel launches and Python, not on arithmetic: 9 prior
evaluations of ~12 blocks each are thousands of tiny kernels (benchmarks/README.md, GPU section). A CUDA graph
records the whole loop (every step's prior forward over all guidance branches, the guidance combination and the
scheduler step with its noise) and replays it with one launch.

Design, and why:

- The whole loop is one graph, not one graph per step: the scheduler's coefficients and the guidance scales are
  Python numbers that become kernel arguments, so a graph is only valid for one scheduler config, step count, pair
  of scales, row count, dtype, device, condition shapes and weight storage. All of these form the key of a small
  least-recently-used cache of graphs (`max_graphs`); a call with a new key captures again, one with an old key
  replays.
- Random numbers never run inside the graph. The step noise is drawn *before* replaying, from the caller's
  `generator`, with the same calls in the same order as the ordinary loop (`pipe.randn_groups`), into static
  buffers the graph reads. Which steps draw, and in which dtype, is found once per key by a probe on the CPU: two
  copies of the scheduler run the key's steps on random inputs, one drawing its own noise from a generator, one
  given pre-drawn noise (`variance_noise`) from a twin generator; the steps must give bit-identical samples and
  leave the generators in the same state. So the outputs are the ordinary loop's for any scheduler that passes the
  probe (`CompoDiffScheduler`, DDIM, the DPM-Solver, UniPC and DEIS solvers, SDE variants included); one that
  fails it runs the ordinary loop. A list of generators draws every step, as the ordinary loop does for it.
- The graph's scheduler is a copy with its timesteps on the CPU (its indexing then never waits on the GPU, which
  capture forbids); the prior's timestep tensors are made before capture. The conditions (the cached context of
  `prior.prepare_context`, step-independent) are computed by the pipeline as usual and copied into static buffers.
- Capture is preceded by one ordinary run of the same program on a side stream (CUDA needs the warm-up; its result
  is this call's answer). When capture fails (an operation that cannot be captured), the key is marked and runs
  the ordinary loop from then on; the reason is logged once at warning level.
- Everything else runs the ordinary loop and says why once, at info level: a CPU (or any non-CUDA) device, the
  plain path (`pipe.use_context_cache = False`: its per-row timestep check reads GPU memory every step), a prior
  in training mode or with offload hooks, a call under autocast, or a step callback (the pipeline keeps those on its
  own loop). Inference mode is part of the key (its tensors cannot be refilled outside it).

`backend="eager"` runs the very program that would be captured (copied scheduler, pre-drawn noise, static
buffers, the same cache) without capturing it, on any device: to check on a CPU that the captured program computes
the ordinary loop's numbers, like `torch.compile`'s `backend="eager"`. It is not faster.

`torch.compile(mode="reduce-overhead")` would do a similar job but needs a compiler and minutes of compilation per
shape; the plain CUDA graph needs neither, and leaves the model code untouched.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import logging
from collections import OrderedDict

import torch
from diffusers.utils.torch_utils import randn_tensor

__all__ = ["CapturedSamplingLoop"]

logger = logging.getLogger(__name__)

BACKENDS = ("cuda_graph", "eager")


def _tensors(value) -> list[torch.Tensor]:
    """The tensors of nested tuples, lists, dicts and dataclasses, in a fixed order."""
    if isinstance(value, torch.Tensor):
        return [value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [t for field in dataclasses.fields(value) for t in _tensors(getattr(value, field.name))]
    if isinstance(value, dict):
        return [t for key in sorted(value) for t in _tensors(value[key])]
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in _tensors(item)]
    return []


def _structure(value):
    """A hashable description of `value`'s nesting and of each tensor's shape, strides, dtype and device."""
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape), value.stride(), str(value.dtype), str(value.device))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = tuple((f.name, _structure(getattr(value, f.name))) for f in dataclasses.fields(value))
        return (type(value).__qualname__, fields)
    if isinstance(value, dict):
        return ("dict", tuple((key, _structure(value[key])) for key in sorted(value)))
    if isinstance(value, (tuple, list)):
        return (type(value).__name__, tuple(_structure(item) for item in value))
    return ("value", repr(value))


def _clone(value):
    """`value` with every tensor cloned (same strides), the nesting kept."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(
            value, **{f.name: _clone(getattr(value, f.name)) for f in dataclasses.fields(value)}
        )
    if isinstance(value, dict):
        return {key: _clone(item) for key, item in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_clone(item) for item in value)
    return value


def _autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch before 2.4 takes no device type (and then asks about CUDA)
        return torch.is_autocast_enabled()


def _step_parameters(scheduler) -> set[str]:
    return set(inspect.signature(scheduler.step).parameters)


def _probe_noise(scheduler, num_inference_steps: int, shape, dtype: torch.dtype, noise_every_step: bool):
    """
    For each step of `scheduler` (copies are used), the dtype its noise is drawn in (None: it draws none), found on
    the CPU; or a string saying why its noise cannot be drawn ahead. With `noise_every_step` (a list of generators
    and a scheduler that takes `variance_noise`: the pipeline then passes noise of `dtype` at every step) every
    step gets noise of `dtype`.
    """
    name = type(scheduler).__name__
    parameters = _step_parameters(scheduler)
    takes_generator, takes_noise = "generator" in parameters, "variance_noise" in parameters
    drawing, given = copy.deepcopy(scheduler), copy.deepcopy(scheduler)
    drawing.set_timesteps(num_inference_steps, device="cpu")
    given.set_timesteps(num_inference_steps, device="cpu")
    data = torch.Generator().manual_seed(0)
    drawn_sample = torch.randn(shape, generator=data).to(dtype)
    given_sample = drawn_sample.clone()
    plan = []
    for t in drawing.timesteps:
        model_output = torch.randn(shape, generator=data).to(dtype)
        seed = int(torch.randint(0, 2**31, (1,), generator=data))
        generator = torch.Generator().manual_seed(seed)
        before = generator.get_state()
        # The ordinary loop's call: the scheduler draws from `generator` (or is given noise drawn from it).
        kwargs = {"generator": generator} if takes_generator else {}
        if noise_every_step:
            kwargs = {"variance_noise": randn_tensor(shape, generator=generator, dtype=dtype)}
            before = generator.get_state()
        drawn_sample = drawing.step(model_output, t, drawn_sample, **kwargs).prev_sample
        candidates: list[torch.dtype | None] = [dtype] if noise_every_step else [None]
        if not torch.equal(generator.get_state(), before):
            if noise_every_step:
                return f"{name}.step draws noise although it is given `variance_noise`"
            if not takes_noise:
                return f"{name}.step draws noise but takes no `variance_noise`"
            # The dtype the scheduler draws in: the sample's, or float32 (DPM-Solver's SDE variants). A generator
            # advances alike for every dtype, so the state narrows the choice and the step's numbers decide it.
            candidates = []
            for candidate in dict.fromkeys((dtype, torch.float32)):
                trial = torch.Generator().manual_seed(seed)
                randn_tensor(shape, generator=trial, dtype=candidate)
                if torch.equal(trial.get_state(), generator.get_state()):
                    candidates.append(candidate)
            if not candidates:
                return f"{name}.step draws something other than one noise tensor of the sample's shape per step"
        # The captured program's call: noise drawn ahead from the twin generator, no generator.
        for noise_dtype in candidates:
            trial_scheduler, trial_twin = copy.deepcopy(given), torch.Generator().manual_seed(seed)
            kwargs = (
                {}
                if noise_dtype is None
                else {"variance_noise": randn_tensor(shape, generator=trial_twin, dtype=noise_dtype)}
            )
            trial_sample = trial_scheduler.step(model_output, t, given_sample, **kwargs).prev_sample
            if torch.equal(drawn_sample, trial_sample):
                given, given_sample = trial_scheduler, trial_sample
                break
        else:
            return f"{name}.step gives other numbers with pre-drawn `variance_noise`"
        plan.append(noise_dtype)
    return plan


class _SamplingProgram:
    """The loop of one key: static inputs, the copied scheduler, and (once captured) the graph and its output."""

    def __init__(self, pipe, scheduler, num_inference_steps, plan, latents, conditions, num_branches):
        self.prior = pipe.prior  # held: the key's weight addresses stay this prior's while the program lives
        self.scheduler = copy.deepcopy(scheduler)
        self.num_inference_steps = num_inference_steps
        self.scheduler.set_timesteps(num_inference_steps, device="cpu")
        device = latents.device
        self.prior_timesteps = [
            torch.tensor([int(t)], device=device, dtype=torch.long) for t in self.scheduler.timesteps
        ]
        self.plan = plan
        self.num_branches = num_branches
        self.latents = latents.clone()
        self.noise = [None if d is None else torch.empty(latents.shape, device=device, dtype=d) for d in plan]
        self.conditions = _clone(conditions)
        self.graph = None
        self.output = None

    def load(self, latents, noise, conditions) -> None:
        self.latents.copy_(latents)
        for static, drawn in zip(self.noise, noise):
            if static is not None:
                static.copy_(drawn)
        for static, given in zip(_tensors(self.conditions), _tensors(conditions)):
            static.copy_(given)

    def run(self, pipe) -> torch.Tensor:
        """The denoising loop on the static buffers, as `CompoDiffPipeline.__call__` runs it."""
        scheduler = self.scheduler
        scheduler.set_timesteps(self.num_inference_steps, device="cpu")  # resets a multistep solver's history
        latents = self.latents
        for i, t in enumerate(scheduler.timesteps):
            model_input = scheduler.scale_model_input(latents, t)
            guided = pipe.predict_guided_sample(
                model_input, self.prior_timesteps[i], self.conditions, self.num_branches
            )
            kwargs = {} if self.noise[i] is None else {"variance_noise": self.noise[i]}
            latents = scheduler.step(guided, t, latents, **kwargs).prev_sample
        return latents

    def warm_up(self, pipe) -> torch.Tensor:
        """One ordinary run on a side stream (cuBLAS and kernel set-up happen outside capture); its result."""
        device = self.latents.device
        stream = torch.cuda.Stream(device=device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            output = self.run(pipe)
        torch.cuda.current_stream(device).wait_stream(stream)
        return output.clone()

    def capture(self, pipe) -> None:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            output = self.run(pipe)
        self.graph, self.output = graph, output

    def replay(self) -> torch.Tensor:
        self.graph.replay()
        return self.output.clone()


class _RandomStates:
    """The states of the generators a call draws from (or torch's global ones), to undo the draws of a failed run."""

    def __init__(self, generator, device: torch.device):
        self.generators = generator if isinstance(generator, list) else ([] if generator is None else [generator])
        self.states = [g.get_state() for g in self.generators]
        self.device = device
        self.global_cpu = torch.random.get_rng_state() if generator is None else None
        self.global_cuda = torch.cuda.get_rng_state(device) if generator is None and device.type == "cuda" else None

    def restore(self) -> None:
        for g, state in zip(self.generators, self.states):
            g.set_state(state)
        if self.global_cpu is not None:
            torch.random.set_rng_state(self.global_cpu)
        if self.global_cuda is not None:
            torch.cuda.set_rng_state(self.global_cuda, self.device)


class CapturedSamplingLoop:
    """
    Replays [`CompoDiffPipeline`]'s denoising loop as one CUDA graph per fixed shape; set it as
    `pipe.sampling_loop`. Outputs are those of the ordinary loop (the same kernels on the same numbers, the noise
    drawn from the same generator in the same order); see the module docstring for the design. A call whose loop
    cannot be captured (a CPU device, `pipe.use_context_cache = False`, a step callback, a scheduler whose noise
    cannot be drawn ahead, a failed capture) runs the ordinary loop, and the reason is logged once.

    Each captured graph holds its static buffers (the initial noise, each step's noise, the cached context: for the
    full-size prior at 32 prompts x 2 samples, ~0.5 GB in float32) and its intermediate memory until it is dropped.

    Args:
        max_graphs (`int`, *optional*, defaults to 4): Graphs kept (least recently used dropped first); one per
            combination of rows, steps, scheduler config, guidance scales, dtype, device and condition shapes.
        backend (`str`, *optional*, defaults to `"cuda_graph"`): `"cuda_graph"` captures on CUDA devices;
            `"eager"` runs the same static program without capturing it, on any device (to check it; not faster).

    Attributes:
        captures (`int`): Programs built (graphs captured, or eager programs made).
        replays (`int`): Calls served by a program built earlier.

    Example:

    ```python
    >>> import torch
    >>> from hf_cir import CompoDiffPipeline
    >>> from hf_cir.pipelines.compodiff.captured_sampling import CapturedSamplingLoop
    >>> from hf_cir.toy import toy_checkpoint
    >>> pipe = CompoDiffPipeline.from_pretrained(toy_checkpoint("compodiff"))
    >>> pipe.set_progress_bar_config(disable=True)
    >>> embeds = pipe.encode_image(torch.zeros(1, 3, 32, 32))
    >>> def query():
    ...     return pipe("make it blue", image_embeds=embeds, generator=torch.Generator().manual_seed(0)).image_embeds
    >>> ordinary = query()
    >>> pipe.sampling_loop = CapturedSamplingLoop()  # on a CPU: runs the ordinary loop (logged once)
    >>> torch.equal(query(), ordinary)
    True
    >>> pipe.sampling_loop = CapturedSamplingLoop(backend="eager")  # the program a GPU would capture, uncaptured
    >>> torch.equal(query(), ordinary), torch.equal(query(), ordinary), pipe.sampling_loop.replays
    (True, True, 1)
    >>> pipe.sampling_loop = None  # back to the ordinary loop
    ```
    """

    def __init__(self, max_graphs: int = 4, backend: str = "cuda_graph"):
        if isinstance(max_graphs, bool) or not isinstance(max_graphs, int) or max_graphs < 1:
            raise ValueError(f"`max_graphs` must be a positive integer, got {max_graphs!r}.")
        if backend not in BACKENDS:
            raise ValueError(f"`backend` must be one of {BACKENDS}, got {backend!r}.")
        self.max_graphs = max_graphs
        self.backend = backend
        self._programs: OrderedDict[tuple, _SamplingProgram | str] = OrderedDict()
        self._logged: set[str] = set()
        self.captures = 0
        self.replays = 0

    def __len__(self) -> int:
        return len(self._programs)

    def clear(self) -> None:
        """Drop every captured graph (and its memory)."""
        self._programs.clear()

    def _fall_back(self, reason: str, level: int = logging.INFO) -> None:
        if reason not in self._logged:
            self._logged.add(reason)
            logger.log(level, "CapturedSamplingLoop runs the ordinary sampling loop: %s.", reason)
        return None

    def _unsupported(self, pipe, latents: torch.Tensor) -> str | None:
        if self.backend == "cuda_graph" and latents.device.type != "cuda":
            return f"CUDA graphs need a CUDA device and the prior runs on {latents.device.type}"
        if not pipe.use_context_cache:
            return "`pipe.use_context_cache` is False (the plain path cannot be captured)"
        if pipe.prior.training:
            return "the prior is in training mode"
        if getattr(pipe.prior, "_hf_hook", None) is not None:
            return "the prior has accelerate hooks (offloading moves its weights during the loop)"
        if _autocast_enabled(latents.device.type):
            return "autocast is on (a graph would read autocast's cached weight copies, freed when it ends)"
        return None

    def _key(self, pipe, latents, conditions, num_branches, num_inference_steps, generator, num_groups) -> tuple:
        scheduler = pipe.scheduler
        weights = tuple(t.data_ptr() for t in (*pipe.prior.parameters(), *pipe.prior.buffers()))
        return (
            str(latents.device),
            str(latents.dtype),
            tuple(latents.shape),
            num_groups,
            isinstance(generator, list),
            num_branches,
            num_inference_steps,
            float(pipe.guidance_scale),
            float(pipe.image_guidance_scale),
            type(scheduler).__qualname__,
            json.dumps(dict(scheduler.config), sort_keys=True, default=str),
            _structure(conditions),
            id(pipe.prior),
            weights,
            torch.is_inference_mode_enabled(),  # buffers made under inference mode cannot be refilled outside it
        )

    def __call__(
        self,
        pipe,
        latents: torch.Tensor,
        conditions: dict,
        num_branches: int,
        num_inference_steps: int,
        generator=None,
        num_groups: int = 1,
    ) -> torch.Tensor | None:
        """
        The final latents of the denoising loop from `latents` (the scaled initial noise, `(rows, embedding_dim)`),
        or None when the pipeline must run its ordinary loop. Called by `CompoDiffPipeline.__call__`: `conditions`
        are the prior's keyword arguments for all guidance branches, `num_groups` the returned embeddings (the
        groups of a list of generators). The pipeline's scheduler must have been set to `num_inference_steps`.
        """
        reason = self._unsupported(pipe, latents)
        if reason is not None:
            return self._fall_back(reason)
        key = self._key(pipe, latents, conditions, num_branches, num_inference_steps, generator, num_groups)
        program = self._programs.get(key)
        if isinstance(program, str):
            self._programs.move_to_end(key)
            return self._fall_back(program, logging.WARNING)
        device, dtype = latents.device, latents.dtype
        if program is not None:
            self._programs.move_to_end(key)
            program.load(latents, self._draw(pipe, program.plan, latents, generator, num_groups), conditions)
            self.replays += 1
            return program.replay() if program.graph is not None else program.run(pipe).clone()

        try:
            # As the pipeline: a list of generators draws every step's noise when the scheduler takes it.
            noise_every_step = isinstance(generator, list) and "variance_noise" in _step_parameters(pipe.scheduler)
            plan = _probe_noise(pipe.scheduler, num_inference_steps, tuple(latents.shape), dtype, noise_every_step)
        except Exception as error:  # noqa: BLE001 - a scheduler that cannot run the probe: the ordinary loop runs
            plan = f"probing {type(pipe.scheduler).__name__}'s noise failed ({type(error).__name__}: {error})"
        if isinstance(plan, str):
            self._store(key, plan)
            return self._fall_back(plan, logging.WARNING)
        program = _SamplingProgram(pipe, pipe.scheduler, num_inference_steps, plan, latents, conditions, num_branches)
        states = _RandomStates(generator, device)
        program.load(latents, self._draw(pipe, plan, latents, generator, num_groups), conditions)
        self.captures += 1
        if self.backend == "eager":
            self._store(key, program)
            return program.run(pipe).clone()
        try:
            output = program.warm_up(pipe)
        except Exception as error:  # noqa: BLE001 - any failure of the copied program: the ordinary loop runs
            states.restore()
            reason = f"the program to capture failed to run ({type(error).__name__}: {error})"
            self._store(key, reason)
            return self._fall_back(reason, logging.WARNING)
        try:
            program.capture(pipe)
        except Exception as error:  # noqa: BLE001 - an operation that cannot be captured
            reason = f"capturing the loop failed ({type(error).__name__}: {error})"
            self._store(key, reason)
            self._fall_back(reason, logging.WARNING)
            return output
        self._store(key, program)
        return output

    def _store(self, key: tuple, program: _SamplingProgram | str) -> None:
        self._programs[key] = program
        while len(self._programs) > self.max_graphs:
            self._programs.popitem(last=False)

    @staticmethod
    def _draw(pipe, plan, latents, generator, num_groups) -> list[torch.Tensor | None]:
        """Each step's noise, drawn as the ordinary loop draws it (the same generator calls, in order)."""
        shape, device = tuple(latents.shape), latents.device
        return [None if d is None else pipe.randn_groups(shape, num_groups, generator, device, d) for d in plan]
