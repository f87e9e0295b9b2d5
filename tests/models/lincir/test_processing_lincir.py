"""LinCIRProcessor: the reference token ids and pixel values, the template, image modes and bad inputs."""

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer, CLIPTokenizer

from hf_cir import LinCIRProcessor


@pytest.fixture(scope="module")
def processor(tiny_clip_dir):
    return LinCIRProcessor.from_pretrained(tiny_clip_dir)


@pytest.fixture(scope="module")
def cases(reference_dir):
    return json.loads((reference_dir / "lincir" / "cases.json").read_text())["cases"]


def test_reference_token_ids_and_pixel_values(processor, cases, reference_dir):
    expected = load_file(reference_dir / "lincir" / "expected.safetensors")
    assert processor.placeholder_token_id == 259
    for case in cases:
        if "image_files" in case:
            with Image.open(reference_dir / "lincir" / case["image_files"][0]) as image:
                assert image.mode == case["image_mode"]
                inputs = processor(images=image, text=case["texts"])
            assert set(inputs) == {"input_ids", "attention_mask", "pixel_values"}
            assert torch.equal(inputs["pixel_values"], expected[case["inputs"]["pixel_values"]]), case["name"]
        else:
            inputs = processor(text=case["texts"])
            assert set(inputs) == {"input_ids", "attention_mask"}
        assert inputs["input_ids"].tolist() == case["input_ids"], case["name"]


def test_template_only_for_texts_without_placeholder(processor):
    image = Image.new("RGB", (40, 30), (10, 200, 30))
    inputs = processor(images=[image, image], text=["is red", "$ on a beach"])
    decoded = processor.batch_decode(inputs["input_ids"], skip_special_tokens=True)
    assert [d.strip() for d in decoded] == ["a photo of $ that is red", "$ on a beach"]
    # Text alone is used as written (e.g. captions, or text-to-image queries).
    text_only = processor(text="is red")
    assert processor.decode(text_only["input_ids"][0], skip_special_tokens=True).strip() == "is red"
    assert processor(images=image)["pixel_values"].shape == (1, 3, 32, 32)


def test_truncation_keeps_eos_and_warns(processor, caplog):
    long_text = "a photo of $ that is " + "very " * 100
    with caplog.at_level(logging.WARNING):
        inputs = processor(images=Image.new("RGB", (8, 8)), text=long_text)
    ids = inputs["input_ids"][0]
    assert ids.shape == (77,) and ids[-1].item() == processor.tokenizer.eos_token_id
    assert "truncated" in caplog.text and "[0]" in caplog.text
    with pytest.raises(ValueError, match="truncated away"):
        processor(images=Image.new("RGB", (8, 8)), text="very " * 100 + "$")


@pytest.mark.parametrize("mode", ["RGBA", "LA", "L", "P", "1", "I;16", "CMYK"])
def test_every_image_mode_becomes_rgb(processor, mode):
    image = Image.new(mode, (20, 10))
    rgb = Image.new("RGB", (20, 10), (255, 255, 255) if mode in ("RGBA", "LA") else (0, 0, 0))
    if mode == "CMYK":
        rgb = image.convert("RGB")
    pixel_values = processor(images=image)["pixel_values"]
    assert pixel_values.shape == (1, 3, 32, 32)
    assert torch.allclose(pixel_values, processor(images=rgb)["pixel_values"])


def test_tiny_paths_and_arrays(processor, tmp_path):
    one = processor(images=Image.new("RGB", (1, 1), (9, 9, 9)), text="is red")
    assert one["pixel_values"].shape == (1, 3, 32, 32) and torch.isfinite(one["pixel_values"]).all()
    path = tmp_path / "gray.png"
    Image.new("L", (5, 4), 128).save(path)
    from_path = processor(images=str(path))["pixel_values"]
    from_array = processor(images=np.full((4, 5), 128, dtype=np.uint8))["pixel_values"]
    assert torch.equal(from_path, from_array)
    batch = processor(
        images=from_path.repeat(2, 1, 1, 1),
        do_rescale=False,
        do_resize=False,
        do_center_crop=False,
        do_normalize=False,
    )
    assert batch["pixel_values"].shape == (2, 3, 32, 32)


def test_bad_inputs(processor, tiny_clip_dir):
    image = Image.new("RGB", (8, 8))
    with pytest.raises(ValueError, match="2 images and 3 texts"):
        processor(images=[image, image], text=["a", "b", "c"])
    with pytest.raises(ValueError, match="needs `images`, `text`"):
        processor()
    with pytest.raises(TypeError, match="text"):
        processor(text=[1, 2])
    with pytest.raises(ValueError, match="empty"):
        processor(images=Image.new("RGB", (0, 3)))
    with pytest.raises(FileNotFoundError, match="missing.png"):
        processor(images="missing.png")
    no_template = LinCIRProcessor(processor.image_processor, processor.tokenizer, prompt_template=None)
    with pytest.raises(ValueError, match="no placeholder"):
        no_template(images=image, text="is red")
    assert no_template(images=image, text="$ is red")["input_ids"][0, 1].item() == 259
    with pytest.raises(ValueError, match="prompt_template"):
        LinCIRProcessor(processor.image_processor, processor.tokenizer, prompt_template="no placeholder {}")


