"""CompoDiff's denoiser as a diffusers model, and the conversion of the released checkpoints."""

from .modeling_compodiff import CompoDiffPriorContext, CompoDiffPriorTransformer, CompoDiffPriorTransformerOutput

__all__ = ["CompoDiffPriorContext", "CompoDiffPriorTransformer", "CompoDiffPriorTransformerOutput"]
