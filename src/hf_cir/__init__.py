"""hf-cir: zero-shot composed image retrieval as native transformers and diffusers models.

Importing `hf_cir` registers LinCIR with the transformers Auto classes and imports every diffusers
component module, so that `from_pretrained` can resolve the classes recorded in saved folders.
"""

__version__ = "0.1.0.dev0"

# CompoDiff (diffusers: model, pipeline, scheduler) and LinCIR (transformers)
from .models.compodiff import CompoDiffPriorTransformer, CompoDiffPriorTransformerOutput
from .models.lincir import LinCIRConfig, LinCIRModel, LinCIROutput, LinCIRProcessor
from .pipelines.compodiff import CompoDiffPipeline, CompoDiffPipelineOutput
from .schedulers import CompoDiffScheduler, CompoDiffSchedulerOutput

__all__ = [
    "__version__",
    "CompoDiffPipeline",
    "CompoDiffPipelineOutput",
    "CompoDiffPriorTransformer",
    "CompoDiffPriorTransformerOutput",
    "CompoDiffScheduler",
    "CompoDiffSchedulerOutput",
    "LinCIRConfig",
    "LinCIRModel",
    "LinCIROutput",
    "LinCIRProcessor",
]
