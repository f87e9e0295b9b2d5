"""LinCIRModel: parity with the reference fixtures, save/load, Auto classes, the SMP loss and bad inputs."""

import copy
import json
import math
from unittest import mock

import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    CLIPTextConfig,
    CLIPTextModelWithProjection,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

from hf_cir import LinCIRConfig, LinCIRModel, LinCIROutput
from hf_cir.conversion.lincir import convert_phi_state_dict, load_reference_phi

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def cases(reference_dir):
    return json.loads((reference_dir / "lincir" / "cases.json").read_text())["cases"]


@pytest.fixture(scope="module")
def expected(reference_dir):
    return load_file(reference_dir / "lincir" / "expected.safetensors")


def build_reference_model(reference_dir, attn_implementation="sdpa"):
    model = LinCIRModel.from_clip(reference_dir / "clip", attn_implementation=attn_implementation)
    model.phi.load_state_dict(convert_phi_state_dict(load_reference_phi(reference_dir / "lincir" / "phi.pt")))
    return model.eval()


@pytest.fixture(scope="module")
def model(reference_dir):
    return build_reference_model(reference_dir)


@pytest.fixture(scope="module")
def tokenizer(tiny_clip_dir):
    return AutoTokenizer.from_pretrained(tiny_clip_dir)


def composed(model, case, expected):
    input_ids = torch.tensor(case["input_ids"])
    inputs = case["inputs"]
    with torch.no_grad():
        if "image_embeds" in inputs:
            out = model.get_composed_features(input_ids, image_embeds=expected[inputs["image_embeds"]])
        else:
            out = model.get_composed_features(input_ids, pixel_values=expected[inputs["pixel_values"]])
    return out.pooler_output


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_composed_features_match_reference(reference_dir, cases, expected, attn_implementation, request):
    if attn_implementation == "sdpa":
        model = request.getfixturevalue("model")
    else:
        model = build_reference_model(reference_dir, attn_implementation)
    assert model.text_model.config._attn_implementation == attn_implementation
    assert len(cases) == 11
    for case in cases:
        out = composed(model, case, expected)
        reference = expected[case["expected"]["composed_embeds"]]
        assert out.shape == reference.shape
        assert (out - reference).abs().max().item() <= TOLERANCE, case["name"]


def test_intermediates_match_reference(model, cases, expected):
    for case in cases:
        intermediate = case["intermediate"]
        if "image_embeds" in intermediate:
            with torch.no_grad():
                image_embeds = model.get_image_features(expected[case["inputs"]["pixel_values"]]).pooler_output
            assert (image_embeds - expected[intermediate["image_embeds"]]).abs().max() <= TOLERANCE
        else:
            image_embeds = expected[case["inputs"]["image_embeds"]]
        with torch.no_grad():
            pseudo_tokens = model.get_pseudo_tokens(image_embeds)
        assert (pseudo_tokens - expected[intermediate["pseudo_tokens"]]).abs().max() <= TOLERANCE


def test_switching_attention_implementation_keeps_parity(model, cases, expected):
    model.set_attn_implementation("eager")
    try:
        assert model.text_model.config._attn_implementation == "eager"
        assert model.vision_model.config._attn_implementation == "eager"
        case = cases[7]  # batch of 3
        reference = expected[case["expected"]["composed_embeds"]]
        assert (composed(model, case, expected) - reference).abs().max() <= TOLERANCE
    finally:
        model.set_attn_implementation("sdpa")
    assert model.text_model.config._attn_implementation == "sdpa"


