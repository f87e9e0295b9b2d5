"""Benchmarks of composed image retrieval (CIRR, CIRCO, FashionIQ, GeneCIS, the toy world) and their metrics."""

from .base import Benchmark, CIRQuery, EmbeddingTable
from .circo import CIRCOBenchmark
from .cirr import CIRRBenchmark
from .evaluate import EvaluationResult, default_cache_dir, encode_benchmark_queries, evaluate
from .fashioniq import FashionIQBenchmark
from .genecis import GeneCISBenchmark
from .model_card import update_model_card
from .registry import BENCHMARKS, get_benchmark, get_benchmark_class, register_benchmark

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "CIRCOBenchmark",
    "CIRQuery",
    "CIRRBenchmark",
    "EmbeddingTable",
    "EvaluationResult",
    "FashionIQBenchmark",
    "GeneCISBenchmark",
    "default_cache_dir",
    "encode_benchmark_queries",
    "evaluate",
    "get_benchmark",
    "get_benchmark_class",
    "register_benchmark",
    "update_model_card",
]