def test_tokenizer_without_placeholder_is_an_error(processor, tiny_clip_dir):
    with pytest.raises(ValueError, match="no single token"):
        LinCIRProcessor(processor.image_processor, processor.tokenizer, placeholder_token="[$]")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "a": 3}
    tiny = CLIPTokenizer(vocab=vocab, merges=[], unk_token="<|endoftext|>", pad_token="<|endoftext|>")
    with pytest.raises(ValueError, match="placeholder"):
        LinCIRProcessor(processor.image_processor, tiny)
    with pytest.raises(ValueError, match="image_processor"):
        LinCIRProcessor(None, processor.tokenizer)


def test_tokenizer_that_cannot_encode_the_placeholder_is_a_value_error(processor):
    # A word-level `tokenizers` model without an unknown token raises a bare Exception for an unseen word.
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({"a": 0, "photo": 1}))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    closed = PreTrainedTokenizerFast(tokenizer_object=backend)
    with pytest.raises(ValueError, match=r"cannot encode the placeholder '\$'"):
        LinCIRProcessor(processor.image_processor, closed)


def test_save_load_round_trip_and_auto_processor(processor, tmp_path):
    custom = LinCIRProcessor(processor.image_processor, processor.tokenizer, prompt_template="$ but {}")
    custom.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "processor_config.json").read_text())
    assert config["prompt_template"] == "$ but {}" and config["placeholder_token"] == "$"
    for loaded in (LinCIRProcessor.from_pretrained(tmp_path), AutoProcessor.from_pretrained(tmp_path)):
        assert type(loaded) is LinCIRProcessor
        assert loaded.prompt_template == "$ but {}" and loaded.placeholder_token_id == 259
        image = Image.new("RGB", (30, 20), (1, 2, 3))
        a, b = custom(images=image, text="is red"), loaded(images=image, text="is red")
        assert all(torch.equal(a[k], b[k]) for k in ("input_ids", "attention_mask", "pixel_values"))


def test_built_from_parts(tiny_clip_dir):
    built = LinCIRProcessor(
        AutoImageProcessor.from_pretrained(tiny_clip_dir), AutoTokenizer.from_pretrained(tiny_clip_dir)
    )
    assert built.prompt_template == "a photo of $ that {}" and built.placeholder_token == "$"


def test_from_pretrained_placeholder_override_keeps_tokenizer_vocabulary(tiny_clip_dir):
    processor = LinCIRProcessor.from_pretrained(tiny_clip_dir, placeholder_token="$", prompt_template="$ but {}")
    assert processor.placeholder_token_id == 259
    assert len(processor.tokenizer) == 49408
    ids = processor(images=Image.new("RGB", (8, 8)), text="red")["input_ids"]
    assert processor.batch_decode(ids, skip_special_tokens=True) == ["$ but red"]


def test_compose_applies_the_template_without_images(tiny_clip_dir):
    processor = LinCIRProcessor.from_pretrained(tiny_clip_dir)
    composed = processor(text=["is red", "$ on a beach"], compose=True)["input_ids"]
    assert processor.batch_decode(composed, skip_special_tokens=True) == ["a photo of $ that is red", "$ on a beach"]
    plain = processor(text="is red")["input_ids"]
    assert processor.batch_decode(plain, skip_special_tokens=True) == ["is red"]
    with pytest.raises(ValueError, match="truncated away"):
        processor(text=["word " * 100 + "$"], compose=True)


def test_transformers_processor_kwargs_api(processor, tmp_path):
    # transformers 5's processor kwargs: flat or nested per modality, common kwargs, typed dict with defaults.
    from hf_cir.models.lincir.processing_lincir import LinCIRProcessorKwargs

    assert processor.valid_processor_kwargs is LinCIRProcessorKwargs
    image = Image.new("RGB", (30, 20), (1, 2, 3))
    default = processor(images=image, text="is red")
    assert default["input_ids"].shape == (1, processor.tokenizer.model_max_length)  # padded to the context
    flat = processor(images=image, text="is red", padding="longest", do_normalize=False)
    nested = processor(
        images=image, text="is red", text_kwargs={"padding": "longest"}, images_kwargs={"do_normalize": False}
    )
    assert flat["input_ids"].shape == nested["input_ids"].shape == (1, 9)
    assert torch.equal(flat["pixel_values"], nested["pixel_values"])
    assert not torch.equal(flat["pixel_values"], default["pixel_values"])
    as_numpy = processor(images=image, text="is red", common_kwargs={"return_tensors": "np"})
    assert isinstance(as_numpy["input_ids"], np.ndarray) and isinstance(as_numpy["pixel_values"], np.ndarray)
    with pytest.raises(ValueError, match="passed two times"):
        processor(text="is red", padding="longest", text_kwargs={"padding": "max_length"})

    # The tokenizer's own saved settings win over the processor's defaults, call-time values over both.
    short = AutoTokenizer.from_pretrained(processor.tokenizer.name_or_path, max_length=16)
    ours = LinCIRProcessor(processor.image_processor, short)
    assert ours(text="is red")["input_ids"].shape == (1, 16)
    assert ours(text="is red", max_length=20)["input_ids"].shape == (1, 20)

    # A save/load round trip gives the same processor (the folder's auto_map stays in the file only).
    processor.save_pretrained(tmp_path)
    assert "auto_map" in json.loads((tmp_path / "processor_config.json").read_text())
    loaded = LinCIRProcessor.from_pretrained(tmp_path)
    assert loaded.to_dict() == processor.to_dict() and "auto_map" not in processor.to_dict()