def test_without_placeholder_equals_plain_clip_and_towers_are_clip(model, tiny_clip_dir, tokenizer, expected):
    text_tower = CLIPTextModelWithProjection.from_pretrained(tiny_clip_dir, dtype=torch.float32).eval()
    vision_tower = CLIPVisionModelWithProjection.from_pretrained(tiny_clip_dir, dtype=torch.float32).eval()
    inputs = tokenizer(["a red car", "two dogs on a beach"], padding="max_length", return_tensors="pt")
    pixel_values = expected["p00_pil_rgb_square.pixel_values"]
    with torch.no_grad():
        assert torch.equal(model.get_text_features(**inputs).pooler_output, text_tower(**inputs).text_embeds)
        assert torch.equal(
            model.get_image_features(pixel_values).pooler_output, vision_tower(pixel_values=pixel_values).image_embeds
        )
        # The hook only touches placeholder rows: a text with a "$" and a zero-strength phi changes nothing else.
        ids = tokenizer(["a $ car"], padding="max_length", return_tensors="pt").input_ids
        pseudo = model.get_input_embeddings().weight[model.config.placeholder_token_id][None]
        assert torch.allclose(
            model._encode_with_pseudo_tokens(ids, pseudo).text_embeds, text_tower(input_ids=ids).text_embeds
        )


def test_padding_mask_does_not_change_composed_features(model, tokenizer, expected):
    image_embeds = expected["e07_batch3.image_embeds"]
    texts = ["$ on a sunny beach", "a photo of $ that is made of wood", "a cartoon drawing of $ next to $"]
    padded = tokenizer(texts, padding="max_length", return_tensors="pt")
    longest = tokenizer(texts, padding="longest", return_tensors="pt")
    with torch.no_grad():
        full = model.get_composed_features(padded.input_ids, image_embeds=image_embeds).pooler_output
        masked = model.get_composed_features(**padded, image_embeds=image_embeds).pooler_output
        short = model.get_composed_features(**longest, image_embeds=image_embeds).pooler_output
    assert (full - expected["e07_batch3.composed_embeds"]).abs().max() <= TOLERANCE
    assert (masked - full).abs().max() <= TOLERANCE
    assert (short - full).abs().max() <= TOLERANCE


def test_from_clip_config_comes_from_checkpoint_and_tokenizer(model, tiny_clip_dir, tokenizer):
    config = model.config
    assert config.model_type == "lincir"
    assert config.projection_dim == 64 and config.phi_hidden_size == 4 * 64
    assert config.text_config.hidden_size == 32 and config.vision_config.image_size == 32
    assert config.placeholder_token_id == tokenizer.convert_tokens_to_ids("$</w>")
    assert config.phi_dropout == 0.5 and config.prompt_template == "a photo of $ that {}"
    assert model.dtype == torch.float32
    assert not any(p.requires_grad for p in model.text_model.parameters())
    assert not any(p.requires_grad for p in model.vision_model.parameters())
    assert all(p.requires_grad for p in model.phi.parameters())
    custom = LinCIRModel.from_clip(tiny_clip_dir, phi_hidden_size=48, phi_dropout=0.1, prompt_template="$ and {}")
    assert custom.phi.layers[0].weight.shape == (48, 64) and custom.phi.layers[6].weight.shape == (32, 48)
    assert custom.config.phi_dropout == 0.1 and custom.phi.layers[2].p == 0.1
    assert custom.config.prompt_template == "$ and {}"


def test_from_clip_bad_arguments(tiny_clip_dir, tokenizer):
    with pytest.raises(ValueError, match="projection_dim"):
        LinCIRModel.from_clip(tiny_clip_dir, projection_dim=8)
    with pytest.raises(ValueError, match="placeholder"):
        LinCIRModel.from_clip(tiny_clip_dir, placeholder_token="[$]")  # not a single token of the CLIP vocabulary
    tokenizer = AutoTokenizer.from_pretrained(tiny_clip_dir)
    tokenizer.add_tokens(["<img>"])  # id 49408, above EOS: the legacy argmax pooling would pool there
    with pytest.raises(ValueError, match="pool"):
        LinCIRModel.from_clip(tiny_clip_dir, tokenizer=tokenizer, placeholder_token="<img>")


