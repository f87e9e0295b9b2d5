"""`hf-cir demo` on the shipped toy checkpoints, and the build helpers of `make toy-models`."""

from pathlib import Path

from PIL import Image

from hf_cir.cli import main
from hf_cir.toy import ToyWorld
from hf_cir.toy.demo import run_demo, select_demo_queries

from .tools import load_toy_tool

_BUILD = load_toy_tool("build_toy_models")  # training/toy/build_toy_models.py
_copy_model_folder, annotate_toy_card = _BUILD._copy_model_folder, _BUILD.annotate_toy_card


def test_demo_prints_results_and_writes_the_sheet(tmp_path):
    lines = []
    summary = run_demo(tmp_path / "sheet.png", num_queries=2, top_k=3, recall_queries=0, print_fn=lines.append)
    text = "\n".join(lines)
    assert "Query 1:" in text and "Query 2:" in text and "LinCIR (target ranked #" in text
    assert "CompoDiff (target ranked #" in text
    for query in summary["queries"]:
        assert set(query.results) == {"sum baseline", "LinCIR", "CompoDiff"}
        assert all(len(hits) == 3 for hits in query.results.values())
    with Image.open(summary["sheet"]) as sheet:
        assert sheet.format == "PNG" and sheet.width > 400 and sheet.height > 2 * 3 * 72


def test_demo_queries_vary_and_are_held_out():
    world = ToyWorld()
    queries = select_demo_queries(world, num_queries=6)
    assert len(queries) == 6 and len({q.changed for q in queries}) >= 5
    assert all(world.is_held_out(q.target) for q in queries)


def test_demo_command_rejects_bad_arguments(capsys):
    assert main(["demo", "--num-queries", "0"]) == 2
    assert "--num-queries must be at least 1" in capsys.readouterr().err
    assert main(["demo", "--checkpoints", "/nonexistent/toy"]) == 2
    assert "make toy-models" in capsys.readouterr().err


def test_copy_model_folder_drops_training_leftovers(tmp_path):
    source = tmp_path / "run"
    (source / "checkpoint-10").mkdir(parents=True)
    (source / "logs").mkdir()
    (source / "prior").mkdir()
    (source / "prior" / "config.json").write_text("{}")
    (source / "model_index.json").write_text("{}")
    _copy_model_folder(source, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model_index.json", "prior"]


def test_toy_card_annotation(tmp_path):
    folder = Path(tmp_path)
    (folder / "README.md").write_text("---\nlicense: cc-by-nc-4.0\n---\n# LinCIR\n\nBody.\n")
    results = {"sum": {0: {"recall@1": 1.0, "recall@5": 2.0, "recall@10": 3.0}}}
    annotate_toy_card(folder, "lincir", results)
    annotate_toy_card(folder, "lincir", results)  # idempotent
    card = (folder / "README.md").read_text()
    assert "license: apache-2.0" in card and "- toy" in card
    assert card.count("This is the hf-cir toy LinCIR") == 1 and card.count("## Toy benchmark") == 1
    assert "| sum | 1.0 | 2.0 | 3.0 |" in card
