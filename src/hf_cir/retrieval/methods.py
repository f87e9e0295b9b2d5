"""The names of the retrieval methods: the one list every command, the evaluation and the app use.

Kept apart from `models.py` (which needs torch) so that `hf-cir <command> --help` can list them without importing
any deep-learning library.
"""

__all__ = ["BASELINE_METHODS", "METHODS", "REFERENCE_IMAGE_METHODS", "TEXTUAL_INVERSION_METHODS"]

BASELINE_METHODS = ("image", "text", "sum")
# The LinCIR-family methods: one model class, the folder's `config.method_name` says which.
TEXTUAL_INVERSION_METHODS = ("lincir", "searle", "pic2word")
METHODS = TEXTUAL_INVERSION_METHODS + ("compodiff",) + BASELINE_METHODS
# The methods whose query needs the reference image.
REFERENCE_IMAGE_METHODS = TEXTUAL_INVERSION_METHODS + ("image", "sum")
