"""CompoDiffPriorTransformer: parity with the reference network, the cached fast path, saving and loading."""

import pytest
import torch

from hf_cir import CompoDiffPriorTransformer, CompoDiffPriorTransformerOutput
from hf_cir.models.compodiff import CompoDiffPriorContext

TOLERANCE = 1e-5


def tiny_prior(seed=0, **overrides):
    torch.manual_seed(seed)
    config = dict(
        embedding_dim=32,
        num_layers=2,
        num_attention_heads=2,
        attention_head_dim=16,
        num_cross_attention_heads=3,
        text_embed_dim=24,
        mask_size=8,
    )
    config.update(overrides)
    prior = CompoDiffPriorTransformer(**config).eval()
    with torch.no_grad():  # the default init leaves LayerNorm gains at 1 and the null key/values arbitrary
        for parameter in prior.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return prior


def random_conditions(prior, batch, text_batch=None, seed=1):
    generator = torch.Generator().manual_seed(seed)
    config = prior.config
    text = torch.randn(text_batch or batch, 77, config.text_embed_dim, generator=generator)
    image = torch.randn(batch, config.embedding_dim, generator=generator)
    mask = (torch.rand(batch, config.mask_size, config.mask_size, generator=generator) > 0.5).float()
    return text, image, mask


@pytest.mark.parametrize("case_index", range(4))
def test_prior_forward_matches_reference(reference_prior, compodiff_cases, compodiff_tensors, case_index):
    prior, _ = reference_prior
    case = compodiff_cases["prior_forward_cases"][case_index]
    inputs = {name: compodiff_tensors[key] for name, key in case["inputs"].items()}
    expected = compodiff_tensors[case["expected"]["predicted_image_embedding"]][:, 0]
    with torch.no_grad():
        output = prior(
            hidden_states=inputs["hidden_states"][:, 0],  # the reference takes [B, 1, D]; we take [B, D]
            timestep=inputs["timestep"],
            image_embeds=inputs["image_embeds"][:, 0],
            text_hidden_states=inputs["text_hidden_states"],
            mask=inputs["mask"],
        )
        context = prior.prepare_context(inputs["text_hidden_states"], inputs["image_embeds"][:, 0], inputs["mask"])
        cached = prior(inputs["hidden_states"][:, 0], inputs["timestep"], context_cache=context)
    assert isinstance(output, CompoDiffPriorTransformerOutput)
    assert output.predicted_image_embedding.shape == expected.shape
    assert (output.predicted_image_embedding - expected).abs().max() <= TOLERANCE
    assert (cached.predicted_image_embedding - expected).abs().max() <= TOLERANCE


@pytest.mark.parametrize("samples", [1, 3])
def test_context_cache_equals_plain_path(samples):
    prior = tiny_prior()
    batch = 4
    text, image, mask = random_conditions(prior, batch)
    hidden = torch.randn(batch * samples, prior.config.embedding_dim)
    with torch.no_grad():
        context = prior.prepare_context(text, image, mask)
        for timestep in (999, 500, 0):
            fast = prior(hidden, timestep, context_cache=context).predicted_image_embedding
            plain = prior(
                hidden,
                torch.full((batch * samples,), timestep),
                image.repeat_interleave(samples, 0),  # row b * R + r uses context b
                text.repeat_interleave(samples, 0),
                mask.repeat_interleave(samples, 0),
            ).predicted_image_embedding
            assert (fast - plain).abs().max() <= TOLERANCE
            assert fast.abs().max() > 1e-3  # a real output, not a degenerate zero


