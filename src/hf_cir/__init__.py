"""hf-cir: zero-shot composed image retrieval as native transformers and diffusers models.

The classes load on first use (`from hf_cir import LinCIRModel`), so `import hf_cir` and `hf-cir --help` stay fast.
Importing LinCIR's classes registers LinCIR with the transformers Auto classes; importing CompoDiff's imports every
diffusers component module, so that `from_pretrained` resolves the classes recorded in saved folders.
`import hf_cir.models` does both at once.
"""

from .utils.lazy import lazy_exports

__version__ = "0.1.0.dev0"

_EXPORTS = {
    "CompoDiffPriorTransformer": ".models.compodiff",
    "CompoDiffPriorTransformerOutput": ".models.compodiff",
    "LinCIRConfig": ".models.lincir",
    "LinCIRModel": ".models.lincir",
    "LinCIROutput": ".models.lincir",
    "LinCIRProcessor": ".models.lincir",
    "CompoDiffPipeline": ".pipelines.compodiff",
    "CompoDiffPipelineOutput": ".pipelines.compodiff",
    "CompoDiffScheduler": ".schedulers",
    "CompoDiffSchedulerOutput": ".schedulers",
}
__all__ = ["__version__", *sorted(_EXPORTS)]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
