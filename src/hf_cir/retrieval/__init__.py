"""Retrieval with composed queries: one interface for every model and method, gallery indexes, contact sheets.

The exact and approximate nearest-neighbour search itself lives in `hf_cir.retrieval.search`.
"""

from .embeddings import EmbeddingResult, embed_images
from .grid import make_contact_sheet, save_contact_sheet
from .index import GalleryIndex, SearchHit, list_image_files
from .models import (
    BASELINE_METHODS,
    METHODS,
    CompoDiffRetrievalModel,
    LinCIRRetrievalModel,
    RetrievalModel,
    default_device,
    detect_model_type,
    load_retrieval_model,
)
from .search import ExactIndex, FaissIndex

__all__ = [
    "BASELINE_METHODS",
    "METHODS",
    "CompoDiffRetrievalModel",
    "EmbeddingResult",
    "ExactIndex",
    "FaissIndex",
    "GalleryIndex",
    "LinCIRRetrievalModel",
    "RetrievalModel",
    "SearchHit",
    "default_device",
    "detect_model_type",
    "embed_images",
    "list_image_files",
    "load_retrieval_model",
    "make_contact_sheet",
    "save_contact_sheet",
]
