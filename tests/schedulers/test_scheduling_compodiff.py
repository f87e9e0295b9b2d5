"""CompoDiffScheduler: the reference grid, schedule and update, and its errors."""

import pytest
import torch

from hf_cir import CompoDiffScheduler
from hf_cir.conversion.compodiff import load_original_checkpoint


def test_timestep_grid_matches_reference(compodiff_cases):
    scheduler = CompoDiffScheduler()
    scheduler.set_timesteps(10)
    pairs = compodiff_cases["timestep_pairs"]
    assert scheduler.timesteps.tolist() == [pair[0] for pair in pairs]
    assert scheduler.next_timesteps.tolist() == [pair[1] for pair in pairs]
    assert scheduler.timesteps.tolist() == compodiff_cases["network_evaluations_at"]


def test_schedule_equals_reference_buffers(compodiff_reference_dir):
    state_dict, _ = load_original_checkpoint(compodiff_reference_dir / "reference_checkpoint")
    scheduler = CompoDiffScheduler()
    for name in ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_recip_alphas_cumprod"):
        assert torch.equal(getattr(scheduler, name), state_dict[f"model.noise_scheduler.{name}"]), name
    assert torch.equal(
        scheduler.sqrt_recipm1_alphas_cumprod, state_dict["model.noise_scheduler.sqrt_recipm1_alphas_cumprod"]
    )


def test_step_follows_reference_equations():
    scheduler = CompoDiffScheduler()
    scheduler.set_timesteps(10)
    generator = torch.Generator().manual_seed(3)
    sample, x0 = torch.randn(4, 8, generator=generator), torch.randn(4, 8, generator=generator)
    noise = torch.randn(4, 8, generator=generator)
    output = scheduler.step(x0, 899, sample, variance_noise=noise)
    a, a_next = scheduler.alphas_cumprod_prev[899], scheduler.alphas_cumprod_prev[799]
    eps = (scheduler.sqrt_recip_alphas_cumprod[899] * sample - x0) / scheduler.sqrt_recipm1_alphas_cumprod[899]
    c1 = ((1 - a / a_next) * (1 - a_next) / (1 - a)).sqrt()
    c2 = ((1 - a_next) - c1**2).sqrt()
    assert torch.allclose(output.prev_sample, x0 * a_next.sqrt() + c1 * noise + c2 * eps, atol=1e-6)
    assert output.pred_original_sample is x0
    # The last step jumps to the prediction, drawing nothing.
    state = generator.get_state()
    assert torch.equal(scheduler.step(x0, 99, sample, generator=generator).prev_sample, x0)
    assert torch.equal(generator.get_state(), state)
    # The generator is the only source of noise.
    first = scheduler.step(x0, 899, sample, generator=torch.Generator().manual_seed(1)).prev_sample
    second = scheduler.step(x0, 899, sample, generator=torch.Generator().manual_seed(1)).prev_sample
    assert torch.equal(first, second)


def test_one_step_and_full_grid():
    scheduler = CompoDiffScheduler(num_train_timesteps=50)
    scheduler.set_timesteps(1)
    assert scheduler.timesteps.tolist() == [49] and scheduler.next_timesteps.tolist() == [-1]
    scheduler.set_timesteps(50)
    assert len(scheduler.timesteps) == 49 and scheduler.timesteps[-1] == 0  # no duplicates, ends at t = 0
    assert len(set(scheduler.timesteps.tolist())) == 49


def test_add_noise_and_scale_model_input():
    scheduler = CompoDiffScheduler()
    x0, noise = torch.randn(3, 8), torch.randn(3, 8)
    timesteps = torch.tensor([0, 500, 999])
    noisy = scheduler.add_noise(x0, noise, timesteps)
    expected = scheduler.sqrt_alphas_cumprod[timesteps, None] * x0
    expected = expected + scheduler.sqrt_one_minus_alphas_cumprod[timesteps, None] * noise
    assert torch.allclose(noisy, expected)
    assert (noisy[2] - noise[2]).abs().max() < 0.05  # t = 999 is almost pure noise
    assert scheduler.scale_model_input(x0, 10) is x0 and scheduler.init_noise_sigma == 1.0
    with pytest.raises(ValueError, match="timesteps"):
        scheduler.add_noise(x0, noise, torch.tensor([0, 1, 1000]))


def test_config_round_trip(tmp_path):
    scheduler = CompoDiffScheduler(num_train_timesteps=500, eta=0.5)
    scheduler.save_pretrained(tmp_path)
    loaded = CompoDiffScheduler.from_pretrained(tmp_path)
    assert loaded.config.num_train_timesteps == 500 and loaded.config.eta == 0.5
    assert torch.equal(loaded.betas, scheduler.betas)


@pytest.mark.parametrize("steps", [0, -3, 1001, 2.5])
def test_bad_num_inference_steps(steps):
    with pytest.raises(ValueError, match="num_inference_steps"):
        CompoDiffScheduler().set_timesteps(steps)


def test_bad_config_and_order_of_calls():
    with pytest.raises(ValueError, match="beta_schedule"):
        CompoDiffScheduler(beta_schedule="linear")
    with pytest.raises(ValueError, match="prediction_type"):
        CompoDiffScheduler(prediction_type="epsilon")
    with pytest.raises(ValueError, match="set_timesteps"):
        CompoDiffScheduler().step(torch.zeros(1, 2), 899, torch.zeros(1, 2))
    scheduler = CompoDiffScheduler()
    scheduler.set_timesteps(10)
    with pytest.raises(ValueError, match="not in the grid"):
        scheduler.step(torch.zeros(1, 2), 900, torch.zeros(1, 2))
