"""`hf-cir evaluate --method magiclens` on the fixture layouts with a tiny converted MagicLens: it composes from the
reference image's pixels, uses the reference evaluation's query texts, and writes the test-server files."""

import json

import pytest
import torch
import torch.nn.functional as F

from hf_cir.cli import main
from hf_cir.conversion.magiclens import convert_magiclens_checkpoint
from hf_cir.evaluation import EmbeddingTable, evaluate, get_benchmark
from hf_cir.models.magiclens import MagicLensModel, MagicLensProcessor
from hf_cir.retrieval import load_retrieval_model


@pytest.fixture(scope="module")
def magiclens_dir(reference_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("magiclens") / "tiny"
    checkpoint = reference_dir / "magiclens" / "magic_lens_tiny.pkl.gz"
    convert_magiclens_checkpoint(checkpoint, folder, tokenizer=reference_dir / "clip")
    return folder


def direct_magiclens_features(folder, benchmark, texts):
    """Gallery (empty text) and query features from `MagicLensModel` and its processor directly; `texts(query)` is
    the query's one text."""
    model, processor = MagicLensModel.from_pretrained(folder).eval(), MagicLensProcessor.from_pretrained(folder)
    ids = benchmark.image_ids()
    with torch.no_grad():
        pixels = processor(images=[benchmark.load_image(i) for i in ids])["pixel_values"]
        gallery = EmbeddingTable(ids, model(pixel_values=pixels).composed_embeds)
        rows = [
            model(**processor(images=[benchmark.load_image(q.reference_id)], text=[texts(q)])).composed_embeds[0]
            for q in benchmark.queries()
        ]
    return gallery, F.normalize(torch.stack(rows), dim=-1)


def ranked_ids(features, gallery, k):
    scores = features @ F.normalize(gallery.features, dim=-1).T
    return [[gallery.ids[i] for i in row] for row in scores.topk(min(k, len(gallery)), dim=-1).indices.tolist()]


def run(capsys, *argv):
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_circo_uses_the_reference_query_texts(magiclens_dir, circo_dir, tmp_path):
    benchmark = get_benchmark("circo", circo_dir, split="val")
    query = benchmark.queries()[0]
    assert benchmark.query_texts(query, "magiclens") == ["find dog but has two dogs"]
    assert benchmark.query_texts(query, "image") == ["has two dogs"]  # other methods keep CIRCO's caption
    gallery, expected = direct_magiclens_features(
        magiclens_dir, benchmark, lambda q: f"find {q.fields['shared_concept']} but {q.fields['relative_caption']}"
    )
    model = load_retrieval_model(magiclens_dir, device="cpu")
    result = evaluate(model, benchmark, method="magiclens", use_cache=False, show_progress=False)
    assert result.metrics == pytest.approx(benchmark.compute_metrics(expected, gallery))
    _, caption_only = direct_magiclens_features(magiclens_dir, benchmark, lambda q: q.texts[0])
    assert not torch.allclose(expected, caption_only, atol=1e-4)  # the template changes the queries


def test_a_circo_query_without_shared_concept_is_one_line(magiclens_dir, circo_dir):
    annotations = circo_dir / "annotations" / "val.json"
    entries = json.loads(annotations.read_text())
    del entries[1]["shared_concept"]
    annotations.write_text(json.dumps(entries))
    benchmark = get_benchmark("circo", circo_dir, split="val")
    with pytest.raises(ValueError, match=r"circo: query 1 has no 'shared_concept' for method 'magiclens'"):
        benchmark.query_texts(benchmark.queries()[1], "magiclens")


def test_cli_writes_the_test_server_files(capsys, magiclens_dir, cirr_dir, circo_dir, tmp_path):
    out = tmp_path / "out"
    for name, data_dir in (("circo", circo_dir), ("cirr", cirr_dir)):
        code, stdout, err = run(
            capsys,
            "evaluate",
            "--model",
            magiclens_dir,
            "--benchmark",
            name,
            "--data-dir",
            data_dir,
            "--split",
            "test",
            "--method",
            "magiclens",
            "--output-dir",
            out,
            "--cache-dir",
            tmp_path / "cache",
            "--no-progress",
        )
        assert code == 0, err
    circo = get_benchmark("circo", circo_dir, split="test")
    gallery, expected = direct_magiclens_features(
        magiclens_dir, circo, lambda q: f"find {q.fields['shared_concept']} but {q.fields['relative_caption']}"
    )
    submission = json.loads((out / "circo_test_submission_magiclens.json").read_text())
    assert submission == dict(zip(["0", "1"], ranked_ids(expected, gallery, 50)))
    cirr = get_benchmark("cirr", cirr_dir, split="test")
    gallery, expected = direct_magiclens_features(magiclens_dir, cirr, lambda q: q.texts[0])
    recall = json.loads((out / "cirr_test1_recall_magiclens.json").read_text())
    subset = json.loads((out / "cirr_test1_recall_subset_magiclens.json").read_text())
    assert recall["version"] == "rc2" and subset["metric"] == "recall_subset"
    for query, ranking in zip(cirr.queries(), ranked_ids(expected, gallery, 50)):
        # CIRR's server file leaves the reference out of the top 50.
        assert recall[query.query_id] == [i for i in ranking if i != query.reference_id][:50]
    assert (out / "results_cirr_test_magiclens.json").is_file()


def test_stored_embeddings_are_refused_for_pixel_methods(magiclens_dir, circo_dir):
    from hf_cir.evaluation import encode_benchmark_queries

    benchmark = get_benchmark("circo", circo_dir, split="val")
    model = load_retrieval_model(magiclens_dir, device="cpu")
    table = EmbeddingTable(benchmark.image_ids(), torch.zeros(len(benchmark.image_ids()), model.embedding_dim))
    with pytest.raises(ValueError, match="composes from the reference images: pass the `benchmark`"):
        encode_benchmark_queries(model, benchmark.queries(), table, "magiclens", show_progress=False)


def load_fashioniq_fixture(reference_dir):
    """The recorded reference results and the fixture script's folder builder (numpy and Pillow only)."""
    import importlib.util

    script = reference_dir / "magiclens" / "make_fashioniq_fixture.py"
    spec = importlib.util.spec_from_file_location("make_fashioniq_fixture", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return json.loads((reference_dir / "magiclens" / module.EXPECTED_NAME).read_text()), module


def test_fashioniq_matches_the_reference_evaluate_recall(capsys, magiclens_dir, reference_dir, tmp_path):

    from hf_cir.evaluation import encode_benchmark_queries
    from hf_cir.evaluation.evaluate import embed_benchmark_images

    expected, script = load_fashioniq_fixture(reference_dir)
    folder = script.build_fashioniq_folder(tmp_path / "FashionIQ", seed=expected["folder"]["seed"])
    # The reference evaluation's image loading (`data_utils.process_img`): the "evaluation" protocol, chosen when
    # converting (`hf-cir convert magiclens --image-protocol evaluation`).
    model_dir = tmp_path / "magiclens-evaluation"
    checkpoint = reference_dir / "magiclens" / "magic_lens_tiny.pkl.gz"
    convert_magiclens_checkpoint(
        checkpoint, model_dir, tokenizer=reference_dir / "clip", image_protocol=expected["protocol"]
    )
    categories = ",".join(expected["folder"]["categories"])
    code, out, err = run(
        capsys,
        "evaluate",
        "--model",
        model_dir,
        "--benchmark",
        "fashioniq",
        "--data-dir",
        folder,
        "--benchmark-option",
        f"categories={categories}",
        "--method",
        "magiclens",
        "--json",
        "--output-dir",
        tmp_path / "out",
        "--cache-dir",
        tmp_path / "cache",
        "--no-progress",
    )
    assert code == 0, err
    metrics = json.loads(out)["results"][0]["metrics"]
    recalls = [value for category in expected["recall"].values() for value in category.values()]
    assert any(0 < value < 100 for value in recalls)  # the folder is built so that the recalls say something
    for category, values in expected["recall"].items():
        for k, value in values.items():
            assert metrics[f"{category}_recall@{k}"] == pytest.approx(value, abs=1e-9), (category, k)
    # The rankings themselves: every query's top 10 as the reference's `jnp.argsort` ranked them.
    model = load_retrieval_model(model_dir, device="cpu")
    benchmark = get_benchmark("fashioniq", folder, categories=expected["folder"]["categories"])
    assert benchmark.query_texts(benchmark.queries()[0], "magiclens") == ["is red. and has long sleeves?"]
    images, _ = embed_benchmark_images(model, benchmark, show_progress=False)
    features = encode_benchmark_queries(
        model, benchmark.queries(), images, "magiclens", show_progress=False, benchmark=benchmark
    )
    for category, top10 in expected["top10"].items():
        rows = [row for row, query in enumerate(benchmark.queries()) if query.category == category]
        gallery = EmbeddingTable(benchmark.gallery_ids(category), images.rows(benchmark.gallery_ids(category)))
        ranked = ranked_ids(features[rows], gallery, 10)
        assert {benchmark.queries()[row].reference_id: ids for row, ids in zip(rows, ranked)} == top10
