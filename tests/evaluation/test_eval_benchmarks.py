"""Benchmark readers and metrics on tiny datasets in the official layouts, against hand-computed values.

Image features are one-hot, so a query feature is directly its vector of scores over the gallery.
"""

import json

import pytest
import torch
from PIL import Image

from hf_cir.evaluation import (
    CIRCOBenchmark,
    CIRRBenchmark,
    EmbeddingTable,
    FashionIQBenchmark,
    GeneCISBenchmark,
    get_benchmark,
)
from hf_cir.evaluation.genecis import crop_instance
from hf_cir.evaluation.metrics import average_precision_at_k, ranked_top_k, recall_at_k, target_ranks


def one_hot_table(ids):
    return EmbeddingTable(ids, torch.eye(len(ids)))


def score_rows(table, rows):
    """Query features from `{image id: score}` dicts (unlisted images score 0)."""
    features = torch.zeros(len(rows), len(table))
    for row, scores in enumerate(rows):
        for image_id, score in scores.items():
            features[row, table.position[image_id]] = score
    return features


# --- metric primitives -------------------------------------------------------------------------------------------


def test_target_ranks_counts_ties_against_the_target():
    scores = torch.tensor([[0.2, 0.5, 0.5, 0.9], [0.9, 0.1, 0.1, 0.1]])
    assert target_ranks(scores, torch.tensor([1, 0])).tolist() == [2, 0]
    valid = torch.tensor([[True, True, False, False], [True, True, True, True]])
    assert target_ranks(scores, torch.tensor([1, 0]), valid).tolist() == [0, 0]
    with pytest.raises(ValueError, match="excluded"):
        target_ranks(scores, torch.tensor([2, 0]), valid)


def test_recall_and_average_precision_by_hand():
    assert recall_at_k(torch.tensor([0, 1, 4, 9]), [1, 2, 5]) == {1: 25.0, 2: 50.0, 5: 75.0}
    relevant = torch.tensor([True, False, True, False, False, True])
    assert average_precision_at_k(relevant, 3, 5) == pytest.approx((1 + 2 / 3) / 3)
    assert average_precision_at_k(relevant, 3, 10) == pytest.approx((1 + 2 / 3 + 3 / 6) / 3)
    assert average_precision_at_k(relevant, 1, 1) == 1.0
    # Tie between a ground truth (index 0) and another item: the other item ranks first.
    order = ranked_top_k(torch.tensor([0.7, 0.7, 0.1]), 3, relevant=torch.tensor([True, False, False]))
    assert order.tolist() == [1, 0, 2]


# --- CIRR --------------------------------------------------------------------------------------------------------


def cirr_scores(prefix):
    p = lambda name: f"{prefix}-{name}"  # noqa: E731
    return [
        # reference a removed: g, h, c, d ahead of target b -> rank 4 (rank 5 if a stayed); subset: c, d ahead -> 2.
        {p("a"): 0.95, p("g"): 0.9, p("h"): 0.85, p("c"): 0.8, p("d"): 0.75, p("b"): 0.7, p("e"): 0.1, p("f"): 0.05},
        # target c tied with d: rank 1 in both the gallery and the subset.
        {p("b"): 1.0, p("c"): 0.5, p("d"): 0.5, p("e"): 0.4, p("f"): 0.3, p("g"): 0.2, p("h"): 0.6},
        # reference c scores highest but is removed: target a first.
        {p("c"): 1.0, p("a"): 0.9, p("h"): 0.3},
    ]


def test_cirr_reference_removal_subsets_and_ties(cirr_dir):
    benchmark = CIRRBenchmark(cirr_dir, split="val")
    queries = benchmark.queries()
    assert [q.query_id for q in queries] == ["11", "12", "13"]
    assert queries[0].texts == ["change a into b"] and queries[0].target_ids == ["dev-b"]
    assert benchmark.load_image("dev-a").size == (24, 24)
    table = one_hot_table(benchmark.image_ids())
    metrics = benchmark.compute_metrics(score_rows(table, cirr_scores("dev")), table)
    expected = {
        "recall@1": 100 / 3,
        "recall@5": 100.0,
        "recall@10": 100.0,
        "recall@50": 100.0,
        "recall_subset@1": 100 / 3,
        "recall_subset@2": 200 / 3,
        "recall_subset@3": 100.0,
    }
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value), name
    assert metrics["average"] == pytest.approx((100.0 + 100 / 3) / 2)
    assert set(benchmark.metric_names) <= set(metrics)