def test_checkpoint_folder_without_weights(tmp_path, tiny_clip_dir, model):
    model.config.save_pretrained(tmp_path)
    with pytest.raises(OSError, match="model.safetensors"):
        LinCIRModel.from_pretrained(tmp_path)
    clip_without_weights = tmp_path / "clip"
    clip_without_weights.mkdir()
    (clip_without_weights / "config.json").write_text((tiny_clip_dir / "config.json").read_text())
    with pytest.raises(OSError, match="model.safetensors"):
        LinCIRModel.from_clip(clip_without_weights, tokenizer=tiny_clip_dir)


def test_save_pretrained_round_trip_is_identical(model, tmp_path, cases, expected):
    model.save_pretrained(tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert "model.safetensors" in files and "config.json" in files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pkl", ".pth"))]
    stored = load_file(tmp_path / "model.safetensors")
    assert set(stored) == set(model.state_dict())
    assert any(key.startswith("phi.layers.") for key in stored)

    loaded = LinCIRModel.from_pretrained(tmp_path).eval()
    assert loaded.config.placeholder_token_id == model.config.placeholder_token_id
    for key, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], tensor), key
    for case in cases:
        assert torch.equal(composed(loaded, case, expected), composed(model, case, expected))
    assert not any(p.requires_grad for p in loaded.text_model.parameters())

    eager = LinCIRModel.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert eager.text_model.config._attn_implementation == "eager"
    case = cases[2]
    assert (composed(eager, case, expected) - expected[case["expected"]["composed_embeds"]]).abs().max() <= TOLERANCE


def test_auto_classes_after_import(model, tmp_path):
    model.save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, LinCIRConfig)
    loaded = AutoModel.from_pretrained(tmp_path)
    assert type(loaded) is LinCIRModel
    assert isinstance(AutoModel.from_config(config), LinCIRModel)


def test_smp_loss_uses_paper_noise_and_global_rng(model, tokenizer):
    captions = tokenizer(["a red car on a road", "two small dogs"], padding="max_length", return_tensors="pt")
    masked = tokenizer(["$ on $", "two $"], padding="max_length", return_tensors="pt")
    torch.manual_seed(0)
    out = model(input_ids=captions.input_ids, masked_input_ids=masked.input_ids)
    assert isinstance(out, LinCIROutput)

    # Recompute by hand: e + u * n, u ~ U(0, 1) per caption (drawn first), n ~ N(0, I).
    torch.manual_seed(0)
    with torch.no_grad():
        target = model.get_text_features(captions.input_ids).pooler_output
        noisy = target + torch.rand(2, 1) * torch.randn(2, 64)
        pseudo = model.get_pseudo_tokens(noisy)
        predicted = model._encode_with_pseudo_tokens(masked.input_ids, pseudo).text_embeds
    assert torch.equal(out.text_embeds, target)
    assert torch.allclose(out.pseudo_tokens, pseudo, atol=1e-6)
    assert torch.allclose(out.composed_embeds, predicted, atol=1e-6)
    assert torch.allclose(out.loss, torch.nn.functional.mse_loss(predicted, target), atol=1e-7)
    assert out.text_embeds.grad_fn is None  # the target is detached

    as_tuple = model(input_ids=captions.input_ids, masked_input_ids=masked.input_ids, return_dict=False)
    # (loss, composed_embeds, text_embeds, pseudo_tokens, text_model_output as a tuple)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 5 and as_tuple[0].dim() == 0
    assert torch.equal(as_tuple[2], target) and isinstance(as_tuple[4], tuple)


