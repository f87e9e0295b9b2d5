"""Nothing lost, nothing escapes: --overwrite replaces only hf-cir's own artefacts, stored paths stay inside the image
root (checked with a sentinel file that must never be opened), unreadable gallery entries are skipped and listed,
and the query image is left out of its own results."""

from __future__ import annotations

import builtins
import json
import os
import shutil
from pathlib import Path

import PIL.Image
import pytest

from .conftest import assert_error_line, run_cli, snapshot, write_photos


def _index(capfd, lincir, images, output, *extra):
    return run_cli(capfd, "index", "--model", lincir, "--images", images, "--output", output, "--no-progress", *extra)


@pytest.mark.parametrize("target", ["images", "parent", "foreign"])
def test_overwrite_never_deletes_what_is_not_ours(capfd, workspace, toy_lincir, target):
    output = {"images": workspace / "photos", "parent": workspace, "foreign": workspace / "thesis"}[target]
    before = snapshot(workspace)
    code, _, err = _index(capfd, toy_lincir, workspace / "photos", output, "--overwrite")
    assert_error_line(code, err, "index", str(output), "refusing")
    assert snapshot(workspace) == before


def test_overwrite_replaces_an_earlier_index(capfd, workspace, toy_lincir):
    (workspace / "photos" / "red.png").unlink()
    code, out, err = _index(
        capfd, toy_lincir, workspace / "photos", workspace / "photos.index", "--overwrite", "--json"
    )
    assert code == 0, err
    assert json.loads(out)["images"] == 3
    from hf_cir.retrieval import GalleryIndex

    assert "red.png" not in GalleryIndex.load(workspace / "photos.index").paths
    assert sorted(p.name for p in workspace.iterdir() if p.name.startswith(".")) == []  # no temporaries left


def test_convert_refuses_a_foreign_output_dir_before_loading_anything(capfd, workspace):
    from hf_cir.toy.checkpoints import toy_checkpoint

    before = snapshot(workspace)
    code, _, err = run_cli(
        capfd,
        "convert",
        "lincir",
        "--phi-checkpoint",
        workspace / "missing.pt",  # never read: the output folder is refused first
        "--clip",
        toy_checkpoint("clip"),
        "--output-dir",
        workspace / "thesis",
    )
    assert_error_line(code, err, "convert", "thesis", "already exists")
    assert snapshot(workspace) == before


# -- paths stay inside ---------------------------------------------------------------------------------------------


