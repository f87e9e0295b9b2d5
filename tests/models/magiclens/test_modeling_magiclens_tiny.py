"""MagicLens on a tiny random config, in the style of transformers' ModelTester: shapes, batching, the empty-text
gallery path, sdpa against eager, save / load, and one-line errors for bad configs and inputs."""

import pytest
import torch
from transformers import AutoConfig, AutoModel, CLIPTextConfig, CLIPVisionConfig

from hf_cir import MagicLensConfig, MagicLensModel
from hf_cir.models.magiclens import MagicLensOutput


class MagicLensModelTester:
    def __init__(self, batch_size=3, seq_length=7, projection_dim=16, image_size=32):
        self.batch_size, self.seq_length = batch_size, seq_length
        self.projection_dim, self.image_size = projection_dim, image_size

    def get_config(self, **overrides) -> MagicLensConfig:
        text = CLIPTextConfig(
            vocab_size=99,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=self.seq_length,
            projection_dim=self.projection_dim,
            pad_token_id=0,
            bos_token_id=97,
            eos_token_id=98,
        )
        vision = CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=self.image_size,
            patch_size=8,
            projection_dim=self.projection_dim,
        )
        settings = dict(
            projection_dim=self.projection_dim,
            fusion_num_attention_heads=2,
            fusion_intermediate_size=64,
            pooler_num_attention_heads=4,
            fusion_num_hidden_layers=2,
        )
        return MagicLensConfig(text_config=text, vision_config=vision, **{**settings, **overrides})

    def prepare_inputs(self, generator=None):
        generator = generator or torch.Generator().manual_seed(0)
        ids = torch.randint(1, 97, (self.batch_size, self.seq_length), generator=generator)
        ids[:, 0] = 97
        lengths = [self.seq_length, 4, 2][: self.batch_size]
        for row, length in enumerate(lengths):
            ids[row, length - 1] = 98
            ids[row, length:] = 0
        pixels = torch.randn(self.batch_size, 3, self.image_size, self.image_size, generator=generator)
        return {"pixel_values": pixels, "input_ids": ids}

    def create_and_check_model(self, model, inputs):
        with torch.no_grad():
            output = model(**inputs)
        assert isinstance(output, MagicLensOutput)
        assert output.composed_embeds.shape == (self.batch_size, self.projection_dim)
        assert output.fusion_hidden_state.shape == (self.batch_size, 2, self.projection_dim)
        norms = output.normalized_composed_embeds.norm(dim=-1)
        assert torch.allclose(norms, torch.ones_like(norms), atol=1e-6)
        features = model.get_composed_features(**inputs)
        assert torch.equal(features.pooler_output, output.composed_embeds)
        as_tuple = model(**inputs, return_dict=False)
        assert torch.equal(as_tuple[0], output.composed_embeds)
        return output


@pytest.fixture
def tester():
    return MagicLensModelTester()


@pytest.fixture
def model(tester):
    torch.manual_seed(0)
    return MagicLensModel(tester.get_config()).eval()


def test_model(tester, model):
    tester.create_and_check_model(model, tester.prepare_inputs())


def test_rows_do_not_depend_on_the_batch(tester, model):
    inputs = tester.prepare_inputs()
    with torch.no_grad():
        batch = model(**inputs).composed_embeds
        rows = [model(**{k: v[i : i + 1] for k, v in inputs.items()}).composed_embeds for i in range(3)]
    assert torch.allclose(batch, torch.cat(rows), atol=1e-5)


def test_gallery_features_use_the_empty_text(tester, model):
    inputs = tester.prepare_inputs()
    empty = torch.zeros(3, tester.seq_length, dtype=torch.long)
    empty[:, 0], empty[:, 1] = 97, 98
    with torch.no_grad():
        gallery = model.get_image_features(inputs["pixel_values"]).pooler_output
        padded = model(pixel_values=inputs["pixel_values"], input_ids=empty).composed_embeds
        composed = model(**inputs).composed_embeds
    assert torch.allclose(gallery, padded, atol=1e-5)
    assert not torch.allclose(gallery, composed, atol=1e-3)


def test_sdpa_matches_eager(tester, tmp_path):
    torch.manual_seed(0)
    MagicLensModel(tester.get_config()).save_pretrained(tmp_path)
    inputs = tester.prepare_inputs()
    outputs = {}
    for implementation in ("sdpa", "eager"):
        loaded = MagicLensModel.from_pretrained(tmp_path, attn_implementation=implementation).eval()
        assert loaded.text_model.config._attn_implementation == implementation
        with torch.no_grad():
            outputs[implementation] = loaded(**inputs).composed_embeds
    assert torch.allclose(outputs["sdpa"], outputs["eager"], atol=1e-5)


def test_save_load_and_auto_classes(tester, model, tmp_path):
    inputs = tester.prepare_inputs()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert AutoConfig.from_pretrained(tmp_path).model_type == "magiclens"
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is MagicLensModel
    with torch.no_grad():
        assert torch.equal(loaded(**inputs).composed_embeds, model(**inputs).composed_embeds)


def test_initialisation_follows_the_reference(model):
    layer = model.fusion.layers[0]
    assert torch.equal(layer.layer_norm.weight, torch.ones_like(layer.layer_norm.weight))
    assert torch.equal(model.pooler.attention.per_dim_scale, torch.zeros_like(model.pooler.attention.per_dim_scale))
    assert layer.self_attn.q_proj.bias.abs().sum() == 0 and layer.self_attn.q_proj.weight.std() > 0


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"projection_dim": 12}, "projection_dim"),
        ({"fusion_num_attention_heads": 3}, "divisible by `fusion_num_attention_heads`"),
        ({"pooler_num_attention_heads": 0}, "pooler_num_attention_heads"),
        ({"layer_norm_eps": 0}, "layer_norm_eps"),
        ({"attention_logit_cap": -1.0}, "attention_logit_cap"),
    ],
)
def test_bad_config_is_one_clear_error(tester, overrides, match):
    with pytest.raises(ValueError, match=match) as error:
        tester.get_config(**overrides)
    assert "\n" not in str(error.value)


def test_bad_inputs_are_one_clear_error(tester, model):
    inputs = tester.prepare_inputs()
    with pytest.raises(ValueError, match="3 images: MagicLens pairs one text with one image"):
        model(pixel_values=inputs["pixel_values"], input_ids=inputs["input_ids"][:2])
    with pytest.raises(ValueError, match="`pixel_values` must be a float tensor"):
        model(pixel_values=inputs["pixel_values"][0], input_ids=inputs["input_ids"])
    with pytest.raises(ValueError, match="`input_ids` must be an integer tensor"):
        model(pixel_values=inputs["pixel_values"], input_ids=inputs["input_ids"].float())
