"""`evaluate` and `hf-cir evaluate` end to end on the fixture layouts, with real tiny LinCIR and CompoDiff models."""

import json

import pytest
import torch
import torch.nn.functional as F
from huggingface_hub import ModelCard

from hf_cir.cli import main
from hf_cir.evaluation import (
    BENCHMARKS,
    EmbeddingTable,
    encode_benchmark_queries,
    evaluate,
    get_benchmark,
    get_benchmark_class,
)
from hf_cir.retrieval import default_device, load_retrieval_model


@pytest.fixture(scope="module")
def lincir(lincir_dir):
    return load_retrieval_model(lincir_dir, device="cpu")


def direct_lincir_features(model, benchmark):
    """Image and composed features computed with LinCIRModel and LinCIRProcessor directly."""
    lincir, processor = model.model, model.processor
    ids = benchmark.image_ids()
    with torch.no_grad():
        pixels = processor(images=[benchmark.load_image(i) for i in ids], return_tensors="pt")["pixel_values"]
        images = EmbeddingTable(ids, lincir.get_image_features(pixels).pooler_output)
        rows = []
        for query in benchmark.queries():
            inputs = processor(images=[benchmark.load_image(query.reference_id)] * len(query.texts), text=query.texts)
            composed = F.normalize(lincir.get_composed_features(**inputs).pooler_output, dim=-1)
            rows.append(F.normalize(composed.mean(0), dim=-1))
    return images, torch.stack(rows)


def test_lincir_on_cirr_matches_a_direct_computation(lincir, cirr_dir, tmp_path):
    benchmark = get_benchmark("cirr", cirr_dir, split="val")
    images, queries = direct_lincir_features(lincir, benchmark)
    expected = benchmark.compute_metrics(queries, images)
    result = evaluate(
        lincir, benchmark, cache_dir=tmp_path / "cache", show_progress=False, output_dir=tmp_path / "out"
    )
    assert result.method == "lincir" and result.num_queries == 3 and result.num_images == 8
    assert result.metrics == pytest.approx(expected)
    saved = json.loads((tmp_path / "out" / "results_cirr_val_lincir.json").read_text())
    assert saved["metrics"] == pytest.approx(expected) and saved["benchmark"] == "cirr"


def test_fashioniq_queries_average_both_caption_orders(lincir, fashioniq_dir):
    benchmark = get_benchmark("fashioniq", fashioniq_dir)
    images, expected = direct_lincir_features(lincir, benchmark)
    features = encode_benchmark_queries(lincir, benchmark.queries(), images, "lincir", show_progress=False)
    torch.testing.assert_close(features, expected, rtol=1e-5, atol=1e-6)
    one_order = encode_benchmark_queries(
        lincir,
        [q.__class__(**{**q.__dict__, "texts": q.texts[:1]}) for q in benchmark.queries()],
        images,
        "lincir",
        show_progress=False,
    )
    assert not torch.allclose(features, one_order)


def test_gallery_embeddings_are_cached(lincir, circo_dir, tmp_path):
    benchmark = get_benchmark("circo", circo_dir, split="val")
    calls = lincir.encode_image_calls
    first = evaluate(lincir, benchmark, method="image", cache_dir=tmp_path, batch_size=3, show_progress=False)
    assert first.computed_images == 8 and lincir.encode_image_calls - calls == 3  # batched: 3 + 3 + 2
    assert list(tmp_path.glob("circo-*/shard-*.safetensors"))
    calls = lincir.encode_image_calls
    for method in ("text", "sum", "lincir"):
        again = evaluate(lincir, benchmark, method=method, cache_dir=tmp_path, show_progress=False)
        assert again.computed_images == 0 and set(again.metrics) >= set(benchmark.metric_names)
    assert lincir.encode_image_calls == calls
    assert evaluate(lincir, benchmark, method="image", use_cache=False, show_progress=False).metrics == first.metrics
    # Image-only retrieval without reference removal finds the reference itself first: CIRCO's query 0 has the
    # reference 101 outside its ground truths, so AP@5 of that query is below 1.
    assert first.metrics["map@5"] < 100.0


