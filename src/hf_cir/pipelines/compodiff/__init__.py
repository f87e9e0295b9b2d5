"""CompoDiff as a diffusers pipeline.

Importing it also imports the prior and scheduler modules, which diffusers needs to resolve the classes that saved
folders record (`hf_cir.models.compodiff.modeling_compodiff`, `hf_cir.schedulers.scheduling_compodiff`).
"""

from ...models.compodiff import modeling_compodiff  # noqa: F401
from ...schedulers import scheduling_compodiff  # noqa: F401
from .pipeline_compodiff import CompoDiffPipeline, CompoDiffPipelineOutput, binarize_mask, preprocess_mask

__all__ = ["CompoDiffPipeline", "CompoDiffPipelineOutput", "binarize_mask", "preprocess_mask"]
