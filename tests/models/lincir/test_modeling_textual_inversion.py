"""SEARLE and Pic2Word as LinCIR-family models: parity with each reference's own code on the stored fixtures, eager
and sdpa; the config switches (phi architecture, first-placeholder replacement, image normalisation); save/load."""

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoTokenizer

from hf_cir import LinCIRConfig, LinCIRModel, LinCIRProcessor
from hf_cir.conversion.lincir import convert_phi_state_dict, load_reference_phi
from hf_cir.conversion.pic2word import PIC2WORD_CONFIG, convert_im2text_state_dict, load_reference_im2text
from hf_cir.conversion.searle import SEARLE_CONFIG

TOLERANCE = 1e-5
METHODS = ("searle", "pic2word")


def fixture_dir(reference_dir, method):
    return reference_dir / "textual_inversion" / method


def load_cases(reference_dir, method):
    return json.loads((fixture_dir(reference_dir, method) / "cases.json").read_text())


def build_model(reference_dir, method, attn_implementation="sdpa", **overrides):
    """The reference weights in a LinCIRModel with the method's settings, as the converters set them."""
    folder, document = fixture_dir(reference_dir, method), load_cases(reference_dir, method)
    if method == "searle":
        state_dict = convert_phi_state_dict(load_reference_phi(folder / document["checkpoint_file"]))
        config = {**SEARLE_CONFIG, "phi_hidden_size": document["phi_args"]["hidden_dim"]}
    else:
        state_dict = convert_im2text_state_dict(load_reference_im2text(folder / document["checkpoint_file"]))
        config = {
            **PIC2WORD_CONFIG,
            "phi_hidden_size": document["phi_args"]["middle_dim"],
            "phi_num_hidden_layers": document["phi_args"]["n_layer"],
        }
    config.update(overrides)
    model = LinCIRModel.from_clip(reference_dir / "clip", attn_implementation=attn_implementation, **config)
    model.phi.load_state_dict(state_dict)
    return model.eval()


@pytest.fixture(scope="module")
def expected(reference_dir):
    return {method: load_file(fixture_dir(reference_dir, method) / "expected.safetensors") for method in METHODS}


@pytest.fixture(scope="module")
def models(reference_dir):
    return {method: build_model(reference_dir, method) for method in METHODS}


def composed(model, case, tensors, input_ids=None):
    input_ids = torch.tensor(case["input_ids"]) if input_ids is None else input_ids
    inputs = case["inputs"]
    image = (
        {"image_embeds": tensors[inputs["image_embeds"]]}
        if "image_embeds" in inputs
        else {"pixel_values": tensors[inputs["pixel_values"]]}
    )
    with torch.no_grad():
        return model.get_composed_features(input_ids, return_dict=True, **image).pooler_output


def test_fixtures_name_the_reference_commits_and_settings(reference_dir):
    searle, pic2word = load_cases(reference_dir, "searle"), load_cases(reference_dir, "pic2word")
    assert searle["reference"]["commit"] == "a9c314ba4b6e6e14be5a9c3fdf6b66e6a0c23e37"
    assert pic2word["reference"]["commit"] == "8c053297c2fae9cd17ddcded48445a4f47208dbd"
    for document, config in ((searle, SEARLE_CONFIG), (pic2word, PIC2WORD_CONFIG)):
        assert document["placeholder"] == config["placeholder_token"]
        assert document["prompt_template"] == config["prompt_template"]
        assert document["normalize_image_embeds"] is config["normalize_image_embeds"] is False
        assert document["placeholder_replacement"].startswith(config["placeholder_replacement"])
        assert len(document["cases"]) == 13


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("method", METHODS)
def test_composed_features_match_reference(reference_dir, models, expected, method, attn_implementation):
    model = models[method] if attn_implementation == "sdpa" else build_model(reference_dir, method, "eager")
    assert model.text_model.config._attn_implementation == attn_implementation
    cases = load_cases(reference_dir, method)["cases"]
    positions = set()
    for case in cases:
        reference = expected[method][case["expected"]["composed_embeds"]]
        out = composed(model, case, expected[method])
        assert out.shape == reference.shape
        assert (out - reference).abs().max().item() <= TOLERANCE, case["name"]
        positions.update(case["replaced_position"])
        assert max(case["pool_position"]) <= 76
    # The cases cover the placeholder at the start, in the middle and near the end of a full 77-token text.
    assert {1, 4, 11, 74} <= positions
    assert any(76 in case["pool_position"] for case in cases)


@pytest.mark.parametrize("method", METHODS)
def test_processor_gives_the_reference_token_ids_and_outputs(reference_dir, models, expected, method):
    model, document = models[method], load_cases(reference_dir, method)
    processor = LinCIRProcessor(
        image_processor=AutoImageProcessor.from_pretrained(reference_dir / "clip"),
        tokenizer=AutoTokenizer.from_pretrained(reference_dir / "clip"),
        placeholder_token=model.config.placeholder_token,
        prompt_template=model.config.prompt_template,
    )
    assert (
        processor.placeholder_token_id == model.config.placeholder_token_id == document["placeholder_id_in_input_ids"]
    )
    for case in document["cases"]:
        input_ids = processor(text=case["texts"], compose=True)["input_ids"]
        reference_ids = torch.tensor(case["input_ids"])
        # The references pad with 0, the transformers CLIP tokenizer with EOS; every other id is the same.
        assert torch.equal(input_ids[reference_ids != 0], reference_ids[reference_ids != 0].long()), case["name"]
        reference = expected[method][case["expected"]["composed_embeds"]]
        assert (composed(model, case, expected[method], input_ids) - reference).abs().max() <= TOLERANCE
    # A text without placeholder goes into the method's prompt, as the references' evaluation builds it.
    template_case = document["cases"][0]
    assert template_case["texts"] == [document["prompt_template"].format("is red")]
    ids = processor(text=["is red"], compose=True)["input_ids"]
    assert torch.equal(ids, processor(text=template_case["texts"])["input_ids"])


