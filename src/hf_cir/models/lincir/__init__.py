"""LinCIR (Gu et al., CVPR 2024) as a transformers model: config, model, processor.

Importing this package registers LinCIR with `AutoConfig`, `AutoModel` and `AutoProcessor`, and marks the classes for
remote code so that `save_pretrained` writes an `auto_map` with copies of the (self-contained) modeling files.
"""

from transformers import CONFIG_MAPPING, AutoConfig, AutoModel, AutoProcessor

from .configuration_lincir import LinCIRConfig
from .modeling_lincir import LinCIRModel, LinCIROutput, LinCIRPreTrainedModel
from .processing_lincir import LinCIRProcessor, get_placeholder_token_id


def _register() -> None:
    if LinCIRConfig.model_type in CONFIG_MAPPING:
        registered = CONFIG_MAPPING[LinCIRConfig.model_type]
        if registered.__name__ != LinCIRConfig.__name__ or not registered.__module__.startswith(__name__):
            raise ImportError(
                f"transformers already defines model_type {LinCIRConfig.model_type!r} ({registered.__module__}."
                f"{registered.__name__}); hf-cir cannot register LinCIR under the same name."
            )
    AutoConfig.register(LinCIRConfig.model_type, LinCIRConfig, exist_ok=True)
    AutoModel.register(LinCIRConfig, LinCIRModel, exist_ok=True)
    AutoProcessor.register(LinCIRConfig, LinCIRProcessor, exist_ok=True)
    LinCIRConfig.register_for_auto_class("AutoConfig")
    LinCIRModel.register_for_auto_class("AutoModel")
    LinCIRProcessor.register_for_auto_class("AutoProcessor")


_register()

__all__ = [
    "LinCIRConfig",
    "LinCIRModel",
    "LinCIROutput",
    "LinCIRPreTrainedModel",
    "LinCIRProcessor",
    "get_placeholder_token_id",
]
