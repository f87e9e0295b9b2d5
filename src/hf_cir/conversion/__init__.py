"""Conversion of released checkpoints into hf-cir folders: `hf-cir convert lincir|compodiff|...` calls these modules.

Above the models in the layers: a conversion module imports models, schedulers, pipelines and `hf_cir.hub`, never the
other way round (like diffusers' `scripts/convert_*.py`).
"""
