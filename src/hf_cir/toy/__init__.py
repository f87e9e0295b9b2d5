"""The toy world: procedural images, captions and composed queries, and the tiny models trained on them.

It is the embedded default of hf-cir: `hf-cir demo` and `hf-cir evaluate --benchmark toy` run on the
checkpoints shipped in `hf_cir/toy/checkpoints/`, which `make toy-models` (`training/toy/build_toy_models.py`, in a
checkout) retrains.
"""

from .benchmark import ToyBenchmark
from .checkpoints import default_checkpoints_dir, toy_checkpoint
from .world import ATTRIBUTES, NUM_NEIGHBOURS, ToyAttributes, ToyQuery, ToyTriplet, ToyWorld, toy_vocabulary

__all__ = [
    "ATTRIBUTES",
    "NUM_NEIGHBOURS",
    "ToyAttributes",
    "ToyBenchmark",
    "ToyQuery",
    "ToyTriplet",
    "ToyWorld",
    "default_checkpoints_dir",
    "toy_checkpoint",
    "toy_vocabulary",
]
