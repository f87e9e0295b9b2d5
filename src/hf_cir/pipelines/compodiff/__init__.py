"""CompoDiff as a diffusers pipeline."""

from . import model_card  # noqa: F401  (lets CompoDiffPipeline.push_to_hub render hf-cir's card)
from .pipeline_compodiff import CompoDiffPipeline, CompoDiffPipelineOutput

__all__ = ["CompoDiffPipeline", "CompoDiffPipelineOutput"]
