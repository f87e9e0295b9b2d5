"""The tiny toy CLIP: config, preprocessing, a short real training run, and loading its folder every way."""

import json

import numpy as np
import pytest
import torch
from transformers import (
    AutoImageProcessor,
    AutoTokenizer,
    CLIPModel,
    CLIPTextModelWithProjection,
    CLIPVisionModelWithProjection,
)

from hf_cir.toy import ToyWorld
from hf_cir.toy.tokenization import build_toy_tokenizer

from .tools import load_toy_tool

_TRAINER = load_toy_tool("train_toy_clip")  # training/toy/train_toy_clip.py
ToyCLIPTrainingArguments = _TRAINER.ToyCLIPTrainingArguments
build_toy_clip = _TRAINER.build_toy_clip
build_toy_image_processor = _TRAINER.build_toy_image_processor
pixel_values_from_uint8 = _TRAINER.pixel_values_from_uint8
train_toy_clip = _TRAINER.train_toy_clip


def test_config_fits_the_tokenizer():
    tokenizer = build_toy_tokenizer()
    config = build_toy_clip(tokenizer).config
    assert config.text_config.vocab_size == len(tokenizer)
    assert config.text_config.eos_token_id == tokenizer.eos_token_id != 2
    assert config.text_config.max_position_embeddings == tokenizer.model_max_length
    assert config.projection_dim == config.text_config.projection_dim == config.vision_config.projection_dim == 64
    assert config.vision_config.image_size == 32 and config.vision_config.patch_size == 8


def test_fast_normalisation_equals_the_processor():
    world = ToyWorld()
    processor = build_toy_image_processor()
    images = world.render_batch(world.combinations[:5], variants=[0, 1, 2, 3, 4])
    expected = torch.as_tensor(
        processor([world.render(c, v) for c, v in zip(world.combinations[:5], range(5))], return_tensors="pt")[
            "pixel_values"
        ]
    )
    assert torch.allclose(pixel_values_from_uint8(images, processor), expected, atol=1e-5)
    with pytest.raises(ValueError, match="processor crops"):
        pixel_values_from_uint8(np.zeros((1, 16, 16, 3), dtype=np.uint8), processor)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    output = tmp_path_factory.mktemp("toy") / "clip"
    args = ToyCLIPTrainingArguments(
        steps=3, batch_size=16, variants=1, hidden_size=32, intermediate_size=64, num_heads=2
    )
    metrics = train_toy_clip(output, args=args, log_every=0)
    return output, metrics


def test_training_writes_a_loadable_clip_folder(trained):
    output, metrics = trained
    assert 0.0 <= metrics["text_to_image_r1"] <= 1.0
    assert (output / "model.safetensors").is_file() and not list(output.glob("*.bin"))
    model = CLIPModel.from_pretrained(output)
    tokenizer = AutoTokenizer.from_pretrained(output)
    processor = AutoImageProcessor.from_pretrained(output)
    text_tower = CLIPTextModelWithProjection.from_pretrained(output)
    vision_tower = CLIPVisionModelWithProjection.from_pretrained(output)
    world = ToyWorld()
    pixels = processor([world.render(world.combinations[0])], return_tensors="pt")["pixel_values"]
    tokens = tokenizer(["a small red circle on the left on a plain background"], return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(
            model.get_image_features(pixel_values=pixels).pooler_output, vision_tower(pixels).image_embeds, atol=1e-6
        )
        assert torch.allclose(
            model.get_text_features(**tokens).pooler_output, text_tower(**tokens).text_embeds, atol=1e-6
        )
    record = json.loads((output / "training_args.json").read_text())
    assert record["args"]["steps"] == 3 and "text_to_image_r1" in record["metrics"]
    card = (output / "README.md").read_text()
    assert "toy CLIP" in card and "| steps | 3 |" in card


def test_existing_output_is_not_overwritten(trained):
    output, _ = trained
    with pytest.raises(FileExistsError):
        train_toy_clip(output, args=ToyCLIPTrainingArguments(steps=1, batch_size=4, variants=1))


def test_bad_training_arguments(tmp_path):
    with pytest.raises(ValueError, match="steps"):
        train_toy_clip(tmp_path / "a", args=ToyCLIPTrainingArguments(steps=0))
    with pytest.raises(ValueError, match="training combinations"):
        train_toy_clip(tmp_path / "b", args=ToyCLIPTrainingArguments(batch_size=5000))