def test_test_splits_write_submission_files(lincir, cirr_dir, circo_dir, tmp_path):
    cirr = evaluate(
        lincir,
        get_benchmark("cirr", cirr_dir, split="test"),
        cache_dir=tmp_path,
        output_dir=tmp_path / "o",
        show_progress=False,
    )
    assert cirr.metrics == {}
    recall = json.loads((tmp_path / "o" / "cirr_test1_recall_lincir.json").read_text())
    subset = json.loads((tmp_path / "o" / "cirr_test1_recall_subset_lincir.json").read_text())
    assert recall["version"] == subset["version"] == "rc2" and subset["metric"] == "recall_subset"
    assert set(recall) - {"version", "metric"} == {"11", "12", "13"}
    assert all(len(subset[k]) == 3 and len(recall[k]) == 7 for k in ("11", "12", "13"))
    circo = evaluate(
        lincir,
        get_benchmark("circo", circo_dir, split="test"),
        cache_dir=tmp_path,
        output_dir=tmp_path / "o",
        show_progress=False,
    )
    submission = json.loads((tmp_path / "o" / "circo_test_submission_lincir.json").read_text())
    assert set(submission) == {"0", "1"} and all(len(v) == 8 for v in submission.values())
    assert "circo_test_submission.json" in circo.files


def test_compodiff_on_genecis(compodiff_dir, genecis_dir, tmp_path):
    model = load_retrieval_model(compodiff_dir, device="cpu", num_inference_steps=2, num_samples_per_prompt=1)
    benchmark = get_benchmark("genecis", genecis_dir)
    result = evaluate(model, benchmark, cache_dir=tmp_path, show_progress=False)
    assert result.method == "compodiff" and set(result.metrics) == set(benchmark.metric_names)
    assert all(0.0 <= value <= 100.0 for value in result.metrics.values())
    # Metrics from the same query features computed by hand.
    images = EmbeddingTable(
        benchmark.image_ids(), model.encode_images([benchmark.load_image(i) for i in benchmark.image_ids()])
    )
    queries = torch.cat(
        [
            model.encode_queries(q.texts, image_embeds=images.rows([q.reference_id]), method="compodiff")
            for q in benchmark.queries()
        ]
    )
    assert result.metrics == pytest.approx(benchmark.compute_metrics(queries, images))


def run(capsys, *argv):
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_evaluate_json_and_model_card(capsys, lincir_dir, cirr_dir, tmp_path):
    common = [
        "--model",
        lincir_dir,
        "--benchmark",
        "cirr",
        "--data-dir",
        cirr_dir,
        "--cache-dir",
        tmp_path / "cache",
        "--output-dir",
        tmp_path / "out",
        "--no-progress",
    ]
    (lincir_dir / "README.md").write_text("---\nlicense: cc-by-nc-4.0\n---\n\n# My LinCIR\n\nHand-written notes.\n")
    code, out, err = run(capsys, "evaluate", *common, "--method", "lincir", "image", "--json", "--update-model-card")
    assert code == 0, err
    results = json.loads(out)["results"]
    assert [r["method"] for r in results] == ["lincir", "image"]
    card = ModelCard.load(lincir_dir / "README.md")
    entries = card.data.eval_results
    # Only the model's own method goes into the model-index; the image baseline is in the text, labelled.
    assert len(entries) == len(results[0]["metrics"]) and all(e.metric_name.endswith("(lincir)") for e in entries)
    recall = next(e for e in entries if e.metric_type == "recall@1" and e.metric_name == "recall@1 (lincir)")
    assert recall.dataset_type == "cirr" and recall.dataset_split == "val"
    assert recall.metric_value == pytest.approx(round(results[0]["metrics"]["recall@1"], 2))
    text = (lincir_dir / "README.md").read_text()
    assert "model-index" in text and "Hand-written notes." in text and card.data.license == "cc-by-nc-4.0"
    baselines = text.split("Baselines on the same data", 1)[1]
    assert f"| recall@1 (image) | {round(results[1]['metrics']['recall@1'], 2)} |" in baselines
    assert card.data.model_name == lincir_dir.name
    # Running again replaces the same entries instead of adding duplicates; other methods stay.
    code, out, err = run(capsys, "evaluate", *common, "--method", "lincir", "--update-model-card")
    assert code == 0 and "recall_subset@3" in out and "Updated the model card" in out
    assert len(ModelCard.load(lincir_dir / "README.md").data.eval_results) == len(entries)