def test_smp_loss_noise_std(model, tokenizer):
    captions = tokenizer(["a red car on a road"], padding="max_length", return_tensors="pt")
    masked = tokenizer(["a $ on a road"], padding="max_length", return_tensors="pt")
    torch.manual_seed(3)
    out = model(input_ids=captions.input_ids, masked_input_ids=masked.input_ids, noise_std=0.5)
    torch.manual_seed(3)
    with torch.no_grad():
        target = model.get_text_features(captions.input_ids).pooler_output
        scale = 0.5 * target.norm(dim=-1, keepdim=True) / math.sqrt(64)
        pseudo = model.get_pseudo_tokens(target + scale * torch.randn(1, 64))
    assert torch.allclose(out.pseudo_tokens, pseudo, atol=1e-6)
    clean = model(input_ids=captions.input_ids, masked_input_ids=masked.input_ids, noise_std=0.0)
    with torch.no_grad():
        assert torch.allclose(clean.pseudo_tokens, model.get_pseudo_tokens(target), atol=1e-6)
    with pytest.raises(ValueError, match="noise_std"):
        model(input_ids=captions.input_ids, masked_input_ids=masked.input_ids, noise_std=-1.0)
    with pytest.raises(ValueError, match="1 captions but `masked_input_ids` has 2"):
        model(input_ids=captions.input_ids, masked_input_ids=masked.input_ids.repeat(2, 1))


def test_training_step_reaches_only_phi_and_is_reproducible(model, tokenizer):
    model = copy.deepcopy(model).train()
    captions = tokenizer(["a red car on a road", "two small dogs"], padding="max_length", return_tensors="pt")
    masked = tokenizer(["$ on $", "two $"], padding="max_length", return_tensors="pt")
    losses = []
    for _ in range(2):
        torch.manual_seed(1)
        model.zero_grad()
        loss = model(**{"input_ids": captions.input_ids, "masked_input_ids": masked.input_ids}).loss
        loss.backward()
        losses.append(loss.item())
    assert losses[0] == losses[1]  # noise and dropout come from the global RNG
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.phi.parameters())
    assert all(p.grad is None for p in model.text_model.parameters())
    assert all(p.grad is None for p in model.vision_model.parameters())
    optimizer = torch.optim.AdamW(model.phi.parameters(), lr=1e-2)
    first = None
    for _ in range(15):
        torch.manual_seed(2)
        optimizer.zero_grad()
        loss = model(input_ids=captions.input_ids, masked_input_ids=masked.input_ids, noise_std=0.0).loss
        loss.backward()
        optimizer.step()
        first = loss.item() if first is None else first
    assert loss.item() < first


def test_composed_features_bad_inputs(model, tokenizer, expected):
    with_placeholder = tokenizer(["a photo of $ that is red"], padding="max_length", return_tensors="pt").input_ids
    without = tokenizer(["a photo that is red"], padding="max_length", return_tensors="pt").input_ids
    image_embeds = expected["e00_red.image_embeds"]
    with pytest.raises(ValueError, match="needs the reference image.*placeholder"):
        model.get_composed_features(with_placeholder)
    with pytest.raises(ValueError, match="not both"):
        model.get_composed_features(
            with_placeholder, pixel_values=expected["p00_pil_rgb_square.pixel_values"], image_embeds=image_embeds
        )
    with pytest.raises(ValueError, match=r"rows \[0\] have no placeholder"):
        model.get_composed_features(without, image_embeds=image_embeds)
    with pytest.raises(ValueError, match="2 reference images for 1 texts"):
        model.get_composed_features(with_placeholder, image_embeds=image_embeds.repeat(2, 1))
    with pytest.raises(ValueError, match=r"shape \(batch_size, 64\)"):
        model.get_composed_features(with_placeholder, image_embeds=torch.zeros(1, 32))
    with pytest.raises(ValueError, match="sequence_length"):
        model.get_composed_features(with_placeholder[0], image_embeds=image_embeds)


def tiny_config(**kwargs):
    text = CLIPTextConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, projection_dim=8
    )
    vision = CLIPVisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=16,
        patch_size=8,
        projection_dim=8,
    )
    return LinCIRConfig(text_config=text, vision_config=vision, projection_dim=8, **kwargs)


