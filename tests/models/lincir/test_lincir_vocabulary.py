"""The placeholder and the vocabulary: resizing the token embeddings keeps the placeholder valid or says why not,
texts without the placeholder get the documented behaviour, and words the tokenizer does not know are named."""

import warnings

import pytest
import torch
from PIL import Image

from hf_cir import LinCIRModel, LinCIRProcessor
from hf_cir.toy.checkpoints import toy_checkpoint


@pytest.fixture
def model(tiny_clip_dir):
    return LinCIRModel.from_clip(tiny_clip_dir).eval()


@pytest.fixture(scope="module")
def processor(tiny_clip_dir):
    return LinCIRProcessor.from_pretrained(tiny_clip_dir)


def test_shrinking_below_the_placeholder_is_refused(model):
    placeholder = model.config.placeholder_token_id  # 259, "$" in CLIP's vocabulary
    before = model.get_input_embeddings().weight.clone()
    for size, multiple in [(placeholder, None), (10, None), (placeholder - 3, 2)]:
        with pytest.raises(ValueError, match=rf"placeholder '\$' has id {placeholder}.*at least {placeholder + 1}"):
            model.resize_token_embeddings(size, pad_to_multiple_of=multiple)
    assert torch.equal(model.get_input_embeddings().weight, before)  # refused before anything changed
    assert model.config.text_config.vocab_size == before.shape[0]


def test_resizing_that_keeps_the_placeholder_keeps_composed_queries(model, processor):
    inputs = processor(images=Image.new("RGB", (40, 30), (200, 20, 20)), text="is blue")
    with torch.no_grad():
        reference = model(**inputs).composed_embeds
    size = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(size + 10)  # new tokens, e.g. for a tokenizer that gained words
    assert model.config.text_config.vocab_size == size + 10
    with torch.no_grad():
        assert torch.equal(model(**inputs).composed_embeds, reference)
    model.resize_token_embeddings(size)  # and back: every id the texts use is still there
    with torch.no_grad():
        assert torch.equal(model(**inputs).composed_embeds, reference)


def test_texts_without_placeholder_get_the_documented_behaviour(model, processor):
    image = Image.new("RGB", (40, 30), (200, 20, 20))
    # With an image, the processor puts a text without placeholder into the prompt template.
    templated = processor(images=image, text="is blue")
    assert processor.batch_decode(templated["input_ids"], skip_special_tokens=True) == ["a photo of $ that is blue"]
    # Token ids without placeholder and an image: the image would be ignored, so the model says so.
    plain = processor(text="a blue car")
    with pytest.raises(ValueError, match=r"rows \[0\] have no placeholder token '\$'"):
        model(**plain, pixel_values=templated["pixel_values"])
    # Text alone is a text query: CLIP's text features.
    with torch.no_grad():
        text_only = model(**plain)
    assert text_only.text_embeds.shape == (1, model.config.projection_dim) and text_only.composed_embeds is None


def test_processor_names_unknown_words():
    processor = LinCIRProcessor.from_pretrained(toy_checkpoint("lincir"))
    image = Image.new("RGB", (32, 32))
    with pytest.warns(UserWarning, match=r"does not know the word\(s\) 'teal', 'zorb'.*unknown token") as caught:
        processor(images=[image, image], text=["make it teal", "a zorb"])
    assert caught[0].filename == __file__  # points at the caller
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        processor(images=image, text="make it blue")  # the toy world's words: no warning


def test_nested_images_give_text_only_samples_the_text_query_behaviour(processor):
    # transformers' multimodal format: one list per text; `[]` is a text without reference image (a text query), so
    # its text is used as written, not put into the template (as `text` without `images` is).
    image = Image.new("RGB", (40, 30), (200, 20, 20))
    texts = ["lower newer", "is red", "$ on the left"]
    nested = processor(images=[[], [image], [image]], text=texts, padding="longest")
    flat = processor(images=[image, image, image], text=texts, padding="longest")
    assert processor.batch_decode(nested["input_ids"], skip_special_tokens=True) == [
        "lower newer", "a photo of $ that is red", "$ on the left",
    ]  # fmt: skip
    assert nested["pixel_values"].shape[0] == 2 and torch.equal(nested["pixel_values"], flat["pixel_values"][1:])
    assert torch.equal(nested["input_ids"][1:], flat["input_ids"][1:])
    assert torch.equal(
        nested["input_ids"][0],
        processor(text="lower newer", padding="max_length")["input_ids"][0][: nested["input_ids"].shape[1]],
    )
    with pytest.raises(ValueError, match=r"`images\[0\]` holds 2 images"):
        processor(images=[[image, image]], text=["is red"])
    with pytest.raises(ValueError, match="2 images and 3 texts"):
        processor(images=[[image], [image]], text=texts)