def test_shared_text_is_tiled_and_contexts_concatenate():
    prior = tiny_prior()
    text, image, mask = random_conditions(prior, 3, text_batch=1)
    with torch.no_grad():
        shared = prior.prepare_context(text, torch.cat([image, torch.zeros_like(image)]), torch.cat([mask, mask]))
        explicit = prior.prepare_context(text.expand(6, -1, -1), torch.cat([image, torch.zeros_like(image)]), None)
        first = prior.prepare_context(text.expand(3, -1, -1), image, mask)
        both = CompoDiffPriorContext.cat([first, shared])
    assert shared.num_contexts == 6 and both.num_contexts == 9
    for (key, _), (key_both, _) in zip(shared.key_values, both.key_values):
        assert key_both.shape[0] == 9 and torch.equal(key_both[3:], key)
    # Tiling a single text gives the same keys as repeating it explicitly (the mask part differs: zeros there).
    text_length = 1 + text.shape[1]
    for (key, _), (key_explicit, _) in zip(shared.key_values, explicit.key_values):
        assert torch.allclose(key[:, :, :text_length], key_explicit[:, :, :text_length], atol=1e-6)
        assert not torch.allclose(key[:, :, -1], key_explicit[:, :, -1])


def test_gradients_and_gradient_checkpointing():
    prior = tiny_prior()
    text, image, mask = random_conditions(prior, 2)
    hidden = torch.randn(2, prior.config.embedding_dim)
    prior.train()
    loss = prior(hidden, torch.tensor([10, 900]), image, text, mask).predicted_image_embedding.square().mean()
    loss.backward()
    grads = {name: p.grad.clone() for name, p in prior.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["text_proj.weight"].abs().sum() > 0 and grads["mask_proj.linear_1.weight"].abs().sum() > 0
    prior.zero_grad()
    prior.enable_gradient_checkpointing()
    loss_2 = prior(hidden, torch.tensor([10, 900]), image, text, mask).predicted_image_embedding.square().mean()
    loss_2.backward()
    assert torch.allclose(loss, loss_2)
    assert torch.allclose(prior.text_proj.weight.grad, grads["text_proj.weight"], atol=1e-6)


def test_save_load_round_trip_safetensors(tmp_path):
    prior = tiny_prior(rotary_dim=8)
    text, image, mask = random_conditions(prior, 2)
    hidden = torch.randn(2, prior.config.embedding_dim)
    prior.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    assert not list(tmp_path.glob("*.bin"))
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "diffusion_pytorch_model.safetensors"))
    assert "rotary_frequencies" not in saved  # computed, not stored
    loaded = CompoDiffPriorTransformer.from_pretrained(tmp_path).eval()  # built on the meta device
    assert loaded.config.rotary_dim == 8
    with torch.no_grad():
        before = prior(hidden, 300, image, text, mask).predicted_image_embedding
        after = loaded(hidden, 300, image, text, mask).predicted_image_embedding
    assert torch.equal(before, after)
    assert torch.equal(loaded.rotary_frequencies, prior.rotary_frequencies)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"num_layers": 0}, "num_layers"),
        ({"rotary_dim": 7}, "rotary_dim"),
        ({"rotary_dim": 64}, "rotary_dim"),
        ({"embedding_dim": 33}, "embedding_dim"),
    ],
)
def test_bad_config(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_prior(**overrides)


def test_bad_forward_inputs():
    prior = tiny_prior()
    text, image, mask = random_conditions(prior, 2)
    hidden = torch.randn(2, prior.config.embedding_dim)
    with pytest.raises(ValueError, match="hidden_states"):
        prior(hidden[:, None], 1, image, text, mask)
    with pytest.raises(ValueError, match="text_hidden_states"):
        prior(hidden, 1, image, text[..., :5], mask)
    with pytest.raises(ValueError, match="mask"):
        prior(hidden, 1, image, text, mask[:, :4])
    with pytest.raises(ValueError, match="timestep"):
        prior(hidden, torch.tensor([1, 2, 3]), image, text, mask)
    with pytest.raises(ValueError, match="divide"):
        prior.prepare_context(torch.cat([text, text[:1]]), image, mask)
    context = prior.prepare_context(text, image, mask)
    with pytest.raises(ValueError, match="multiple"):
        prior(torch.randn(3, prior.config.embedding_dim), 1, context_cache=context)
    with pytest.raises(ValueError, match="either"):
        prior(hidden, 1, image, context_cache=context)
