"""Numbers and paths are checked where they enter: stored index paths, embedding matrices, index metadata, NaN
inputs of the models and the pipeline, empty texts, masks without images, non-finite pixel arrays."""

import numpy as np
import pytest
import torch

from hf_cir.retrieval.validation import (
    check_embedding_matrix,
    check_index_metadata,
    check_relative_path,
    check_stored_paths,
    resolve_inside,
)


@pytest.mark.parametrize(
    "value, message",
    [
        ("../x.png", "leaves the image root"),
        ("a/../../x.png", "leaves the image root"),
        ("/etc/passwd", "absolute"),
        ("C:\\photos\\x.png", "absolute"),
        ("a//b.png", "not a normalised"),
        ("./a.png", "not a normalised"),
        ("", "expected a relative path"),
        (3, "int"),
        (None, "NoneType"),
    ],
)
def test_stored_paths_must_be_relative_and_normalised(value, message):
    with pytest.raises(ValueError, match=message):
        check_relative_path(value, "index.json entry 7 of 'paths'")


def test_stored_paths_name_the_entry_and_refuse_repeats():
    assert check_stored_paths(["a.png", "b/c.png"], "index.json") == ["a.png", "b/c.png"]
    with pytest.raises(ValueError, match=r"index\.json entry 1 of 'paths'"):
        check_stored_paths(["a.png", "../b.png"], "index.json")
    with pytest.raises(ValueError, match="entry 2 of 'paths': 'a.png' repeats entry 0"):
        check_stored_paths(["a.png", "b.png", "a.png"], "index.json")
    with pytest.raises(ValueError, match="must be a list"):
        check_stored_paths({"a.png": 1}, "index.json")


def test_links_out_of_the_root_are_refused(tmp_path):
    (tmp_path / "root").mkdir()
    (tmp_path / "secret.png").write_bytes(b"x")
    (tmp_path / "root" / "link.png").symlink_to(tmp_path / "secret.png")
    assert resolve_inside(tmp_path / "root", "a.png", "e") == (tmp_path / "root" / "a.png").resolve()
    with pytest.raises(ValueError, match="outside the image root"):
        resolve_inside(tmp_path / "root", "link.png", "entry 'link.png'")


def test_embedding_matrices_are_checked():
    good = torch.zeros(3, 4)
    assert check_embedding_matrix(good, "e.safetensors", rows=3, dim=4) is good
    for bad, message in [
        (torch.zeros(3), "shape"),
        (torch.zeros(3, 4, dtype=torch.int32), "floating"),
        (torch.zeros(2, 4), "2 embeddings for 3"),
        (torch.zeros(3, 5), "size 5"),
        (torch.tensor([[0.0] * 4, [0.0, float("inf"), 0.0, 0.0], [0.0] * 4]), "row 1 holds non-finite"),
    ]:
        with pytest.raises(ValueError, match=message):
            check_embedding_matrix(bad, "e.safetensors", rows=3, dim=4)


def test_index_metadata_types_and_versions():
    info = {"format": "hf-cir-index", "version": 1, "root": "/x", "embedding_dim": 4, "paths": []}
    assert check_index_metadata(info, "index.json", "hf-cir-index", versions=(1,))["version"] == 1
    for change, message in [
        ({"format": "other"}, "not an hf-cir index"),
        ({"version": "2"}, "must be an integer"),
        ({"version": True}, "must be an integer"),
        ({"version": 3}, "newer"),
        ({"embedding_dim": "64"}, "'embedding_dim' must be int"),
        ({"embedding_dim": 0}, "positive"),
        ({"root": 5}, "'root' must be str"),
        ({"skipped": {"a.png": 3}}, "'skipped'"),
    ]:
        with pytest.raises(ValueError, match=message):
            check_index_metadata({**info, **change}, "index.json", "hf-cir-index", versions=(1,))
    with pytest.raises(ValueError, match="expected a JSON object"):
        check_index_metadata([], "index.json", "hf-cir-index", versions=(1,))


# -- numbers at the models' and the pipeline's boundary ------------------------------------------------------------


@pytest.fixture(scope="module")
def toy_lincir_model():
    from hf_cir.retrieval import load_retrieval_model
    from hf_cir.toy.checkpoints import toy_checkpoint

    return load_retrieval_model(toy_checkpoint("lincir"), device="cpu")


def test_non_finite_embeddings_and_pixels_are_refused(toy_lincir_model):
    nan = torch.full((1, toy_lincir_model.embedding_dim), float("nan"))
    with pytest.raises(ValueError, match="`image_embeds` hold non-finite"):
        toy_lincir_model.encode_queries(["make it blue"], image_embeds=nan)
    model, processor = toy_lincir_model.model, toy_lincir_model.processor
    inputs = processor(text=["make it blue"], return_tensors="pt")
    with pytest.raises(ValueError, match="`image_embeds` holds non-finite"):
        model.get_composed_features(inputs["input_ids"], image_embeds=nan)
    pixels = torch.full((1, 3, 32, 32), float("nan"))
    with pytest.raises(ValueError, match="`pixel_values` holds non-finite"):
        model.get_composed_features(inputs["input_ids"], pixel_values=pixels)
    from hf_cir.utils import load_image

    with pytest.raises(ValueError, match="`--image`: the array holds non-finite"):
        load_image(np.full((4, 4, 3), np.nan, dtype=np.float32), name="--image")


def test_empty_texts_are_an_error(toy_lincir_model):
    embeds = torch.ones(2, toy_lincir_model.embedding_dim)
    with pytest.raises(ValueError, match=r"`texts\[1\]` is empty"):
        toy_lincir_model.encode_queries(["make it blue", "  "], image_embeds=embeds)
    # The image baseline takes no text: an empty one is no error there.
    assert toy_lincir_model.encode_queries([""], image_embeds=embeds[:1], method="image").shape == (1, 64)


def test_unknown_words_are_named_in_a_warning(toy_lincir_model):
    embeds = torch.ones(1, toy_lincir_model.embedding_dim)
    with pytest.warns(UserWarning, match="'teal'"):
        query = toy_lincir_model.encode_queries(["make it teal"], image_embeds=embeds)
    assert bool(torch.isfinite(query).all())


def test_the_pipeline_refuses_nan_embeddings_and_a_mask_without_image():
    from hf_cir.pipelines.compodiff import CompoDiffPipeline
    from hf_cir.toy.checkpoints import toy_checkpoint

    pipe = CompoDiffPipeline.from_pretrained(toy_checkpoint("compodiff"))
    pipe.set_progress_bar_config(disable=True)
    dim = pipe.image_encoder.config.projection_dim
    with pytest.raises(ValueError, match="`image_embeds` holds non-finite"):
        pipe("make it blue", image_embeds=torch.full((1, dim), float("nan")), num_inference_steps=2)
    from PIL import Image

    with pytest.raises(ValueError, match="`mask_image` needs a reference image"):
        pipe("make it blue", mask_image=Image.new("L", (32, 32)), num_inference_steps=2)
