"""hf-cir: zero-shot composed image retrieval as native transformers and diffusers models.

Importing `hf_cir` registers LinCIR with the transformers Auto classes and imports every diffusers
component module, so that `from_pretrained` can resolve the classes recorded in saved folders.
"""

__version__ = "0.1.0.dev0"

# LinCIR (transformers)
# from .models.lincir import LinCIRConfig, LinCIRModel, LinCIROutput, LinCIRProcessor

# CompoDiff (diffusers)
# from .models.compodiff import CompoDiffPriorTransformer, CompoDiffPriorTransformerOutput
# from .schedulers import CompoDiffScheduler, CompoDiffSchedulerOutput
# from .pipelines.compodiff import CompoDiffPipeline, CompoDiffPipelineOutput

__all__ = ["__version__"]
