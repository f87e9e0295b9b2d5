"""Diffusers schedulers of hf-cir."""

from .scheduling_compodiff import CompoDiffScheduler, CompoDiffSchedulerOutput

__all__ = ["CompoDiffScheduler", "CompoDiffSchedulerOutput"]
