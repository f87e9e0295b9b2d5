"""The names of the retrieval methods, read from the model-family registry (`hf_cir.families`).

Kept apart from `models.py` (which needs torch) so that `hf-cir <command> --help` can list them without importing
any deep-learning library. What each method needs from a query is in `hf_cir.families.method_spec`.
"""

from ..families import BASELINE_METHODS, all_methods, get_model_family, method_spec

__all__ = ["BASELINE_METHODS", "METHODS", "REFERENCE_IMAGE_METHODS", "TEXTUAL_INVERSION_METHODS"]

# Every method: each family's own, then the baselines.
METHODS = all_methods()
# The methods whose query needs the reference image.
REFERENCE_IMAGE_METHODS = tuple(method for method in METHODS if method_spec(method).reference == "required")
# The LinCIR-family methods: one model class, the folder's `config.method_name` says which.
TEXTUAL_INVERSION_METHODS = tuple(spec.name for spec in get_model_family("lincir").methods)