def test_cirr_test_submission_format(cirr_dir):
    benchmark = get_benchmark("cirr", cirr_dir, split="test")
    assert not benchmark.has_labels and benchmark.queries()[0].target_ids == []
    table = one_hot_table(benchmark.image_ids())
    files = benchmark.submission_files(score_rows(table, cirr_scores("test1")), table)
    recall, subset = files["cirr_test1_recall.json"], files["cirr_test1_recall_subset.json"]
    assert recall["version"] == "rc2" and recall["metric"] == "recall"
    assert subset["version"] == "rc2" and subset["metric"] == "recall_subset"
    assert set(recall) == {"version", "metric", "11", "12", "13"} and set(subset) == set(recall)
    # Whole gallery minus the reference (fewer than 50 images here), best first.
    assert recall["11"] == [f"test1-{n}" for n in ["g", "h", "c", "d", "b", "e", "f"]]
    assert "test1-c" not in recall["13"] and len(recall["13"]) == 7
    # Top 3 of the image set without the reference; the tie c/d is broken by gallery order.
    assert subset["11"] == ["test1-c", "test1-d", "test1-b"]
    assert subset["12"] == ["test1-c", "test1-d", "test1-e"]
    json.dumps(files)  # serialisable
    with pytest.raises(ValueError, match="no public labels"):
        benchmark.compute_metrics(torch.zeros(3, len(table)), table)


def test_cirr_accepts_the_inner_cirr_folder(cirr_dir):
    benchmark = CIRRBenchmark(cirr_dir / "cirr", split="val")
    assert benchmark.load_image("dev-b").mode == "RGB"


# --- CIRCO -------------------------------------------------------------------------------------------------------


def test_circo_map_with_multiple_ground_truths_and_ties(circo_dir):
    benchmark = CIRCOBenchmark(circo_dir, split="val")
    queries = benchmark.queries()
    assert queries[0].target_ids == ["102", "104", "107"] and queries[0].reference_id == "101"
    table = one_hot_table(benchmark.image_ids())
    features = score_rows(
        table,
        [
            # ranking: 102 (gt), 101, 104 (gt), 103, 105, 107 (gt), 106, 108
            {"102": 0.9, "101": 0.8, "104": 0.7, "103": 0.6, "105": 0.5, "107": 0.4, "106": 0.3, "108": 0.2},
            # the only ground truth 105 is tied with 108: 108 ranks first.
            {"105": 0.9, "108": 0.9, "101": 0.1},
        ],
    )
    metrics = benchmark.compute_metrics(features, table)
    ap1_at5, ap1_at10 = (1 + 2 / 3) / 3, (1 + 2 / 3 + 3 / 6) / 3
    assert metrics["map@5"] == pytest.approx(100 * (ap1_at5 + 0.5) / 2)
    assert metrics["map@10"] == pytest.approx(100 * (ap1_at10 + 0.5) / 2)
    assert metrics["map@25"] == metrics["map@50"] == pytest.approx(metrics["map@10"])
    assert metrics["recall@5"] == 100.0


def test_circo_test_submission_lists_top50_of_every_query(circo_dir):
    benchmark = CIRCOBenchmark(circo_dir, split="test")
    table = one_hot_table(benchmark.image_ids())
    files = benchmark.submission_files(score_rows(table, [{"108": 1.0, "101": 0.5}, {"103": 0.2}]), table)
    submission = files["circo_test_submission.json"]
    assert set(submission) == {"0", "1"}
    assert submission["0"][:2] == ["108", "101"] and len(submission["0"]) == len(table)
    assert all(isinstance(image_id, str) for image_id in submission["1"])


# --- FashionIQ ---------------------------------------------------------------------------------------------------


def test_fashioniq_caption_pairing_and_category_recall(fashioniq_dir):
    benchmark = FashionIQBenchmark(fashioniq_dir)
    dress = [q for q in benchmark.queries() if q.category == "dress"]
    assert dress[0].texts == ["is red and has long sleeves", "has long sleeves and is red"]
    assert dress[1].texts == ["is shorter and is blue", "is blue and is shorter"]
    table = one_hot_table(benchmark.image_ids())
    rows = []
    for query in benchmark.queries():
        if query.query_id == "dress/0":  # target D1 behind 10 other dresses -> misses R@10, hits R@50
            scores = {f"D{i}": 1.0 for i in range(12) if i != 1} | {"D1": 0.5}
        elif query.query_id == "dress/1":  # target D3 first
            scores = {"D3": 1.0}
        elif query.category == "shirt":  # a higher-scoring *dress* is not in the shirt gallery
            scores = {"D0": 1.0, "S1": 0.9, "S0": 0.1}
        else:  # toptee: target tied with T0 -> rank 1
            scores = {"T0": 0.4, "T1": 0.4}
        rows.append(scores)
    metrics = benchmark.compute_metrics(score_rows(table, rows), table)
    assert metrics["dress_recall@10"] == 50.0 and metrics["dress_recall@50"] == 100.0
    assert metrics["shirt_recall@10"] == 100.0 and metrics["toptee_recall@10"] == 100.0
    assert metrics["average_recall@10"] == pytest.approx((50 + 100 + 100) / 3)
    assert metrics["average_recall@50"] == 100.0
    assert metrics["average"] == pytest.approx(((50 + 100 + 100) / 3 + 100) / 2)


