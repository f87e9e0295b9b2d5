"""The app turns on CompoDiff's bounded text-encoding cache (off by default in the library): repeated texts are
encoded once and the results do not change. In this process, no server."""

import pytest
import torch
from PIL import Image

from hf_cir.app.engine import APP_TEXT_CACHE_SIZE, Gallery, Query, SearchEngine, ServedIndex
from hf_cir.retrieval import GalleryIndex, load_retrieval_model
from hf_cir.toy import toy_checkpoint

COLOURS = {"red.png": (220, 30, 30), "green.png": (30, 200, 30), "blue.png": (30, 30, 220), "grey.png": (90, 90, 90)}


@pytest.fixture(scope="module")
def gallery_index(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cache-gallery")
    images = folder / "images"
    images.mkdir()
    for name, colour in COLOURS.items():
        Image.new("RGB", (32, 32), colour).save(images / name)
    model = load_retrieval_model(toy_checkpoint("compodiff"), device="cpu")
    GalleryIndex.build(model, images, folder / "compodiff.index", show_progress=False)
    return folder / "compodiff.index"


def compodiff_model(cache_size: int = 0):
    return load_retrieval_model(toy_checkpoint("compodiff"), device="cpu", text_cache_size=cache_size)


def engine_for(model, index_path) -> SearchEngine:
    return SearchEngine([Gallery("colours", [ServedIndex("compodiff", GalleryIndex.load(index_path), model)])])


def test_the_engine_caches_text_encodings_and_answers_the_same(gallery_index):
    model = compodiff_model()
    assert model.pipeline.text_encoding_cache is None  # off by default in the library
    engine = engine_for(model, gallery_index)
    cache = model.pipeline.text_encoding_cache
    assert cache is not None and cache.max_entries == APP_TEXT_CACHE_SIZE

    query = Query(text="make it blue", reference_id="red.png", methods=["compodiff"], top_k=4)
    first = engine.search(None, query)
    misses = cache.misses
    assert misses >= 1 and "make it blue" in cache
    again = engine.search(None, query)  # the same text: no new encoder pass
    assert cache.misses == misses and cache.hits >= 1
    other_settings = engine.search(
        None, Query(text="make it blue", reference_id="red.png", methods=["compodiff"], top_k=4, sampling={"seed": 3})
    )
    assert cache.misses == misses  # the per-query model shares the pipeline, hence the cache

    # An engine over a pipeline whose cache is turned off by hand answers exactly the same.
    uncached_model = compodiff_model()
    uncached = engine_for(uncached_model, gallery_index)
    uncached_model.pipeline.disable_text_encoding_cache()
    reference = uncached.search(None, query)
    reference_seed = uncached.search(
        None, Query(text="make it blue", reference_id="red.png", methods=["compodiff"], top_k=4, sampling={"seed": 3})
    )
    hits = lambda result: [(hit["id"], round(hit["score"], 5)) for hit in result["columns"]["compodiff"]["hits"]]  # noqa: E731
    assert hits(first) == hits(again) == hits(reference)
    assert hits(other_settings) == hits(reference_seed)


def test_a_model_with_its_own_cache_keeps_it(gallery_index):
    model = compodiff_model(cache_size=3)
    own = model.pipeline.text_encoding_cache
    engine_for(model, gallery_index)
    assert model.pipeline.text_encoding_cache is own and own.max_entries == 3
    with torch.no_grad():
        for text in ("a", "b", "c", "d"):
            model.pipeline.encode_prompt(text, "")
    assert len(own) == 3 and "a" not in own and "d" in own  # bounded: the least recently used went first
