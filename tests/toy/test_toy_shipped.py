"""The shipped toy checkpoints: they load, and on the held-out toy benchmark (seed 0) trained LinCIR beats its untrained
phi and every baseline on Recall@10, and CompoDiff beats every baseline. The numbers are computed here, not stored."""

import pytest

from hf_cir.toy.benchmark import evaluate_toy_models, load_toy_models
from hf_cir.toy.checkpoints import default_checkpoints_dir, toy_checkpoint

BASELINES = ("image only", "text only", "sum of image and text")


@pytest.fixture(scope="module")
def results():
    models = load_toy_models(device="cpu")
    assert {"lincir", "untrained", "compodiff"} <= set(models), "a shipped toy checkpoint is missing"
    return {
        label: per_seed[0]
        for label, per_seed in evaluate_toy_models(seeds=(0,), num_queries=600, models=models).items()
    }


def test_checkpoints_are_small_safetensors():
    files = [p for p in default_checkpoints_dir().rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 20 * 2**20
    assert all(p.stat().st_size < 5 * 2**20 for p in files)
    assert not [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".pkl")]
    for name in ("clip", "lincir", "compodiff"):
        assert (toy_checkpoint(name) / "README.md").is_file()


def test_trained_lincir_beats_untrained_phi_and_baselines(results):
    lincir = results["LinCIR (trained)"]["recall@10"]
    assert lincir > results["LinCIR, untrained phi"]["recall@10"]
    for baseline in BASELINES:
        assert lincir > results[baseline]["recall@10"], (baseline, results)


def test_compodiff_beats_baselines(results):
    compodiff = results["CompoDiff"]["recall@10"]
    for baseline in BASELINES:
        assert compodiff > results[baseline]["recall@10"], (baseline, results)


def test_shipped_checkpoints_hold_no_remote_code_copies():
    # The package is their code; copies inside the checkpoints would be a second version that can drift. The
    # CompoDiff folder's module files (for `DiffusionPipeline.from_pretrained(..., trust_remote_code=True)`) are
    # links to the package's own files.
    package = default_checkpoints_dir().parents[1]
    for path in default_checkpoints_dir().rglob("*.py"):
        assert path.is_symlink() and path.resolve().is_relative_to(package.resolve()), path
        assert not path.resolve().is_relative_to(default_checkpoints_dir().resolve()), path
    assert len(list(toy_checkpoint("compodiff").rglob("*.py"))) == 3
    assert "auto_map" not in (toy_checkpoint("lincir") / "config.json").read_text()


def test_evaluate_toy_without_model_prints_the_table(capsys):
    from hf_cir.cli import main

    argv = ["evaluate", "--benchmark", "toy", "--benchmark-option", "seeds=0", "--benchmark-option", "num_queries=40"]
    assert main(argv) == 0
    table = capsys.readouterr().out
    for label in ("image only", "text only", "sum of image and text", "LinCIR, untrained phi", "CompoDiff"):
        assert f"| {label} |" in table
    assert "R@10 (seed 0)" in table


def test_evaluate_other_benchmark_without_model_is_an_error(capsys):
    from hf_cir.cli import main

    assert main(["evaluate", "--benchmark", "cirr", "--data-dir", "nowhere"]) == 2
    assert "--model is required for --benchmark cirr" in capsys.readouterr().err
