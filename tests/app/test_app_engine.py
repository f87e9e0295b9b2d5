"""The app's engine in this process: user galleries from index folders, masks from strokes, input checks."""

import pytest
from PIL import Image

from hf_cir import CompoDiffPipeline
from hf_cir.app.engine import Query, SearchEngine, mask_from_strokes
from hf_cir.toy import toy_checkpoint


@pytest.fixture(scope="module")
def engine(app_server):
    """The toy indexes the server wrote, opened as a user's galleries (each with the model its index names and
    that model's own sampling defaults, as the served toy default)."""
    folder = app_server.cache_dir
    return SearchEngine.from_folders([folder / "lincir.index", folder / "compodiff.index"], device="cpu")


def test_indexes_of_one_folder_form_one_gallery(engine, app_server):
    assert list(engine.galleries) == ["images"]
    gallery = engine.gallery(None)
    assert gallery.root == (app_server.cache_dir / "images").resolve()
    assert list(gallery.columns) == ["lincir", "compodiff", "image", "text", "sum"]
    assert gallery.columns["sum"].served.name == "lincir"  # the baselines use CLIP's own text tower
    pipe = CompoDiffPipeline.from_pretrained(toy_checkpoint("compodiff"))
    assert engine.sampling_defaults()["guidance_scale"] == pipe.default_guidance_scale  # the checkpoint's own


def test_a_user_gallery_answers_like_the_served_toy_default(engine, client):
    query = {"reference_id": "large-green-star-top-dotted.png", "text": "make it red", "top_k": 10}
    served = client.predict(methods=["lincir", "compodiff"], api_name="/search", **query)
    local = engine.search(None, Query(methods=["lincir", "compodiff"], **query))
    for key in ("lincir", "compodiff"):
        assert [hit["id"] for hit in local["columns"][key]["hits"]] == [
            hit["id"] for hit in served["columns"][key]["hits"]
        ]


def test_models_must_match_the_indexes(app_server):
    folder = app_server.cache_dir
    with pytest.raises(ValueError, match="embeds images differently from every --model"):
        SearchEngine.from_folders([folder / "compodiff.index"], [toy_checkpoint("lincir")], device="cpu")
    with pytest.raises(ValueError, match="queries none of the indexes"):
        SearchEngine.from_folders(
            [folder / "lincir.index"], [toy_checkpoint("lincir"), toy_checkpoint("compodiff")], device="cpu"
        )


def test_query_checks(engine):
    image_id = "large-green-star-top-dotted.png"
    with pytest.raises(ValueError, match="not an image of the gallery"):
        engine.search(None, Query(text="make it red", reference_id="../../etc/passwd"))
    with pytest.raises(ValueError, match="either as an image or as `reference_id`"):
        engine.search(None, Query(text="x", reference_id=image_id, image=Image.new("RGB", (32, 32))))
    with pytest.raises(ValueError, match=r"`num_inference_steps` must be an integer in \[1, 100\]"):
        engine.search(
            None, Query(text="x", reference_id=image_id, methods=["compodiff"], sampling={"num_inference_steps": 0})
        )
    with pytest.raises(ValueError, match=r"`source_weight` must be in \[0, 1\]"):
        engine.search(
            None, Query(text="x", reference_id=image_id, methods=["compodiff"], sampling={"source_weight": 2.0})
        )
    with pytest.raises(ValueError, match="only CompoDiff takes a mask"):
        engine.search(None, Query(text="x", reference_id=image_id, methods=["lincir"], mask=Image.new("L", (32, 32))))
    with pytest.raises(ValueError, match=r"`top_k` must be an integer in \[1, 100\], got 0"):
        engine.search(None, Query(text="x", reference_id=image_id, top_k=0))
    with pytest.raises(ValueError, match=r"`top_k` must be an integer in \[1, 100\], got 2.0"):
        engine.search(None, Query(text="x", reference_id=image_id, top_k=2.0))
    with pytest.raises(ValueError, match="`text`: 5,000 characters, more than the 1,000 accepted"):
        engine.search(None, Query(text="x" * 5000, reference_id=image_id))
    with pytest.raises(ValueError, match=r"`reference image` is 8000x8000 = 64,000,000 pixels, more than the"):
        engine.search(None, Query(text="x", image=Image.new("1", (8000, 8000)), methods=["lincir"]))