def test_fashioniq_has_no_test_split(fashioniq_dir):
    with pytest.raises(ValueError, match="unknown split 'test'"):
        FashionIQBenchmark(fashioniq_dir, split="test")
    assert FashionIQBenchmark(fashioniq_dir, categories="shirt").categories == ("shirt",)
    with pytest.raises(ValueError, match="unknown categories"):
        FashionIQBenchmark(fashioniq_dir, categories=["skirt"])


# --- GeneCIS -----------------------------------------------------------------------------------------------------


def test_genecis_per_query_galleries(genecis_dir):
    benchmark = GeneCISBenchmark(genecis_dir)
    queries = benchmark.queries()
    assert len(queries) == 8
    object_query = queries[[q.query_id for q in queries].index("change_object/1")]
    assert object_query.gallery_ids == ["coco:6", "coco:3", "coco:7", "coco:8"]
    table = one_hot_table(benchmark.image_ids())
    rows = []
    for query in queries:
        index = int(query.query_id.split("/")[1])
        if query.category.endswith("object"):
            # q0: distractor coco:3 above the target -> rank 1; q1: coco:2 (not in q1's gallery) is ignored.
            rows.append(
                {"coco:2": 0.5, "coco:3": 0.6} if index == 0 else {"coco:2": 1.0, "coco:6": 0.5, "coco:3": 0.4}
            )
        else:
            target, distractor = query.gallery_ids[0], query.gallery_ids[1]
            # q0: target first; q1: distractor tied with the target -> rank 1.
            rows.append({target: 0.9, distractor: 0.1} if index == 0 else {target: 0.5, distractor: 0.5})
    metrics = benchmark.compute_metrics(score_rows(table, rows), table)
    assert metrics["change_object_recall@1"] == 50.0 and metrics["change_object_recall@2"] == 100.0
    assert metrics["focus_attribute_recall@1"] == 50.0 and metrics["focus_attribute_recall@3"] == 100.0
    assert metrics["average_recall@1"] == 50.0 and metrics["average_recall@2"] == 100.0


def test_genecis_attribute_tasks_crop_the_instance(genecis_dir):
    benchmark = GeneCISBenchmark(genecis_dir, tasks=["focus_attribute"])
    reference = benchmark.queries()[0].reference_id
    assert reference == "vg:2001:5,5,10,8"
    crop = benchmark.load_image(reference)
    # box (5,5,10,8) grown by 0.7 from the top-left (clipped at 0): (0, 0, 17, 13.6), 17 x 14 after PIL's
    # rounding, pasted 1 px down into a 17 x 17 black square.
    assert crop.size == (17, 17)
    whole = Image.open(genecis_dir / "VG_100K_all" / "2001.jpg").convert("RGB")
    assert crop.getpixel((3, 3)) == whole.getpixel((3, 2))
    assert crop.getpixel((3, 16)) == (0, 0, 0)  # padding
    assert crop_instance(Image.new("RGB", (10, 10)), [0, 0, 10, 10]).size == (10, 10)


# --- layout errors -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "builder_fixture", "removed"),
    [
        ("cirr", "cirr_dir", "cirr/captions/cap.rc2.val.json"),
        ("cirr", "cirr_dir", "cirr/image_splits/split.rc2.val.json"),
        ("circo", "circo_dir", "annotations/val.json"),
        ("circo", "circo_dir", "COCO2017_unlabeled/annotations/image_info_unlabeled2017.json"),
        ("fashioniq", "fashioniq_dir", "captions/cap.shirt.val.json"),
        ("fashioniq", "fashioniq_dir", "image_splits/split.toptee.val.json"),
        ("genecis", "genecis_dir", "genecis/change_attribute.json"),
    ],
)
def test_missing_layout_file_is_named(request, name, builder_fixture, removed):
    root = request.getfixturevalue(builder_fixture)
    (root / removed).unlink()
    with pytest.raises(FileNotFoundError, match=removed.split("/")[-1].replace(".", r"\.")):
        get_benchmark(name, root, split="val")


def test_layout_errors_for_folders_and_names(tmp_path, genecis_dir):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        get_benchmark("cirr", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="cap.rc2.val.json"):
        get_benchmark("cirr", tmp_path)
    with pytest.raises(
        ValueError, match="Unknown benchmark 'imagenet'; expected one of: circo, cirr, fashioniq, genecis"
    ):
        get_benchmark("imagenet", tmp_path)
    with pytest.raises(ValueError, match="needs a data directory"):
        get_benchmark("circo", None)
    import shutil

    shutil.rmtree(genecis_dir / "VG_100K_all")
    with pytest.raises(FileNotFoundError, match="VG_100K_all"):
        get_benchmark("genecis", genecis_dir)


def test_malformed_annotation_is_a_clear_error(cirr_dir):
    path = cirr_dir / "cirr" / "captions" / "cap.rc2.val.json"
    entries = json.loads(path.read_text())
    del entries[1]["caption"]
    path.write_text(json.dumps(entries))
    with pytest.raises(ValueError, match=r"cap\.rc2\.val\.json entry 1: missing 'caption'"):
        CIRRBenchmark(cirr_dir)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        CIRRBenchmark(cirr_dir)