def test_config_validation_and_placeholder_id_required():
    model = LinCIRModel(tiny_config())
    assert model.config.placeholder_token_id is None
    with pytest.raises(ValueError, match="placeholder_token_id"):
        model.get_composed_features(torch.ones(1, 5, dtype=torch.long), image_embeds=torch.zeros(1, 8))
    with pytest.raises(ValueError, match="projection_dim"):
        LinCIRConfig(text_config=CLIPTextConfig(projection_dim=16), projection_dim=512)
    with pytest.raises(ValueError, match="placeholder_token_id"):
        tiny_config(placeholder_token_id=10**6)
    with pytest.raises(ValueError, match="phi_dropout"):
        tiny_config(phi_dropout=1.5)
    with pytest.raises(ValueError, match="prompt_template"):
        tiny_config(prompt_template="a photo of {}")
    with pytest.raises(ValueError, match="prompt_template"):
        tiny_config(prompt_template="a photo of $")
    config = tiny_config(placeholder_token_id=259, phi_hidden_size=12)
    rebuilt = LinCIRConfig.from_dict(config.to_dict())
    assert rebuilt.phi_hidden_size == 12 and rebuilt.text_config.hidden_size == 16
    assert isinstance(rebuilt.vision_config, CLIPVisionConfig)


def test_first_eos_pooling_convention(tmp_path, tiny_clip_dir, reference_dir, cases, expected):
    # Configs with a real `eos_token_id` pool at the first EOS instead of argmax(input_ids): same result here.
    clip = tmp_path / "clip"
    clip.mkdir()
    for path in tiny_clip_dir.iterdir():
        (clip / path.name).write_bytes(path.read_bytes())
    config = json.loads((clip / "config.json").read_text())
    config["text_config"]["eos_token_id"] = 49407
    (clip / "config.json").write_text(json.dumps(config))
    model = LinCIRModel.from_clip(clip).eval()
    assert model.text_model.text_model.eos_token_id == 49407
    model.phi.load_state_dict(convert_phi_state_dict(load_reference_phi(reference_dir / "lincir" / "phi.pt")))
    for case in (cases[2], cases[7]):
        assert (
            composed(model, case, expected) - expected[case["expected"]["composed_embeds"]]
        ).abs().max() <= TOLERANCE


def test_mixed_precision_towers_with_float32_phi(model, tokenizer, expected):
    model = copy.deepcopy(model).to(torch.bfloat16)
    assert model.dtype == torch.bfloat16
    model.phi.float()  # as in training: frozen towers in half precision, phi in float32
    captions = tokenizer(["a red car on a road"], padding="max_length", return_tensors="pt")
    masked = tokenizer(["a $ on a road"], padding="max_length", return_tensors="pt")
    loss = model(input_ids=captions.input_ids, masked_input_ids=masked.input_ids).loss
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.phi.parameters())
    with torch.no_grad():
        query = model.get_composed_features(
            masked.input_ids, pixel_values=expected["p00_pil_rgb_square.pixel_values"]
        ).pooler_output
    assert query.dtype == torch.bfloat16 and query.shape == (1, 64)


def test_from_clip_rejects_checkpoint_without_projection(tmp_path, tiny_clip_dir):
    from transformers import CLIPTextModel

    CLIPTextModel.from_pretrained(tiny_clip_dir, dtype=torch.float32).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"missing weights \['text_projection.weight'\]"):
        LinCIRModel.from_clip(tmp_path, tokenizer=tiny_clip_dir)


def test_placeholder_hook_touches_only_its_own_forward(model, tokenizer, expected):
    own = tokenizer(["a photo of $ that is red"], padding="max_length", return_tensors="pt").input_ids
    other = tokenizer(["a $ car"], padding="max_length", return_tensors="pt").input_ids
    with torch.no_grad():
        plain_other = model.get_text_features(other).pooler_output
    original_forward = model.text_model.forward
    seen = {}

    def forward_with_concurrent_call(*args, **kwargs):
        seen["other"] = original_forward(input_ids=other).text_embeds  # another caller while the hook is registered
        return original_forward(*args, **kwargs)

    with mock.patch.object(model.text_model, "forward", forward_with_concurrent_call), torch.no_grad():
        out = model.get_composed_features(own, image_embeds=expected["e00_red.image_embeds"]).pooler_output
    assert torch.equal(seen["other"], plain_other)
    assert (out - expected["e00_red.composed_embeds"]).abs().max() <= TOLERANCE
    assert not model.get_input_embeddings()._forward_hooks  # removed after the call


