# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
#
# This file imports only torch, numpy and diffusers: it is also the `scheduler/scheduling_compodiff.py` of the Hub
# remote-code layout (see pipelines/compodiff/README.md), so it must stay self-contained.
"""The sampler of CompoDiff: DDIM with eta on a cosine schedule, on the reference implementation's timestep grid."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

__all__ = ["CompoDiffScheduler", "CompoDiffSchedulerOutput"]


@dataclass
class CompoDiffSchedulerOutput(BaseOutput):
    """
    Output of [`CompoDiffScheduler.step`].

    Args:
        prev_sample (`torch.Tensor` of the sample's shape):
            The sample at the next (less noisy) timestep; at the last step, the predicted clean sample.
        pred_original_sample (`torch.Tensor` of the sample's shape):
            The predicted clean sample x_0 (the model's output: CompoDiff predicts the sample).
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor


def cosine_beta_schedule(num_train_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Betas of the cosine schedule (Nichol & Dhariwal 2021, eq. 17), computed in float64 and clipped at `max_beta`."""
    steps = torch.linspace(0, num_train_timesteps, num_train_timesteps + 1, dtype=torch.float64)
    alphas_cumprod = torch.cos(((steps / num_train_timesteps) + s) / (1 + s) * math.pi * 0.5) ** 2
    alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
    return torch.clip(1 - (alphas_cumprod[1:] / alphas_cumprod[:-1]), 0, max_beta)


# The config keys that every compatible scheduler must read from this one's config (see `__init__`).
MODEL_CONFIG_KEYS = ("num_train_timesteps", "beta_schedule", "prediction_type", "clip_sample")


class CompoDiffScheduler(SchedulerMixin, ConfigMixin):
    """
    The sampler of the CompoDiff reference implementation (navervision/CompoDiff), for a model that predicts the
    clean sample x_0: DDIM (Song et al. 2021, eq. 12) with `eta`, on a cosine noise schedule.

    It reproduces the reference numerics exactly:
    - The schedule is computed in float64 and stored in float32, as the reference's buffers are.
    - The timestep grid: `num_inference_steps=n` takes `linspace(-1, num_train_timesteps, n + 1)` without its last
      value, truncated to integers and reversed. For `n=10` that is 899, 799, ..., 99, -1: the model runs at
      the 9 timesteps 899, ..., 99 (these are `self.timesteps`) and the step at 99 jumps to the predicted x_0.
      (`num_inference_steps=1` would give no model evaluation on that grid; here it runs the model once, at
      `num_train_timesteps - 1`, and returns its x_0 prediction.)
    - The update from t to the next timestep t' uses `a = alphas_cumprod_prev[t]` and `a' = alphas_cumprod_prev[t']`
      for the DDIM coefficients, and `sqrt(1 / alphas_cumprod[t])`, `sqrt(1 / alphas_cumprod[t] - 1)` for the noise
      estimate: the reference mixes the two schedules, shifted by one step, and so does this scheduler.
    - Noise is drawn with `generator` after every model evaluation except the last (and none when t' is 0).

    `compatibles` lists the diffusers schedulers that run CompoDiff when made with
    `Scheduler.from_config(pipe.scheduler.config)` (this config carries `prediction_type="sample"`, the cosine
    schedule and `clip_sample=False`, which they read); they sample on their own grids, so their results differ
    from the reference's.

    Parameters:
        num_train_timesteps (`int`, *optional*, defaults to 1000): The number of diffusion steps of training.
        beta_schedule (`str`, *optional*, defaults to `"squaredcos_cap_v2"`):
            The noise schedule; only the cosine schedule (`"squaredcos_cap_v2"`, diffusers' name) is supported.
        trained_betas (`np.ndarray` or `list[float]`, *optional*):
            Betas to use instead of the cosine schedule, one per training timestep (`num_train_timesteps` of them).
        cosine_s (`float`, *optional*, defaults to 0.008): The offset `s` of the cosine schedule.
        max_beta (`float`, *optional*, defaults to 0.999): Betas are clipped at this value.
        eta (`float`, *optional*, defaults to 1.0): The DDIM noise weight (1.0 in the reference; 0.0 is
            deterministic DDIM).
        prediction_type (`str`, *optional*, defaults to `"sample"`): What the model predicts; only `"sample"`.
        clip_sample (`bool`, *optional*, defaults to `False`):
            Clamp the predicted x_0 to `[-clip_sample_range, clip_sample_range]` (as diffusers' DDIM does). CLIP
            embeddings are not bounded, so the reference does not clamp.
        clip_sample_range (`float`, *optional*, defaults to 1.0): The bound of `clip_sample`.

    Example:

    ```python
    >>> import torch
    >>> from hf_cir import CompoDiffScheduler

    >>> scheduler = CompoDiffScheduler()
    >>> scheduler.set_timesteps(10)
    >>> scheduler.timesteps.tolist()
    [899, 799, 699, 599, 499, 399, 299, 199, 99]
    >>> generator = torch.Generator().manual_seed(0)
    >>> sample = torch.randn(2, 8, generator=generator)
    >>> for t in scheduler.timesteps:
    ...     predicted_clean = torch.zeros_like(sample)  # a model's x_0 prediction
    ...     sample = scheduler.step(predicted_clean, t, sample, generator=generator).prev_sample
    >>> sample.abs().max().item()
    0.0

    ```
    """

    # DDIM, and the multistep ODE solvers whose `prediction_type="sample"` path solves the same probability-flow ODE
    # from an x_0 prediction (two-scale guidance is a linear combination of x_0 predictions, itself one); checked in
    # tests/schedulers (they converge to DDIM's eta=0 solution) and measured in benchmarks/bench_compodiff_quality.py.
    _compatibles = [
        "DDIMScheduler",
        "DPMSolverMultistepScheduler",
        "DPMSolverSinglestepScheduler",
        "UniPCMultistepScheduler",
        "DEISMultistepScheduler",
    ]
    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_schedule: str = "squaredcos_cap_v2",
        trained_betas: np.ndarray | list[float] | None = None,
        cosine_s: float = 0.008,
        max_beta: float = 0.999,
        eta: float = 1.0,
        prediction_type: str = "sample",
        clip_sample: bool = False,
        clip_sample_range: float = 1.0,
    ):
        if not isinstance(num_train_timesteps, int) or num_train_timesteps < 1:
            raise ValueError(f"`num_train_timesteps` must be a positive integer, got {num_train_timesteps!r}.")
        if beta_schedule != "squaredcos_cap_v2":
            raise ValueError(f"`beta_schedule` must be 'squaredcos_cap_v2' (cosine), got {beta_schedule!r}.")
        if prediction_type != "sample":
            raise ValueError(f"`prediction_type` must be 'sample' (CompoDiff predicts x_0), got {prediction_type!r}.")
        if eta < 0:
            raise ValueError(f"`eta` must be >= 0, got {eta}.")
        if clip_sample_range <= 0:
            raise ValueError(f"`clip_sample_range` must be > 0, got {clip_sample_range}.")
        # `Scheduler.from_config(config)` gives another scheduler its own defaults for every key that was left at
        # its default here (the config's `_use_default_values`). These keys describe the model, not a preference
        # of this scheduler, so they always carry over (a DDIM made from this config must predict the sample).
        if "_use_default_values" in self.config:
            unpinned = [k for k in self.config["_use_default_values"] if k not in MODEL_CONFIG_KEYS]
            self.register_to_config(_use_default_values=unpinned)

        if trained_betas is None:
            betas = cosine_beta_schedule(num_train_timesteps, cosine_s, max_beta)
        else:
            betas = torch.as_tensor(np.asarray(trained_betas, dtype=np.float64))
            if betas.shape != (num_train_timesteps,) or not bool(((betas > 0) & (betas < 1)).all()):
                raise ValueError(
                    f"`trained_betas` must hold {num_train_timesteps} values in (0, 1) (one per training timestep, "
                    f"`num_train_timesteps`), got shape {tuple(betas.shape)}."
                )
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        alphas_cumprod_prev = torch.cat((torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]))
        # float64 -> float32, as the reference stores its buffers.
        self.betas = betas.float()
        self.alphas_cumprod = alphas_cumprod.float()
        self.alphas_cumprod_prev = alphas_cumprod_prev.float()
        self.sqrt_alphas_cumprod = alphas_cumprod.sqrt().float()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - alphas_cumprod).sqrt().float()
        self.sqrt_recip_alphas_cumprod = (1.0 / alphas_cumprod).sqrt().float()
        self.sqrt_recipm1_alphas_cumprod = (1.0 / alphas_cumprod - 1).sqrt().float()

        self.init_noise_sigma = 1.0
        self.num_inference_steps = None
        self.timesteps = torch.arange(num_train_timesteps - 1, -1, -1, dtype=torch.int64)
        self.next_timesteps = self.timesteps - 1

    # Defined after `__init__`, whose `@register_to_config` is diffusers' decorator of the same name.
    def register_to_config(self, **kwargs):
        # diffusers records the settings left at their defaults as `list(set(...))`, whose order changes from one
        # process to the next (string hashing): sorted, a config survives a round trip through a compatible
        # scheduler (`Compatible.from_config(config)`, then back) unchanged, as diffusers' `test_compatibles` expects.
        if isinstance(kwargs.get("_use_default_values"), list):
            kwargs["_use_default_values"] = sorted(kwargs["_use_default_values"])
        super().register_to_config(**kwargs)

    def scale_model_input(self, sample: torch.Tensor, timestep: int | None = None) -> torch.Tensor:
        """No scaling is needed: returns `sample`."""
        return sample

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None):
        """
        Set the timestep grid of the reference sampler (see the class docstring).

        Args:
            num_inference_steps (`int`): Between 1 and `num_train_timesteps`; `n` gives `n - 1` model evaluations
                (one when `n` is 1).
            device (`str` or `torch.device`, *optional*): Where to put `self.timesteps`.
        """
        total = self.config.num_train_timesteps
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int):
            raise ValueError(f"`num_inference_steps` must be an integer, got {num_inference_steps!r}.")
        if not 1 <= num_inference_steps <= total:
            raise ValueError(
                f"`num_inference_steps` must be between 1 and the training timesteps ({total}), got "
                f"{num_inference_steps}."
            )
        if num_inference_steps == 1:
            grid = [total - 1, -1]
        else:
            # float32 linspace, truncated to integers, as the reference does.
            grid = torch.linspace(-1.0, total, steps=num_inference_steps + 1)[:-1].int().tolist()[::-1]
        self.num_inference_steps = num_inference_steps
        self.timesteps = torch.tensor(grid[:-1], dtype=torch.int64, device=device)
        self.next_timesteps = torch.tensor(grid[1:], dtype=torch.int64, device=device)

    def _next_timestep(self, timestep: int) -> int:
        matches = (self.timesteps == timestep).nonzero()
        if len(matches) == 0:
            raise ValueError(
                f"Timestep {timestep} is not in the grid {self.timesteps.tolist()}; call `set_timesteps`."
            )
        return int(self.next_timesteps[matches[0, 0]])

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        variance_noise: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> CompoDiffSchedulerOutput | tuple[torch.Tensor, torch.Tensor]:
        """
        One DDIM step from `timestep` to the next timestep of the grid.

        Args:
            model_output (`torch.Tensor`): The model's prediction of the clean sample x_0.
            timestep (`int` or `torch.Tensor`): The current timestep (an element of `self.timesteps`).
            sample (`torch.Tensor`): The current noisy sample x_t.
            generator (`torch.Generator` or a list of them, *optional*): Draws the step's noise.
            variance_noise (`torch.Tensor`, *optional*): The noise to use instead of drawing it.
            return_dict (`bool`, *optional*, defaults to `True`): Return a [`CompoDiffSchedulerOutput`], else a tuple.
        """
        if self.num_inference_steps is None:
            raise ValueError("Call `set_timesteps` before `step`.")
        t = int(timestep)
        t_next = self._next_timestep(t)
        pred_original_sample = model_output
        if self.config.clip_sample:
            bound = self.config.clip_sample_range
            pred_original_sample = pred_original_sample.clamp(-bound, bound)
        if t_next < 0:
            prev_sample = pred_original_sample
        else:
            dtype = sample.dtype
            alpha = self.alphas_cumprod_prev[t]
            alpha_next = self.alphas_cumprod_prev[t_next]
            # Noise implied by x_t and the model's x_0 (unclamped, as in DDIM):
            # eps = (sqrt(1/abar_t) x_t - x_0) / sqrt(1/abar_t - 1).
            pred_epsilon = (self.sqrt_recip_alphas_cumprod[t].to(dtype) * sample - model_output) / (
                self.sqrt_recipm1_alphas_cumprod[t].to(dtype)
            )
            # DDIM (Song et al. 2021, eq. 12 and 16) in the reference's form: sigma = c1 (eta-scaled), and
            # c2 = sqrt(1 - a' - sigma^2) weighs the noise estimate.
            c1 = self.config.eta * ((1 - alpha / alpha_next) * (1 - alpha_next) / (1 - alpha)).sqrt()
            c2 = ((1 - alpha_next) - torch.square(c1)).sqrt()
            prev_sample = pred_original_sample * alpha_next.sqrt().to(dtype)
            if t_next > 0:  # the reference draws no noise for a step that lands on t = 0
                if variance_noise is None:
                    variance_noise = randn_tensor(
                        model_output.shape, generator=generator, device=model_output.device, dtype=dtype
                    )
                prev_sample = prev_sample + c1.to(dtype) * variance_noise
            prev_sample = prev_sample + c2.to(dtype) * pred_epsilon
        if not return_dict:
            return (prev_sample, pred_original_sample)
        return CompoDiffSchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original_sample)

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """
        Diffuse clean samples to `timesteps` for training: `sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise` (Ho et al.
        2020, eq. 4), with the same float32 tables as the reference's `q_sample`.
        """
        timesteps = torch.as_tensor(timesteps, device=original_samples.device).long()
        if timesteps.numel() and (timesteps.min() < 0 or timesteps.max() >= self.config.num_train_timesteps):
            raise ValueError(
                f"`timesteps` must lie in [0, {self.config.num_train_timesteps}), got {timesteps.tolist()}."
            )
        shape = (-1,) + (1,) * (original_samples.ndim - 1)
        dtype, device = original_samples.dtype, original_samples.device
        sqrt_alpha = self.sqrt_alphas_cumprod.to(device)[timesteps].to(dtype).reshape(shape)
        sqrt_one_minus_alpha = self.sqrt_one_minus_alphas_cumprod.to(device)[timesteps].to(dtype).reshape(shape)
        return sqrt_alpha * original_samples + sqrt_one_minus_alpha * noise

    def __len__(self) -> int:
        return self.config.num_train_timesteps
