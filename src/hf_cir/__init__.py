"""hf-cir: zero-shot composed image retrieval as native transformers and diffusers models.

The classes load on first use (`from hf_cir import LinCIRModel`), so `import hf_cir` and `hf-cir --help` stay fast.
`import hf_cir` registers the model families' classes with the transformers Auto classes (`AutoConfig`,
`AutoModel`, `AutoProcessor`) as soon as transformers loads them (`hf_cir.utils.auto_classes`), so
`AutoModel.from_pretrained(folder)` returns hf-cir's LinCIR (also for SEARLE and Pic2Word folders) without
`trust_remote_code`. Importing CompoDiff's classes imports every diffusers component module, so that
`from_pretrained` resolves the classes recorded in saved folders. `import hf_cir.models` does both at once.
"""

from .utils.auto_classes import install_auto_class_registration
from .utils.lazy import lazy_exports

__version__ = "0.1.0.dev0"

_EXPORTS = {
    "CompoDiffPriorTransformer": ".models.compodiff",
    "CompoDiffPriorTransformerOutput": ".models.compodiff",
    "LinCIRConfig": ".models.lincir",
    "LinCIRModel": ".models.lincir",
    "LinCIROutput": ".models.lincir",
    "LinCIRProcessor": ".models.lincir",
    "MagicLensConfig": ".models.magiclens",
    "MagicLensModel": ".models.magiclens",
    "MagicLensOutput": ".models.magiclens",
    "MagicLensProcessor": ".models.magiclens",
    "CompoDiffPipeline": ".pipelines.compodiff",
    "CompoDiffPipelineOutput": ".pipelines.compodiff",
    "CompoDiffScheduler": ".schedulers",
    "CompoDiffSchedulerOutput": ".schedulers",
}
__all__ = ["__version__", *sorted(_EXPORTS)]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

install_auto_class_registration()
