"""The CLI tests use the retrieval tests' tiny models and galleries, and (for the error-line harness) the shipped
toy models with files on disk, run through the real `hf-cir` entry function."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from retrieval.conftest import compodiff_dir, gallery_dir, lincir_dir, lincir_other_size_dir  # noqa: F401

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}


def run_cli(capfd, *argv):
    """Run `hf-cir ARGV` in this process: `(exit status, stdout, stderr)` as the user sees them (file descriptors)."""
    from hf_cir.cli import main

    try:
        code = main([str(arg) for arg in argv])
    except SystemExit as exit_info:  # argparse's usage errors and --help
        code = exit_info.code
    out, err = capfd.readouterr()
    return code, out, err


def assert_error_line(code, err, command, *fragments):
    """Exit status 2 and exactly one stderr line, `hf-cir COMMAND: error: ...`, naming every fragment."""
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert code == 2, (code, err)
    assert len(lines) == 1, err
    assert lines[0].startswith(f"hf-cir {command}: error: "), lines[0]
    for fragment in fragments:
        assert str(fragment) in lines[0], (fragment, lines[0])
    return lines[0]


def write_photos(root: Path) -> list[str]:
    root.mkdir(parents=True, exist_ok=True)
    for index, (name, colour) in enumerate(COLOURS.items()):
        rng = np.random.default_rng(index)
        pixels = np.clip(np.array(colour) + rng.integers(-20, 20, size=(24, 24, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / f"{name}.png")
    return sorted(f"{name}.png" for name in COLOURS)


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` with its bytes (to prove that nothing was deleted or changed)."""
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.fixture(scope="session")
def toy_lincir() -> Path:
    from hf_cir.toy.checkpoints import toy_checkpoint

    return toy_checkpoint("lincir")


@pytest.fixture(scope="session")
def toy_compodiff() -> Path:
    from hf_cir.toy.checkpoints import toy_checkpoint

    return toy_checkpoint("compodiff")


@pytest.fixture(scope="session")
def toy_index(tmp_path_factory, toy_lincir) -> Path:
    """An index of four colour images built with the shipped toy LinCIR; its images live in `photos/` beside it."""
    from hf_cir.retrieval import GalleryIndex, load_retrieval_model

    root = tmp_path_factory.mktemp("toy-index")
    write_photos(root / "photos")
    model = load_retrieval_model(toy_lincir, device="cpu")
    GalleryIndex.build(model, root / "photos", root / "photos.index", show_progress=False)
    return root / "photos.index"


@pytest.fixture
def workspace(tmp_path, toy_index) -> Path:
    """A private copy of the toy index and its photos, a sentinel outside them, and a folder of someone's work."""
    shutil.copytree(toy_index.parent / "photos", tmp_path / "photos")
    write_v1_index(toy_index, tmp_path / "photos.index", tmp_path / "photos")
    (tmp_path / "secret").mkdir()
    Image.new("RGB", (24, 24), (7, 7, 7)).save(tmp_path / "secret" / "sentinel.png")
    (tmp_path / "thesis").mkdir()
    (tmp_path / "thesis" / "thesis.docx").write_text("four years of work")
    return tmp_path


def write_v1_index(built: Path, folder: Path, root: Path) -> Path:
    """The index `built` as a format-1 folder (`index.json` with the paths, `embeddings.safetensors`), the format
    earlier hf-cir versions wrote and a shared index file may still be: the one whose entries a crafted file edits."""
    from safetensors.torch import save_file

    from hf_cir.retrieval import GalleryIndex

    index = GalleryIndex.load(built)
    folder.mkdir()
    save_file({"embeddings": index.embeddings.contiguous()}, str(folder / "embeddings.safetensors"))
    info = {
        "format": "hf-cir-index",
        "version": 1,
        "model": index.info["model"],
        "model_type": index.info["model_type"],
        "embedding_dim": index.embedding_dim,
        "fingerprint": index.info["fingerprint"],
        "root": str(root.resolve()),
        "count": len(index),
        "faiss": None,
        "paths": list(index.paths),
        "skipped": {},
    }
    (folder / "index.json").write_text(json.dumps(info))
    return folder


def edit_index(index: Path, **changes) -> Path:
    """Rewrite keys of an index's index.json (a crafted, shared index)."""
    info = json.loads((index / "index.json").read_text())
    info.update(changes)
    (index / "index.json").write_text(json.dumps(info))
    return index
