"""One home for the index format: constants, manifest, skipped list and checks in `storage`, the index kinds in one
table (`kinds`) from which the CLI's `--faiss` choices come, and every kind built, loaded and searched through it."""

import re
from pathlib import Path

import pytest
import torch

import hf_cir
from hf_cir.retrieval import GalleryIndex
from hf_cir.retrieval.kinds import AUTO, INDEX_KINDS, IndexKind, index_kind_choices, register_index_kind
from hf_cir.retrieval.storage import INDEX_FORMAT, INDEX_VERSION, SKIPPED_NAME, make_manifest, read_manifest

PACKAGE = Path(hf_cir.__file__).parent


def sources_except(*allowed: str) -> dict[str, str]:
    return {
        path.relative_to(PACKAGE).as_posix(): path.read_text()
        for path in PACKAGE.rglob("*.py")
        if path.relative_to(PACKAGE).as_posix() not in allowed
    }


def test_the_format_is_defined_once():
    for name, text in sources_except("retrieval/storage.py").items():
        assert not re.search(r"^\s*INDEX_(FORMAT|VERSION)\s*=", text, re.M), f"{name} defines the index format again"
        assert f'"{INDEX_FORMAT}"' not in text, f"{name} spells the format name instead of storage.INDEX_FORMAT"
        assert f'"{SKIPPED_NAME}"' not in text, f"{name} spells {SKIPPED_NAME} instead of storage.SKIPPED_NAME"
        assert "write_manifest(" not in text or "make_manifest(" in text, f"{name} writes a manifest of its own"
    manifest = make_manifest(count=1, format="other", version=99)
    assert (manifest["format"], manifest["version"], manifest["count"]) == (INDEX_FORMAT, INDEX_VERSION, 1)


def test_unused_search_helpers_are_gone():
    from hf_cir.retrieval import search

    assert not hasattr(search, "_DTYPES_BY_NAME")
    assert not hasattr(search.ExactIndex, "save") and not hasattr(search.ExactIndex, "load")


def test_cli_choices_come_from_the_kind_table(monkeypatch):
    from hf_cir.cli import build_parser

    def faiss_choices():
        parser = build_parser()
        subparsers = next(action for action in parser._actions if action.dest == "command")
        index = subparsers.choices["index"]
        return next(action for action in index._actions if action.dest == "faiss")

    action = faiss_choices()
    assert list(action.choices) == index_kind_choices() == [*INDEX_KINDS, AUTO]
    assert all(kind in action.help for kind in INDEX_KINDS)
    toy = IndexKind("toy", "a toy kind", None, None, lambda dim, options: 1.0)
    monkeypatch.setitem(INDEX_KINDS, "toy", toy)  # a registered kind is offered at once
    assert "toy" in faiss_choices().choices
    with pytest.raises(ValueError, match="already registered"):
        register_index_kind(IndexKind("flat", "", None, None, None))


@pytest.mark.parametrize("kind", list(INDEX_KINDS))
def test_every_kind_builds_loads_and_searches_through_the_table(tmp_path, kind):
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.nn.functional.normalize(torch.randn(1000, 32, generator=generator), dim=-1)
    index = GalleryIndex([f"{i}.png" for i in range(1000)], embeddings, tmp_path, {"embedding_dim": 32, "model": "m"})
    index.info["faiss"] = kind
    options = {"ivf-pq": {"m": 16}, "ivf": {"nlist": 8, "nprobe": 8}}.get(kind, {})
    index.save(tmp_path / "index", shard_size=300, faiss_kwargs=options)
    manifest = read_manifest(tmp_path / "index")
    assert manifest["faiss"]["kind"] == kind and manifest["shard_rows"] == [300, 300, 300, 100]
    loaded = GalleryIndex.load(tmp_path / "index")
    assert type(loaded._backend) is type(INDEX_KINDS[kind].load(tmp_path / "index" / "faiss.index", loaded._table))
    hits = loaded.search(embeddings[[5, 777]], k=3)
    assert [row[0].path for row in hits] == ["5.png", "777.png"]
    assert INDEX_KINDS[kind].bytes_per_vector(32, {"count": 1000, **options}) > 0
