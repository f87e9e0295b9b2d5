"""Diffusers pipelines of hf-cir."""

from .compodiff import CompoDiffPipeline, CompoDiffPipelineOutput

__all__ = ["CompoDiffPipeline", "CompoDiffPipelineOutput"]