@pytest.fixture
def opened(monkeypatch):
    """Every path opened through `open` or `PIL.Image.open` while the test runs, resolved."""
    seen: list[Path] = []
    real_open, real_image_open = builtins.open, PIL.Image.open

    def record(path):
        if isinstance(path, (str, os.PathLike)):
            seen.append(Path(path).resolve())

    def spy_open(file, *args, **kwargs):
        record(file)
        return real_open(file, *args, **kwargs)

    def spy_image_open(fp, *args, **kwargs):
        record(fp)
        return real_image_open(fp, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(PIL.Image, "open", spy_image_open)
    return seen


@pytest.mark.parametrize("kind", ["dotdot", "absolute"])
def test_a_crafted_index_is_refused_and_opens_nothing_outside(capfd, workspace, opened, kind):
    from hf_cir.retrieval import GalleryIndex

    sentinel = (workspace / "secret" / "sentinel.png").resolve()
    index = workspace / "photos.index"
    info = json.loads((index / "index.json").read_text())
    info["paths"][1] = "../secret/sentinel.png" if kind == "dotdot" else str(sentinel)
    (index / "index.json").write_text(json.dumps(info))

    with pytest.raises(ValueError, match=r"index\.json entry 1 of 'paths'"):
        GalleryIndex.load(index)
    grid = workspace / "grid.png"
    code, _, err = run_cli(
        capfd, "search", "--index", index, "--image", workspace / "photos" / "red.png", "--text", "make it blue",
        "--save-grid", grid, "--no-progress",
    )  # fmt: skip
    assert_error_line(code, err, "search", "entry 1", "index.json")
    assert sentinel not in opened
    assert not grid.exists()


def test_a_link_out_of_the_root_is_never_opened(capfd, workspace, opened):
    """A stored path that is lexically fine but resolves outside the root (a symlink swapped in later)."""
    sentinel = (workspace / "secret" / "sentinel.png").resolve()
    (workspace / "photos" / "blue.png").unlink()
    (workspace / "photos" / "blue.png").symlink_to(sentinel)
    grid = workspace / "grid.png"
    code, _, err = run_cli(
        capfd, "search", "--index", workspace / "photos.index", "--image", workspace / "photos" / "red.png",
        "--text", "make it blue", "--save-grid", grid, "--no-progress",
    )  # fmt: skip
    assert_error_line(code, err, "search", "blue.png", "outside the image root")
    assert sentinel not in opened and not grid.exists()


def test_contact_sheet_opens_only_files_under_the_root(capfd, workspace, opened):
    grid = workspace / "grid.png"
    code, _, err = run_cli(
        capfd, "search", "--index", workspace / "photos.index", "--image", workspace / "photos" / "red.png",
        "--text", "make it blue", "--save-grid", grid, "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    root = (workspace / "photos").resolve()
    images = [path for path in opened if path.suffix == ".png" and path != grid.resolve()]
    assert images and all(root in path.parents for path in images)


# -- skips are skips -----------------------------------------------------------------------------------------------


def test_unreadable_gallery_entries_are_skipped_and_listed(capfd, tmp_path, toy_lincir):
    photos = tmp_path / "photos"
    write_photos(photos)
    (tmp_path / "outside.png").write_bytes((photos / "red.png").read_bytes())
    (photos / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    (photos / "loop1.png").symlink_to(photos / "loop2.png")
    (photos / "loop2.png").symlink_to(photos / "loop1.png")
    (photos / "escape.png").symlink_to(tmp_path / "outside.png")
    (photos / "folder-link").symlink_to(tmp_path)
    os.mkfifo(photos / "pipe.png")
    PIL.Image.new("1", (20000, 20000)).save(photos / "bomb.png")
    code, out, err = _index(capfd, toy_lincir, photos, tmp_path / "photos.index", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["images"] == 4
    assert summary["skipped"] == {
        "bomb.png": summary["skipped"]["bomb.png"],
        "dangling.png": "broken symbolic link",
        "escape.png": "symbolic link to a file outside the image folder",
        "folder-link/": "symbolic link to a folder (not followed)",
        "loop1.png": "symbolic link loop",
        "loop2.png": "symbolic link loop",
        "pipe.png": "not a regular file",
    }
    assert "decompression bomb" in summary["skipped"]["bomb.png"]
    for name in summary["skipped"]:
        assert name in err  # listed in the warning


def test_an_unreadable_folder_is_skipped_and_listed(capfd, tmp_path, toy_lincir, monkeypatch):
    photos = tmp_path / "photos"
    write_photos(photos)
    write_photos(photos / "locked")
    real_scandir = os.scandir

    def scandir(path="."):  # what a folder without read permission does (the tests may run as root)
        if isinstance(path, (str, os.PathLike)) and Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    code, out, err = _index(capfd, toy_lincir, photos, tmp_path / "photos.index", "--json")
    assert code == 0, err
    assert json.loads(out)["skipped"] == {"locked/": "unreadable folder (Permission denied)"}


# -- the query image is not its own best result --------------------------------------------------------------------


def _search(capfd, workspace, image, *extra):
    code, out, err = run_cli(
        capfd, "search", "--index", workspace / "photos.index", "--image", image, "--method", "image", "--json",
        "--no-progress", *extra,
    )  # fmt: skip
    assert code == 0, err
    return json.loads(out)


def test_search_leaves_the_query_image_out(capfd, workspace):
    result = _search(capfd, workspace, workspace / "photos" / "red.png")
    assert result["excluded"] == "red.png"
    assert [hit["rank"] for hit in result["results"]] == [1, 2, 3]
    assert "red.png" not in [hit["path"] for hit in result["results"]]
    kept = _search(capfd, workspace, workspace / "photos" / "red.png", "--include-query")
    assert kept["excluded"] is None and kept["results"][0]["path"] == "red.png"
    assert kept["results"][0]["score"] == pytest.approx(1.0, abs=1e-5)
    # A copy outside the gallery is not an image of the index: nothing is left out.
    shutil.copy(workspace / "photos" / "red.png", workspace / "copy.png")
    copy = _search(capfd, workspace, workspace / "copy.png")
    assert copy["excluded"] is None and copy["results"][0]["path"] == "red.png"


def test_convert_never_writes_into_an_earlier_folder(capfd, tmp_path, reference_dir):
    argv = [
        "convert", "lincir", "--phi-checkpoint", reference_dir / "lincir" / "phi.pt", "--clip",
        reference_dir / "clip", "--output-dir", tmp_path / "out", "--no-progress",
    ]  # fmt: skip
    code, _, err = run_cli(capfd, *argv)
    assert code == 0, err
    first = snapshot(tmp_path / "out")
    code, _, err = run_cli(capfd, *argv)
    assert_error_line(code, err, "convert", "--output-dir", "already exists")
    assert snapshot(tmp_path / "out") == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporaries left