def test_from_clip_loads_plain_towers_without_a_load_report(tiny_clip_dir):
    # One tower of a full CLIPModel checkpoint leaves the other's weights unused: declared through
    # `_keys_to_ignore_on_load_unexpected` on a loading subclass, so transformers prints no load report, and the towers
    # end up as the plain transformers classes (fails loudly if transformers changes how that attribute is read).
    import io
    import logging

    from transformers import CLIPTextModelWithProjection, CLIPVisionModelWithProjection

    def load_report(load):
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)  # transformers' logger does not propagate: listen on it directly
        logging.getLogger("transformers").addHandler(handler)
        try:
            result = load()
        finally:
            logging.getLogger("transformers").removeHandler(handler)
        return result, stream.getvalue()

    _, plain_report = load_report(lambda: CLIPTextModelWithProjection.from_pretrained(tiny_clip_dir))
    assert "UNEXPECTED" in plain_report  # the check below can see a report when there is one
    model, report = load_report(lambda: LinCIRModel.from_clip(tiny_clip_dir, dtype=torch.float32))
    assert "UNEXPECTED" not in report and "LOAD REPORT" not in report
    assert type(model.text_model) is CLIPTextModelWithProjection
    assert type(model.vision_model) is CLIPVisionModelWithProjection


def test_feature_methods_return_what_clipmodel_returns(model, tiny_clip_dir, tokenizer, expected):
    # Code written for transformers' CLIPModel runs unchanged: same output class, projected features in pooler_output.
    from transformers import CLIPModel

    clip = CLIPModel.from_pretrained(tiny_clip_dir, dtype=torch.float32).eval()
    inputs = tokenizer(["a red car", "two dogs on a beach"], padding="max_length", return_tensors="pt")
    pixel_values = expected["p00_pil_rgb_square.pixel_values"]
    with torch.no_grad():
        for ours, theirs in (
            (model.get_text_features(**inputs), clip.get_text_features(**inputs)),
            (model.get_image_features(pixel_values=pixel_values), clip.get_image_features(pixel_values=pixel_values)),
        ):
            assert type(ours) is type(theirs)
            assert torch.allclose(ours.pooler_output, theirs.pooler_output, atol=1e-6)
            assert torch.allclose(ours.last_hidden_state, theirs.last_hidden_state, atol=1e-6)
        hidden = model.get_text_features(**inputs, output_hidden_states=True)
        assert len(hidden.hidden_states) == model.config.text_config.num_hidden_layers + 1
        as_tuple = model.get_image_features(pixel_values, return_dict=False)
        assert isinstance(as_tuple, tuple)
        assert torch.equal(as_tuple[1], clip.get_image_features(pixel_values).pooler_output)


def test_model_call_with_processor_outputs_returns_the_composed_query(model, tiny_clip_dir):
    from PIL import Image

    from hf_cir import LinCIRProcessor

    processor = LinCIRProcessor.from_pretrained(tiny_clip_dir)
    images = [Image.new("RGB", (40, 30), "red"), Image.new("RGB", (30, 40), "blue")]
    inputs = processor(images=images, text=["is made of wood", "$ on a beach"])
    with torch.no_grad():
        out = model(**inputs)
        query = model.get_composed_features(**inputs).pooler_output
        image_embeds = model.get_image_features(inputs.pixel_values).pooler_output
        text_only = model(**processor(text=["a red car"]))
        image_only = model(**processor(images=images))
    assert out.loss is None and out.text_embeds is None
    assert torch.allclose(out.composed_embeds, query, atol=1e-6)
    assert torch.allclose(out.image_embeds, image_embeds, atol=1e-6)
    assert torch.equal(out.text_model_output.pooler_output, out.composed_embeds)
    assert out.pseudo_tokens.shape == (2, model.config.text_config.hidden_size)
    with torch.no_grad():
        text_features = model.get_text_features(**processor(text=["a red car"])).pooler_output
    assert torch.equal(text_only.text_embeds, text_features) and text_only.composed_embeds is None
    assert torch.allclose(image_only.image_embeds, image_embeds, atol=1e-6) and image_only.composed_embeds is None
    with pytest.raises(ValueError, match="no image"):
        model(**inputs, masked_input_ids=inputs.input_ids)
    with pytest.raises(ValueError, match="needs `input_ids`"):
        model()


