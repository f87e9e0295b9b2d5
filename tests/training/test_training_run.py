"""The pieces the training scripts share around their loops: the common arguments, the run's start (resume ->
output folder check -> seed), the optimizer step, step logging, checkpoint hooks with EMA, and the run's finish."""

import argparse
import json

import pytest
import torch
from safetensors.torch import load_file

from hf_cir.training import (
    add_accelerator_arguments,
    add_checkpoint_arguments,
    add_dataset_arguments,
    add_hub_arguments,
    add_logging_arguments,
    add_optimization_arguments,
    build_accelerator,
    check_dataset_arguments,
    check_training_arguments,
    create_ema,
    create_optimizer_and_scheduler,
    finish_run,
    log_training_step,
    optimizer_step,
    register_checkpoint_hooks,
    resume_training,
    save_checkpoint,
    start_run,
    train_results,
)

from .helpers import _reset_accelerate


@pytest.fixture()
def fresh_accelerate():
    _reset_accelerate()
    yield
    _reset_accelerate()


def training_parser(use_ema: bool = False) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_dataset_arguments(parser)
    add_optimization_arguments(
        parser,
        max_train_steps=4,
        lr_scheduler="constant",
        lr_warmup_steps=0,
        adam_weight_decay=0.0,
        max_grad_norm=None,
        use_ema=use_ema,
    )
    add_accelerator_arguments(parser)
    add_checkpoint_arguments(parser, checkpointing_steps=2)
    add_logging_arguments(parser)
    add_hub_arguments(parser)
    return parser


def test_shared_arguments_defaults_and_ema_switches():
    args = training_parser(use_ema=False).parse_args(["--output_dir", "o", "--train_file", "a.txt"])
    assert (args.max_train_steps, args.checkpointing_steps, args.use_ema, args.report_to) == (4, 2, False, "none")
    assert training_parser(use_ema=True).parse_args(["--output_dir", "o"]).use_ema is True
    assert training_parser(use_ema=True).parse_args(["--output_dir", "o", "--no-use_ema"]).use_ema is False


def test_check_arguments_name_the_bad_argument(capsys):
    parser = training_parser()
    with pytest.raises(SystemExit):
        check_dataset_arguments(parser, parser.parse_args(["--output_dir", "o"]))
    assert "exactly one of --dataset_name and --train_file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        check_training_arguments(
            parser, parser.parse_args(["--output_dir", "o", "--gradient_accumulation_steps", "0"])
        )
    assert "--gradient_accumulation_steps must be >= 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        check_training_arguments(
            parser, parser.parse_args(["--output_dir", "o", "--logging_steps", "0"]), ("logging_steps",)
        )
    assert "--logging_steps must be >= 1" in capsys.readouterr().err
    args = parser.parse_args(["--output_dir", "runs/my-model", "--push_to_hub"])
    check_training_arguments(parser, args)
    assert args.hub_model_id == "my-model"


class TwoLayers(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.frozen, self.trained = torch.nn.Linear(3, 3), torch.nn.Linear(3, 1)

    def forward(self, x):
        return self.trained(self.frozen(x))


def test_start_run_optimizer_step_checkpoint_hooks_and_resume(tmp_path, fresh_accelerate):
    """A run with EMA saves only the trained submodule and its EMA (safetensors); a resumed run gets the seed, step,
    weights and EMA back exactly."""
    argv = ["--output_dir", tmp_path, "--train_file", "a.txt", "--use_ema", "--seed", "3", "--cpu"]
    args = training_parser().parse_args([str(a) for a in argv])
    accelerator = build_accelerator(args)
    resume_dir, state, seed = start_run(accelerator, args, {"script": "test"})
    assert (resume_dir, state, seed) == (None, {}, 3)
    assert json.loads((tmp_path / "training_run.json").read_text())["script"] == "test"

    model = TwoLayers()
    model.frozen.requires_grad_(False)
    optimizer, lr_scheduler = create_optimizer_and_scheduler(model.trained.parameters(), args, accelerator)
    model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    ema = create_ema(model.trained, args.use_ema, args.ema_decay, accelerator.device)
    register_checkpoint_hooks(
        accelerator, "trained.safetensors", submodule="trained", ema=ema, ema_weights_name="ema.safetensors"
    )
    history = []
    for step in (1, 2):
        loss = model(torch.ones(2, 3)).pow(2).mean()
        accelerator.backward(loss)
        optimizer_step(accelerator, optimizer, lr_scheduler, list(model.trained.parameters()), 1.0, ema=ema)
        assert log_training_step(accelerator, args, step, loss.detach(), lr_scheduler, history) == pytest.approx(
            loss.item()
        )
    assert [entry["step"] for entry in history] == [1, 2] and ema.optimization_step == 2
    checkpoint = save_checkpoint(accelerator, tmp_path, 2, {"seed": seed, "log_history": history})
    saved = load_file(str(checkpoint / "trained.safetensors"))
    assert sorted(saved) == ["bias", "weight"]  # the trained submodule only, not the frozen layer
    assert torch.equal(saved["weight"], model.trained.weight.detach())
    assert sorted(load_file(str(checkpoint / "ema.safetensors"))) == ["bias", "weight"]
    trained_weight, shadow = model.trained.weight.detach().clone(), [p.clone() for p in ema.shadow_params]

    with torch.no_grad():
        model.trained.weight.zero_()
        for p in ema.shadow_params:
            p.zero_()
    args.resume_from_checkpoint = "latest"
    resume_dir, state, seed = start_run(accelerator, args, {"script": "test"})
    assert resume_dir == checkpoint and seed == 3
    global_step, log_history = resume_training(accelerator, args, resume_dir, state)
    assert (global_step, log_history) == (2, history)
    assert torch.equal(model.trained.weight.detach(), trained_weight)
    assert all(torch.equal(a, b) for a, b in zip(ema.shadow_params, shadow))

    args.push_to_hub = False
    finish_run(args, history)
    assert json.loads((tmp_path / "training_log.json").read_text()) == history
    assert train_results(history) == {"final_train_loss": history[-1]["train/loss"]}
    assert train_results([]) == {}


def test_register_checkpoint_hooks_needs_a_file_name_for_the_ema(fresh_accelerate):
    accelerator = build_accelerator(argparse.Namespace(mixed_precision=None, cpu=True), tracking=False)
    ema = create_ema(torch.nn.Linear(2, 2), True, 0.99, "cpu")
    with pytest.raises(ValueError, match="ema_weights_name"):
        register_checkpoint_hooks(accelerator, "model.safetensors", ema=ema)
    assert create_ema(torch.nn.Linear(2, 2), False, 0.99, "cpu") is None
