"""Retrieval with composed queries: one interface for every model and method, gallery indexes, contact sheets.

The exact and approximate nearest-neighbour search itself lives in `hf_cir.retrieval.search` (and, compressed for
large galleries, `hf_cir.retrieval.compressed`); gallery inputs in `sources`, the sharded multi-process embedding
engine in `engine`, the index format v2 in `storage`.
"""

from ..utils.lazy import lazy_exports

_EXPORTS = {
    "make_contact_sheet": ".grid",
    "save_contact_sheet": ".grid",
    "GalleryIndex": ".index",
    "SearchHit": ".index",
    "list_image_files": ".sources",
    "BASELINE_METHODS": ".methods",
    "METHODS": ".methods",
    "REFERENCE_IMAGE_METHODS": ".methods",
    "TEXTUAL_INVERSION_METHODS": ".methods",
    "CompoDiffRetrievalModel": ".adapters.compodiff",
    "LinCIRRetrievalModel": ".adapters.lincir",
    "ComposedQuery": ".query",
    "Retrieval": ".query",
    "embed_queries": ".query",
    "retrieve": ".query",
    "RetrievalModel": ".models",
    "default_device": ".models",
    "detect_model_type": ".models",
    "detect_own_method": ".models",
    "load_retrieval_model": ".models",
    "ExactIndex": ".search",
    "FaissIndex": ".search",
    "DatasetSource": ".sources",
    "GallerySource": ".sources",
    "ImageFolderSource": ".sources",
    "WebDatasetSource": ".sources",
    "load_image_dataset": ".sources",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