def test_new_placeholder_token_resize_and_compose(tiny_clip_dir, reference_dir, expected, tmp_path):
    # A user's own placeholder: add it to the tokenizer, resize the embeddings, point the config at it, compose.
    from hf_cir import LinCIRProcessor

    model = build_reference_model(reference_dir)
    processor = LinCIRProcessor.from_pretrained(tiny_clip_dir)
    tokenizer = processor.tokenizer
    old_vocab = model.config.text_config.vocab_size
    assert tokenizer.add_tokens(["<ref-img>"]) == 1
    new_id = tokenizer.convert_tokens_to_ids("<ref-img>")
    embeddings = model.resize_token_embeddings(len(tokenizer))
    assert embeddings is model.get_input_embeddings() and embeddings.weight.shape[0] == len(tokenizer) == old_vocab + 1
    assert model.config.text_config.vocab_size == model.text_model.config.vocab_size == old_vocab + 1
    model.config.placeholder_token_id = new_id
    template = "a photo of <ref-img> that {}"
    ours = LinCIRProcessor(
        processor.image_processor, tokenizer, placeholder_token="<ref-img>", prompt_template=template
    )
    assert ours.placeholder_token_id == new_id
    inputs = ours(text=["is red"], compose=True)
    assert new_id in inputs.input_ids[0].tolist()
    image_embeds = expected["e00_red.image_embeds"]
    # This tiny CLIP has the legacy `eos_token_id == 2` (pooling at the largest id): a new token above EOS is refused ...
    with pytest.raises(ValueError, match="largest token id"):
        model.get_composed_features(**inputs, image_embeds=image_embeds)
    # ... until pooling moves to the first EOS, which changes nothing for ordinary texts.
    model.config.text_config.eos_token_id = model.text_model.text_model.eos_token_id = tokenizer.eos_token_id
    with torch.no_grad():
        query = model.get_composed_features(**inputs, image_embeds=image_embeds).pooler_output
    # The new token's slot holds phi's pseudo word, so the query equals the reference "$" query of the same text.
    assert (query - expected["e00_red.composed_embeds"]).abs().max() <= TOLERANCE
    model.save_pretrained(tmp_path)
    reloaded = LinCIRModel.from_pretrained(tmp_path)
    assert reloaded.get_input_embeddings().weight.shape[0] == old_vocab + 1
    assert reloaded.config.placeholder_token_id == new_id


def test_missing_weights_are_initialised_as_clip_initialises_them():
    # `from_pretrained` with missing weights initialises each tower with CLIP's own scheme (the attention/MLP/projection
    # weights are set from their parent modules), not with a generic normal(0.02).
    config = tiny_config(placeholder_token_id=5)
    model = LinCIRModel.from_pretrained(None, config=config, state_dict={})
    text = model.text_model.text_model
    embed_dim, layers = config.text_config.hidden_size, config.text_config.num_hidden_layers
    expected_std = embed_dim**-0.5 * (2 * layers) ** -0.5 * config.text_config.initializer_factor
    q_proj = text.encoder.layers[0].self_attn.q_proj.weight
    # q_proj of a 16-wide, 1-layer tower: CLIP's std is 0.177; the generic default would be 0.02.
    assert abs(q_proj.std().item() - expected_std) < 0.3 * expected_std
    assert all(p.device.type == "cpu" and torch.isfinite(p).all() for p in model.parameters())