def test_cli_evaluate_errors(capsys, lincir_dir, cirr_dir, fashioniq_dir, tmp_path):
    (cirr_dir / "cirr" / "image_splits" / "split.rc2.val.json").unlink()
    base = ["evaluate", "--model", lincir_dir, "--no-progress", "--cache-dir", tmp_path]
    (cirr_dir / "test1" / "test1-c.png").unlink()
    code, _, err = run(capsys, *base, "--benchmark", "cirr", "--data-dir", cirr_dir, "--split", "test")
    assert code == 2 and "no such file" in err and "test1-c.png" in err
    code, _, err = run(capsys, *base, "--benchmark", "cirr", "--data-dir", cirr_dir)
    assert code == 2 and "missing file" in err and "split.rc2.val.json" in err
    code, _, err = run(capsys, *base, "--benchmark", "fashioniq", "--data-dir", fashioniq_dir, "--method", "compodiff")
    assert code == 2 and "'compodiff' needs a compodiff model" in err
    code, _, err = run(capsys, *base, "--benchmark", "fashioniq", "--data-dir", fashioniq_dir, "--split", "test")
    assert code == 2 and "unknown split 'test'" in err
    code, _, err = run(capsys, *base, "--benchmark", "circo")
    assert code == 2 and "needs a data directory" in err
    code, _, err = run(capsys, "evaluate", "--model", "org/model", "--benchmark", "circo", "--update-model-card")
    assert code == 2 and "needs a local model folder" in err
    assert main(["evaluate", "--model", str(lincir_dir), "--benchmark", "imagenet"]) == 2
    assert "hf-cir evaluate: error: Unknown benchmark 'imagenet'" in capsys.readouterr().err
    import hf_cir.toy  # noqa: F401
    from hf_cir.commands.evaluate import BENCHMARK_NAMES

    assert set(BENCHMARK_NAMES) == set(BENCHMARKS)  # --help names every shipped benchmark


def test_registry_by_import(cirr_dir):
    import hf_cir.toy  # registers the toy benchmark
    from hf_cir.evaluation import Benchmark, register_benchmark
    from hf_cir.toy import ToyBenchmark

    assert get_benchmark_class("toy") is ToyBenchmark and set(BENCHMARKS) >= {"cirr", "circo", "fashioniq", "genecis"}
    assert get_benchmark("toy", split="val", num_queries=2).needs_data_dir is False
    with pytest.raises(ValueError, match="needs a data directory"):
        get_benchmark("cirr")
    with pytest.raises(ValueError, match="Unknown benchmark 'imagenet'; expected one of: circo, cirr"):
        get_benchmark_class("imagenet")
    with pytest.raises(TypeError, match="Benchmark subclass"):
        register_benchmark(dict)

    class OtherCIRR(Benchmark):
        name = "cirr"

    with pytest.raises(ValueError, match="already registered"):
        register_benchmark(OtherCIRR)
    assert get_benchmark("cirr", cirr_dir).name == "cirr"  # unaffected
    assert hf_cir.toy.ToyBenchmark is ToyBenchmark


def test_models_run_on_accelerates_device(lincir_dir):
    from accelerate import PartialState

    model = load_retrieval_model(lincir_dir)
    assert default_device() == PartialState().device == model.device
    assert next(model.model.parameters()).device.type == model.device.type


def test_cli_benchmark_options(capsys, lincir_dir, genecis_dir, tmp_path):
    base = [
        "evaluate",
        "--model",
        lincir_dir,
        "--benchmark",
        "genecis",
        "--data-dir",
        genecis_dir,
        "--no-progress",
        "--cache-dir",
        tmp_path,
        "--output-dir",
        tmp_path / "out",
        "--json",
    ]
    code, out, err = run(capsys, *base, "--benchmark-option", "tasks=change_object,focus_object", "--method", "image")
    assert code == 0, err
    metrics = json.loads(out)["results"][0]["metrics"]
    assert set(metrics) == {f"{t}_recall@{k}" for t in ("change_object", "focus_object") for k in (1, 2, 3)} | {
        f"average_recall@{k}" for k in (1, 2, 3)
    }
    code, _, err = run(capsys, *base, "--benchmark-option", "colour=red")
    assert code == 2 and "--benchmark-option" in err and "colour" in err
    code, _, err = run(capsys, *base, "--benchmark-option", "tasks")
    assert code == 2 and "expected KEY=VALUE" in err


def test_cli_evaluate_with_a_worker_equals_the_direct_computation(capsys, lincir, lincir_dir, cirr_dir, tmp_path):
    benchmark = get_benchmark("cirr", cirr_dir, split="val")
    expected = benchmark.compute_metrics(*reversed(direct_lincir_features(lincir, benchmark)))
    argv = ["evaluate", "--model", lincir_dir, "--benchmark", "cirr", "--data-dir", cirr_dir, "--num-workers", 1]
    code, out, _ = run(capsys, *argv, "--no-cache", "--no-progress", "--json", "--output-dir", tmp_path / "out")
    assert code == 0
    assert json.loads(out)["results"][0]["metrics"] == pytest.approx(expected)
