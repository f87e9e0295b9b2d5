"""`hf-cir app`: composed search in the browser and over HTTP, on the toy default or your own galleries.

`hf_cir.app.engine` runs the queries (no gradio needed); `hf_cir.app.server` builds the Gradio page and API
(`pip install hf-cir[app]`).
"""

from .engine import Query, SearchEngine, load_toy_engine

__all__ = ["Query", "SearchEngine", "load_toy_engine"]
