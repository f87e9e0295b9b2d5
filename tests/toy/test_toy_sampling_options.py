"""`hf-cir evaluate --benchmark toy` (the toy table) honours CompoDiff's sampling and precision options."""

import json

import torch

import hf_cir.toy.benchmark as toy_benchmark
from hf_cir.cli import main
from hf_cir.pipelines.compodiff.pipeline_compodiff import SAMPLING_PRESETS

SMALL = ["--benchmark-option", "num_queries=40", "--benchmark-option", "seeds=0"]


def toy_table(capsys, *options):
    code = main(["evaluate", "--benchmark", "toy", *SMALL, "--json", "--no-progress", *options])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def test_toy_table_honours_sampling_options(capsys):
    default = toy_table(capsys)
    fast = toy_table(capsys, "--scheduler", "DPMSolverMultistepScheduler", "--num-inference-steps", "3")
    samples = toy_table(capsys, "--num-samples-per-prompt", "1", "--guidance-scale", "3.0")
    preset = toy_table(capsys, "--preset", "interactive")
    int8 = toy_table(capsys, "--precision", "int8")
    image_guidance = toy_table(capsys, "--image-guidance-scale", "3.5", "--seed", "5")
    for other in (fast, samples, preset, int8, image_guidance):
        assert other.keys() == default.keys()
        # The rows that do not sample stay exactly as they are ...
        for label in default:
            if label != "CompoDiff":
                assert other[label] == default[label], label
    # ... and the CompoDiff row follows every option.
    rows = [table["CompoDiff"]["0"] for table in (default, fast, samples, preset, int8, image_guidance)]
    assert len({json.dumps(row, sort_keys=True) for row in rows}) == len(rows), rows


def test_toy_table_rejects_a_bad_preset(capsys):
    code = main(["evaluate", "--benchmark", "toy", *SMALL, "--preset", "fastest", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "Unknown preset 'fastest'" in err and len(err.strip().splitlines()) == 1


def compodiff_options_of(monkeypatch, capsys, *options) -> dict:
    """The CompoDiff options `hf-cir evaluate --benchmark toy OPTIONS` hands to the toy table (not run here)."""
    seen = {}

    def record(**kwargs):
        seen.update(kwargs)
        return {}

    monkeypatch.setattr(toy_benchmark, "evaluate_toy_models", record)
    toy_table(capsys, *options)
    return seen["compodiff_options"]


def test_every_sampling_option_reaches_the_compodiff_model(monkeypatch, capsys):
    """Each option of `hf-cir evaluate` for CompoDiff is applied to the toy table's CompoDiff model (the numbers
    for some of them are compared above; here every option, cheaply, without evaluating)."""
    options = compodiff_options_of(
        monkeypatch, capsys,
        "--num-inference-steps", "4", "--guidance-scale", "3.0", "--image-guidance-scale", "2.5",
        "--num-samples-per-prompt", "3", "--seed", "7", "--scheduler", "UniPCMultistepScheduler", "--precision", "int8",
    )  # fmt: skip
    model = toy_benchmark.load_toy_models(compodiff_options=options)["compodiff"]
    assert model.sampling_kwargs == {
        "num_inference_steps": 4, "guidance_scale": 3.0, "image_guidance_scale": 2.5, "num_samples_per_prompt": 3,
    }  # fmt: skip
    assert model.seed == 7
    assert type(model.pipeline.scheduler).__name__ == "UniPCMultistepScheduler"
    assert any("quantized" in type(m).__module__ for m in model.pipeline.prior.modules())
    assert model.pipeline.text_encoding_cache is not None  # on in evaluate, bounded
    assert model.pipeline.text_encoding_cache.max_entries == toy_benchmark.TOY_TEXT_CACHE_SIZE

    # A preset, with an explicit option overriding one of its settings.
    options = compodiff_options_of(monkeypatch, capsys, "--preset", "interactive", "--num-inference-steps", "5")
    model = toy_benchmark.load_toy_models(compodiff_options=options)["compodiff"]
    preset = SAMPLING_PRESETS["interactive"]
    assert type(model.pipeline.scheduler).__name__ == preset["scheduler"]
    for key, value in preset["scheduler_kwargs"].items():
        assert model.pipeline.scheduler.config[key] == value, key
    assert model.pipeline.default_num_samples_per_prompt == preset["num_samples_per_prompt"]
    assert model.sampling_kwargs["num_inference_steps"] == 5  # the explicit option wins

    # --dtype sets every CompoDiff weight (the other rows do not sample and keep their float32 models).
    options = compodiff_options_of(monkeypatch, capsys, "--dtype", "bfloat16")
    assert options["dtype"] is torch.bfloat16
    model = toy_benchmark.load_toy_models(compodiff_options=options)["compodiff"]
    assert {p.dtype for p in model.pipeline.prior.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in model.pipeline.image_encoder.parameters()} == {torch.bfloat16}
