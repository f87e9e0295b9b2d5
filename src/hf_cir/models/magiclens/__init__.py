"""MagicLens (Zhang et al., ICML 2024) as a transformers model: config, model, image processor, processor.

Importing this package registers MagicLens with `AutoConfig`, `AutoModel`, `AutoImageProcessor` and `AutoProcessor`, and
marks the classes for remote code so that `save_pretrained` writes an `auto_map` with copies of the modeling files.
"""

from transformers import CONFIG_MAPPING, AutoConfig, AutoImageProcessor, AutoModel, AutoProcessor

from .configuration_magiclens import MagicLensConfig
from .modeling_magiclens import MagicLensModel, MagicLensOutput, MagicLensPreTrainedModel, normalize_embeds
from .processing_magiclens import MagicLensImageProcessor, MagicLensProcessor, clean_text


def _register() -> None:
    if MagicLensConfig.model_type in CONFIG_MAPPING:
        registered = CONFIG_MAPPING[MagicLensConfig.model_type]
        if registered.__name__ != MagicLensConfig.__name__ or not registered.__module__.startswith(__name__):
            raise ImportError(
                f"transformers already defines model_type {MagicLensConfig.model_type!r} ({registered.__module__}."
                f"{registered.__name__}); hf-cir cannot register MagicLens under the same name."
            )
    AutoConfig.register(MagicLensConfig.model_type, MagicLensConfig, exist_ok=True)
    AutoModel.register(MagicLensConfig, MagicLensModel, exist_ok=True)
    AutoImageProcessor.register(MagicLensConfig, slow_image_processor_class=MagicLensImageProcessor, exist_ok=True)
    AutoProcessor.register(MagicLensConfig, MagicLensProcessor, exist_ok=True)
    MagicLensConfig.register_for_auto_class("AutoConfig")
    MagicLensModel.register_for_auto_class("AutoModel")
    MagicLensImageProcessor.register_for_auto_class("AutoImageProcessor")
    MagicLensProcessor.register_for_auto_class("AutoProcessor")


_register()

__all__ = [
    "MagicLensConfig",
    "MagicLensImageProcessor",
    "MagicLensModel",
    "MagicLensOutput",
    "MagicLensPreTrainedModel",
    "MagicLensProcessor",
    "clean_text",
    "normalize_embeds",
]