def test_sampling_settings_apply_to_one_query_only(engine):
    image_id = "large-green-star-top-dotted.png"
    default = engine.search(None, Query(text="make it red", reference_id=image_id, methods=["compodiff"]))
    mixed = engine.search(
        None, Query(text="make it red", reference_id=image_id, methods=["compodiff"], sampling={"source_weight": 1.0})
    )
    again = engine.search(None, Query(text="make it red", reference_id=image_id, methods=["compodiff"]))
    assert mixed["columns"]["compodiff"]["sampling"]["source_weight"] == 1.0
    assert mixed["columns"]["compodiff"]["hits"] != default["columns"]["compodiff"]["hits"]
    assert again["columns"]["compodiff"]["hits"] == default["columns"]["compodiff"]["hits"]


def test_mask_from_strokes():
    assert mask_from_strokes([Image.new("RGBA", (8, 8), (0, 0, 0, 0))], (8, 8)) is None
    first = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    first.paste((255, 0, 255, 255), (0, 0, 4, 8))
    second = Image.new("RGBA", (16, 16), (0, 0, 0, 0))  # another size: scaled to the reference
    second.paste((10, 10, 10, 40), (8, 8, 16, 16))
    mask = mask_from_strokes([first, second], (8, 8))
    assert mask.mode == "L" and mask.size == (8, 8)
    assert mask.getpixel((0, 0)) == 255 and mask.getpixel((7, 7)) == 255 and mask.getpixel((5, 1)) == 0


def test_the_toy_default_takes_the_sampling_options(app_server, monkeypatch):
    # `hf-cir app --preset interactive --num-inference-steps 4` (no --index): the served toy CompoDiff samples so.
    import hf_cir.app.server
    from hf_cir.cli import main

    served = {}
    monkeypatch.setattr(hf_cir.app.server, "launch_app", lambda engine, **kwargs: served.update(engine=engine))
    argv = ["app", "--cache-dir", str(app_server.cache_dir), "--preset", "interactive", "--num-inference-steps", "4"]
    assert main(argv) == 0
    columns = served["engine"].gallery(None).columns
    pipe = columns["compodiff"].served.model.pipeline
    assert type(pipe.scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert pipe.scheduler.config.algorithm_type == "sde-dpmsolver++"
    assert served["engine"].sampling_defaults()["num_inference_steps"] == 4
    assert served["engine"].sampling_defaults()["guidance_scale"] == pipe.default_guidance_scale  # not overridden
    assert (
        pipe.default_guidance_scale
        == CompoDiffPipeline.from_pretrained(toy_checkpoint("compodiff")).config["default_guidance_scale"]
    )  # the checkpoint's own
    image_id = "large-green-star-top-dotted.png"
    result = served["engine"].search(None, Query(text="make it red", reference_id=image_id, methods=["compodiff"]))
    assert len(result["columns"]["compodiff"]["hits"]) > 0


def test_an_uploaded_gallery_picture_is_left_out_and_encoded_once_per_index(engine):
    gallery = engine.gallery(None)
    image_id = "large-green-star-top-dotted.png"
    upload = Image.open(gallery.root / image_id).convert("RGB")
    served = {column.served.name: column.served for column in gallery.columns.values()}
    before = {name: s.model.encode_image_calls for name, s in served.items()}
    result = engine.search(None, Query(image=upload, text="make it red", methods=["lincir", "sum", "image"], top_k=10))
    assert result["query"]["excluded"] == image_id
    for key in ("lincir", "sum", "image"):
        assert image_id not in [hit["id"] for hit in result["columns"][key]["hits"]]
    # The same-picture check and the three LinCIR-index columns share one encoder pass of the upload.
    assert served["lincir"].model.encode_image_calls - before["lincir"] == 1