@pytest.mark.parametrize("method", METHODS)
def test_intermediates_match_reference(reference_dir, models, expected, method):
    model, tensors = models[method], expected[method]
    for case in load_cases(reference_dir, method)["cases"]:
        with torch.no_grad():
            if "pixel_values" in case["inputs"]:
                image_embeds = model.get_image_features(
                    tensors[case["inputs"]["pixel_values"]], return_dict=True
                ).pooler_output
                assert (image_embeds - tensors[case["intermediate"]["image_embeds"]]).abs().max() <= TOLERANCE
            else:
                image_embeds = tensors[case["inputs"]["image_embeds"]]
            pseudo_tokens = model.get_pseudo_tokens(image_embeds)
        assert (pseudo_tokens - tensors[case["intermediate"]["pseudo_tokens"]]).abs().max() <= TOLERANCE


@pytest.mark.parametrize("method", METHODS)
def test_the_method_settings_matter(reference_dir, expected, method):
    """Replacing every placeholder, or normalising the image embedding, departs from the reference: the settings are
    what makes these models SEARLE and Pic2Word."""
    cases = {case["name"]: case for case in load_cases(reference_dir, method)["cases"]}
    two = cases["e06_two_placeholders"]
    reference = expected[method][two["expected"]["composed_embeds"]]
    every = build_model(reference_dir, method, placeholder_replacement="all")
    assert (composed(every, two, expected[method]) - reference).abs().max() > 0.1
    one = cases["e00_template"]  # one placeholder: both settings agree
    assert (
        composed(every, one, expected[method]) - expected[method][one["expected"]["composed_embeds"]]
    ).abs().max() <= TOLERANCE

    normalised = build_model(reference_dir, method, normalize_image_embeds=True)
    image_embeds = expected[method][one["inputs"]["image_embeds"]]
    with torch.no_grad():
        assert torch.allclose(normalised.get_pseudo_tokens(image_embeds), normalised.phi(F.normalize(image_embeds)))
    assert (
        composed(normalised, one, expected[method]) - expected[method][one["expected"]["composed_embeds"]]
    ).abs().max() > 0.1


def test_phi_architectures_use_the_references_parameter_names(tiny_clip_dir):
    mlp = LinCIRModel.from_clip(tiny_clip_dir, phi_num_hidden_layers=3, phi_hidden_size=48)
    assert sorted(mlp.phi.state_dict()) == [f"layers.{i}.{kind}" for i in (0, 3, 6, 9) for kind in ("bias", "weight")]
    assert [type(layer).__name__ for layer in mlp.phi.layers[:3]] == ["Linear", "GELU", "Dropout"]
    im2text = LinCIRModel.from_clip(tiny_clip_dir, phi_type="im2text", phi_hidden_size=48, phi_dropout=0.1)
    assert sorted(im2text.phi.state_dict()) == [
        "fc_out.bias",
        "fc_out.weight",
        "layers.0.0.bias",
        "layers.0.0.weight",
        "layers.1.0.bias",
        "layers.1.0.weight",
    ]
    assert [type(layer).__name__ for layer in im2text.phi.layers[0]] == ["Linear", "Dropout", "ReLU"]
    assert im2text.phi.fc_out.out_features == im2text.config.text_config.hidden_size == 32


def test_config_validation():
    for kwargs, message in (
        ({"phi_type": "transformer"}, "phi_type"),
        ({"phi_num_hidden_layers": 0}, "phi_num_hidden_layers"),
        ({"placeholder_replacement": "last"}, "placeholder_replacement"),
        ({"method_name": "my method"}, "method_name"),
    ):
        with pytest.raises(ValueError, match=message):
            LinCIRConfig(projection_dim=512, **kwargs)
    # A config saved before the family had other members is LinCIR's.
    config = LinCIRConfig.from_dict({"model_type": "lincir", "projection_dim": 512})
    assert (config.method_name, config.phi_type, config.placeholder_replacement) == ("lincir", "mlp", "all")
    assert config.phi_num_hidden_layers == 2 and config.normalize_image_embeds is False


def test_save_and_load_round_trip(models, reference_dir, expected, tmp_path):
    model = models["pic2word"]
    model.save_pretrained(tmp_path / "pic2word")
    config = AutoConfig.from_pretrained(tmp_path / "pic2word")
    assert (config.method_name, config.phi_type, config.placeholder_token) == ("pic2word", "im2text", "*")
    loaded = AutoModel.from_pretrained(tmp_path / "pic2word").eval()
    assert type(loaded) is LinCIRModel
    case = load_cases(reference_dir, "pic2word")["cases"][8]  # batch of 3, different positions
    reference = expected["pic2word"][case["expected"]["composed_embeds"]]
    assert (composed(loaded, case, expected["pic2word"]) - reference).abs().max() <= TOLERANCE
