"""`hf-cir evaluate --benchmark toy` (the toy table) honours CompoDiff's sampling and precision options."""

import json

from hf_cir.cli import main

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
    for other in (fast, samples, preset, int8):
        assert other.keys() == default.keys()
        # The rows that do not sample stay exactly as they are ...
        for label in default:
            if label != "CompoDiff":
                assert other[label] == default[label], label
    # ... and the CompoDiff row follows every option.
    rows = [table["CompoDiff"]["0"] for table in (default, fast, samples, preset, int8)]
    assert len({json.dumps(row, sort_keys=True) for row in rows}) == len(rows), rows


def test_toy_table_rejects_a_bad_preset(capsys):
    code = main(["evaluate", "--benchmark", "toy", *SMALL, "--preset", "fastest", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "Unknown preset 'fastest'" in err and len(err.strip().splitlines()) == 1
