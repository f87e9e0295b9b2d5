"""The models of hf-cir. Importing this package registers LinCIR with the transformers Auto classes and imports
CompoDiff's prior, which `from_pretrained` needs to resolve saved folders."""

from . import compodiff, lincir, magiclens  # noqa: F401
