"""Hostile and damaged inputs to indexing and search: every case is one clear error naming the thing (or a listed
skip), nothing outside its folder is read or written, nothing is lost, and killed work resumes equal to a clean run.

Gallery sources (tars with climbing member names and repeated keys, datasets with bad ids, empty Parquet files and
streams, relative image paths), index files crafted or damaged (dtype, shape, column types, links, FIFOs,
truncation, a faiss file of another dimension), the build's arguments, a full disk, and two builds of one output.
"""

from __future__ import annotations

import errno
import fcntl
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import textwrap
import warnings
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from hf_cir.retrieval import GalleryIndex, load_retrieval_model
from hf_cir.retrieval.sources import DatasetSource, WebDatasetSource
from hf_cir.retrieval.storage import read_manifest

from .conftest import make_gallery, make_image


@pytest.fixture(scope="module")
def lincir(lincir_dir):
    return load_retrieval_model(lincir_dir, device="cpu")


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def png_bytes(tmp_path: Path, colour=(200, 30, 30), seed=0) -> bytes:
    return make_image(tmp_path / f"tile-{seed}.png", colour, seed=seed).read_bytes()


# -- ids are data: every source ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, message",
    [
        ("../../outside/secret", "'..' component"),
        ("a/../../b", "'..' component"),
        ("/etc/hostname", "absolute name"),
        ("C:\\windows", "absolute name"),
        ("", "empty"),
        ("  ", "empty"),
        ("a\nb", "control characters"),
        ("a\x00b", "control characters"),
        (7, "must be a string"),
    ],
)
def test_gallery_ids_are_checked_in_one_place(value, message):
    from hf_cir.retrieval.validation import check_gallery_id

    with pytest.raises(ValueError, match=message):
        check_gallery_id(value, "where")
    assert check_gallery_id("shard-1/00017", "where") == "shard-1/00017"


def test_webdataset_member_climbing_out_is_refused_naming_shard_and_member(tmp_path):
    image = png_bytes(tmp_path)
    shard = write_tar(tmp_path / "shards" / "00000.tar", [("good.png", image), ("../../outside/secret.png", image)])
    source = WebDatasetSource(str(shard))
    with pytest.raises(ValueError, match=r"00000.tar member '../../outside/secret.png'.*'\.\.' component"):
        source.entries(0, 1)


@pytest.mark.parametrize("absolute", ["/etc/hostname.png", "/../../etc/passwd.png"])
def test_webdataset_absolute_member_is_refused(tmp_path, absolute):
    shard = write_tar(tmp_path / "00000.tar", [(absolute, png_bytes(tmp_path))])
    with pytest.raises(ValueError, match="00000.tar member"):
        WebDatasetSource(str(shard)).entries(0, 1)


def test_webdataset_key_repeated_in_a_shard_is_refused(tmp_path):
    red, blue = png_bytes(tmp_path, seed=1), png_bytes(tmp_path, (20, 20, 200), seed=2)
    members = [("a.png", red), ("a.txt", b"first"), ("b.png", blue), ("a.png", blue)]
    shard = write_tar(tmp_path / "00000.tar", members)
    with pytest.raises(ValueError, match=r"00000.tar repeats the sample key 'a'"):
        WebDatasetSource(str(shard)).entries(0, 1)
    # The same member twice in one run of a sample replaces nothing either.
    write_tar(tmp_path / "00001.tar", [("c.png", red), ("c.png", blue)])
    with pytest.raises(ValueError, match=r"00001.tar repeats the sample key 'c'"):
        WebDatasetSource(str(tmp_path / "00001.tar")).entries(0, 1)


def test_webdataset_key_repeated_across_shards_is_refused_naming_both(lincir, tmp_path):
    red, blue = png_bytes(tmp_path, seed=1), png_bytes(tmp_path, (20, 20, 200), seed=2)
    write_tar(tmp_path / "shards" / "00000.tar", [("a.png", red), ("b.png", blue)])
    write_tar(tmp_path / "shards" / "00001.tar", [("a.png", blue)])
    source = WebDatasetSource(str(tmp_path / "shards" / "{00000..00001}.tar"))
    with pytest.raises(ValueError, match=r"the id 'a' appears in 00000.tar and 00001.tar; ids must be unique"):
        GalleryIndex.build(lincir, source, tmp_path / "wds.index", show_progress=False)
    assert not (tmp_path / "wds.index").exists()  # nothing half-right is published


def test_dataset_ids_must_be_unique_and_safe(tmp_path):
    image = str(make_image(tmp_path / "a.png", (1, 2, 3), seed=0))
    rows = {"image": [image, image], "key": ["x", "x"]}
    with pytest.raises(ValueError, match=r"`id_column`: 'key' repeats the id 'x' \(rows 0 and 1\)"):
        DatasetSource(datasets.Dataset.from_dict(rows), id_column="key")
    with pytest.raises(ValueError, match=r"row 0, column 'key'.*'\.\.' component"):  # refused before any work
        DatasetSource(datasets.Dataset.from_dict({"image": [image], "key": ["../../x"]}), id_column="key")
    stream = datasets.Dataset.from_dict({"image": [image], "key": ["/etc/x"]}).to_iterable_dataset()
    source = DatasetSource(stream, id_column="key")  # a stream's ids are checked as it is read
    with pytest.raises(ValueError, match=r"row 0, column 'key'.*absolute name"):
        list(source.iter_units(4, lambda unit: True))


def test_a_stream_repeating_an_id_is_refused_before_publishing(lincir, tmp_path):
    images = [str(make_image(tmp_path / f"{i}.png", (40 * i, 9, 9), seed=i)) for i in range(3)]
    stream = datasets.Dataset.from_dict({"image": images, "key": ["a", "b", "a"]}).to_iterable_dataset()
    source = DatasetSource(stream, id_column="key")
    with pytest.raises(ValueError, match=r"`dataset`: the id 'a' appears twice in unit 0; ids must be unique"):
        GalleryIndex.build(lincir, source, tmp_path / "stream.index", show_progress=False)
    assert not (tmp_path / "stream.index").exists()


def test_folder_names_that_cannot_be_ids_are_listed_not_indexed(lincir, tmp_path):
    photos = tmp_path / "photos"
    make_gallery(photos, with_bad_files=False)
    make_image(photos / "line\nbreak.png", (9, 9, 9), seed=9)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        index = GalleryIndex.build(lincir, photos, tmp_path / "index", show_progress=False)
    assert "line\nbreak.png" not in index.paths and "control characters" in index.skipped["line\nbreak.png"]


def test_parquet_relative_paths_start_from_its_folder_and_stay_inside(lincir, tmp_path, monkeypatch):
    data = tmp_path / "data"
    make_image(data / "images" / "red.png", (220, 30, 30), seed=0)
    make_image(tmp_path / "secret" / "sentinel.png", (7, 7, 7), seed=1)
    rows = {"image": ["images/red.png", "../secret/sentinel.png"], "caption": ["red", "outside"]}
    datasets.Dataset.from_dict(rows).to_parquet(str(data / "gallery.parquet"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative paths must not depend on the current directory
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        index = GalleryIndex.build(
            lincir, DatasetSource(str(data / "gallery.parquet")), "out.index", show_progress=False
        )
    assert index.paths == ["0"] and index.metadata([0])[0]["path"] == "images/red.png"
    assert "leaves the image root" in index.skipped["1"]  # listed, never read
    torch.testing.assert_close(index.get_embeddings([0])[0], lincir.encode_images([data / "images" / "red.png"])[0])
    assert not list(elsewhere.glob("*.partial")) and sorted(p.name for p in elsewhere.iterdir()) == ["out.index"]


def test_empty_parquet_and_empty_stream_are_one_clear_error(tmp_path):
    pq.write_table(pa.table({"image": pa.array([], pa.string())}), tmp_path / "empty.parquet")
    features = datasets.Features({"image": datasets.Image()})
    datasets.Dataset.from_dict({"image": []}, features=features).to_parquet(str(tmp_path / "empty_images.parquet"))
    for name in ("empty.parquet", "empty_images.parquet"):
        for streaming in (False, True):
            with pytest.raises(ValueError, match=f"`dataset`: .*{name} has no rows"):
                DatasetSource(str(tmp_path / name), streaming=streaming)
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ValueError, match="empty.jsonl has no rows"):
        DatasetSource(str(tmp_path / "empty.jsonl"), streaming=True)
    with pytest.raises(ValueError, match="has no rows"):
        DatasetSource(datasets.Dataset.from_dict({"image": []}, features=features))


# -- the build's arguments ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, message",
    [
        ({"save_every": -1}, "`save_every` must be an integer >= 1, got -1"),
        ({"save_every": 2.5}, "`save_every` must be an integer"),
        ({"batch_size": 0}, "`batch_size` must be an integer >= 1, got 0"),
        ({"num_workers": -1}, "`num_workers` must be an integer >= 0"),
        ({"dtype": "int8"}, "`dtype` must be one of float32, float16"),
        ({"faiss": "lsh"}, "unknown index kind 'lsh'"),
        ({"faiss": "flat", "memory_budget": "1GB"}, "`memory_budget` sizes a compressed index.*`faiss` flat"),
        ({"memory_budget": "1GB"}, "does not apply to exact search"),
        ({"faiss": "ivf-pq", "memory_budget": "lots"}, "`memory_budget`: 'lots' is not a size"),
    ],
)
def test_build_arguments_are_checked_before_anything_is_created(lincir, gallery_dir, tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        GalleryIndex.build(lincir, gallery_dir, tmp_path / "out.index", show_progress=False, **options)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]  # no .partial, no lock file


# -- index files: checked against the manifest when loaded ----------------------------------------------------------


@pytest.fixture
def saved_index(tmp_path) -> Path:
    """A v2 index of 5 random embeddings in 3 shards (2, 2, 1 rows), written without a model."""
    generator = torch.Generator().manual_seed(0)
    paths = [f"img/{i}.png" for i in range(5)]
    index = GalleryIndex(paths, torch.randn(5, 8, generator=generator), tmp_path, {"embedding_dim": 8, "model": "m"})
    index.save(tmp_path / "index", shard_size=2)
    return tmp_path / "index"


def rewrite_metadata(folder: Path, number: int, **columns) -> None:
    path = folder / "metadata" / f"{number:06d}.parquet"
    table = pq.read_table(path)
    for name, values in columns.items():
        table = table.set_column(table.column_names.index(name), name, pa.array(values))
    pq.write_table(table, path)


def test_a_sound_index_loads(saved_index):
    index = GalleryIndex.load(saved_index)
    assert len(index) == 5 and read_manifest(saved_index)["shard_rows"] == [2, 2, 1]


@pytest.mark.parametrize(
    "damage, message",
    [
        # the finding: a middle shard rewritten as int64 x 100 (same shape): a different ranking, cosine 59.9
        (lambda f: np.save(f / "embeddings/000001.npy", (np.load(f / "embeddings/000001.npy") * 100).astype(np.int64)),
         "000001.npy holds int64 embeddings; the manifest says float32"),
        (lambda f: np.save(f / "embeddings/000001.npy", np.zeros((2, 8), np.float16)), "holds float16 embeddings"),
        (lambda f: np.save(f / "embeddings/000001.npy", np.zeros((2, 9), np.float32)), r"has shape \[2, 9\]"),
        (lambda f: np.save(f / "embeddings/000001.npy", np.zeros((3, 8), np.float32)), "holds 3 rows; the manifest says 2"),
        (lambda f: np.save(f / "embeddings/000001.npy", np.zeros(16, np.float32)), r"has shape \[16\]"),
        (lambda f: (f / "embeddings/000001.npy").write_bytes((f / "embeddings/000001.npy").read_bytes()[:-7]),
         "000001.npy is damaged: .* bytes where its header promises .* \\(truncated or padded\\)"),
        (lambda f: (f / "embeddings/000001.npy").write_bytes(b"\x93NUMPY garbage"), "000001.npy is corrupt"),
        (lambda f: np.save(f / "embeddings/000001.npy", np.array([[None] * 8] * 2, dtype=object)), "000001.npy"),
        (lambda f: rewrite_metadata(f, 1, id=[1, 2]), r"000001.parquet is corrupt: column `id` holds int64"),
        (lambda f: rewrite_metadata(f, 2, path=[3]), r"000002.parquet is corrupt: column `path` holds int64"),
        (lambda f: pq.write_table(pa.table({"id": ["a"]}), f / "metadata/000000.parquet"), "has 1 rows for 2"),
        (lambda f: (f / "metadata/000001.parquet").unlink(), "000001.parquet is missing"),
        (lambda f: (f / "metadata/000002.parquet").write_bytes(b"PAR1 junk"), "000002.parquet is corrupt"),
        (lambda f: pq.write_table(pa.table({"id": [1], "reason": [2]}), f / "skipped.parquet"), "skipped.parquet"),
    ],
)  # fmt: skip
def test_damaged_or_crafted_shards_are_refused_when_loaded(saved_index, damage, message):
    damage(saved_index)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        GalleryIndex.load(saved_index)


@pytest.mark.parametrize("part", ["embeddings/000001.npy", "metadata/000002.parquet", "manifest.json", "embeddings"])
def test_symlinked_parts_are_refused(saved_index, tmp_path, part):
    outside = tmp_path / "outside"
    shutil.move(saved_index / part, outside)
    (saved_index / part).symlink_to(outside)
    with pytest.raises(ValueError, match="symbolic link|must be a folder"):
        GalleryIndex.load(saved_index)


@pytest.mark.parametrize("part", ["embeddings/000001.npy", "metadata/000001.parquet", "skipped.parquet"])
def test_a_fifo_among_the_parts_is_refused_without_opening_it(saved_index, part):
    (saved_index / part).unlink()
    os.mkfifo(saved_index / part)

    def hung(*_):
        raise TimeoutError(f"opening the FIFO {part} hung")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)  # a guard: opening a FIFO with no writer blocks forever
    try:
        with pytest.raises(ValueError, match="not a regular file"):
            GalleryIndex.load(saved_index)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_search_arguments_on_an_ivf_pq_index(tmp_path):
    embeddings = torch.nn.functional.normalize(
        torch.randn(400, 32, generator=torch.Generator().manual_seed(1)), dim=-1
    )
    index = GalleryIndex([f"{i}.png" for i in range(400)], embeddings, tmp_path, {"embedding_dim": 32, "model": "m"})
    index.info["faiss"] = "ivf-pq"
    index.save(tmp_path / "pq.index", faiss_kwargs={"m": 16})
    loaded = GalleryIndex.load(tmp_path / "pq.index")
    assert loaded.search(embeddings[:1], k=1)[0][0].path == "0.png"
    with pytest.raises(ValueError, match="`top_k` must be an integer >= 1, got 2.5"):
        loaded.search(embeddings[:1], k=2.5)
    with pytest.raises(ValueError, match=r"shape \[B, D\] with B >= 1, got \(0, 32\)"):
        loaded.search(torch.empty(0, 32), k=3)
    with pytest.raises(ValueError, match="`k` must be a positive integer"):
        loaded._backend.search(embeddings[:1], k=2.5)


def test_an_ivf_pq_file_of_another_dimension_says_so(tmp_path, saved_index):
    other = torch.nn.functional.normalize(torch.randn(400, 32, generator=torch.Generator().manual_seed(2)), dim=-1)
    donor = GalleryIndex([f"{i}.png" for i in range(400)], other, tmp_path, {"embedding_dim": 32, "model": "m"})
    donor.info["faiss"] = "ivf-pq"
    donor.save(tmp_path / "donor.index", faiss_kwargs={"m": 16})
    for name in ("faiss.index", "faiss.json"):
        shutil.copy(tmp_path / "donor.index" / name, saved_index / name)
    manifest = json.loads((saved_index / "manifest.json").read_text())
    manifest["faiss"] = {"kind": "ivf-pq", "file": "faiss.index"}
    (saved_index / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="built for 400 vectors of 32 dimensions.*5 of 8.*dimension or size mismatch"):
        GalleryIndex.load(saved_index)


# -- damaged committed units, kills and resumes -----------------------------------------------------------------------


class Crash(Exception):
    pass


def crash_at(model, monkeypatch, call: int) -> list:
    """Make the model's pixel encoder raise on its `call`-th batch (a kill, injected by the test)."""
    calls = []
    original = model.encode_pixel_values

    def encode(pixel_values):
        calls.append(len(pixel_values))
        if len(calls) == call:
            raise Crash("killed")
        return original(pixel_values)

    monkeypatch.setattr(model, "encode_pixel_values", encode)
    return calls


def test_killed_build_with_a_damaged_committed_unit_resumes_equal_to_a_clean_run(lincir, gallery_dir, tmp_path):
    clean = GalleryIndex.build(lincir, gallery_dir, tmp_path / "clean.index", save_every=2, show_progress=False)
    output = tmp_path / "resumed.index"
    with pytest.MonkeyPatch.context() as patch:
        crash_at(lincir, patch, call=3)  # units 0 and 1 are committed, then the run dies
        with pytest.raises(Crash), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            GalleryIndex.build(lincir, gallery_dir, output, save_every=2, batch_size=2, show_progress=False)
    partial = tmp_path / "resumed.index.partial"
    unit = partial / "embeddings" / "000001.npy"
    unit.write_bytes(unit.read_bytes()[:-10])  # a committed unit damaged on disk
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        resumed = GalleryIndex.build(lincir, gallery_dir, output, save_every=2, batch_size=2, show_progress=False)
    assert resumed.computed == 4  # the damaged unit 1 and the units never written; unit 0 is reused
    assert resumed.paths == clean.paths and resumed.skipped == clean.skipped
    torch.testing.assert_close(resumed.embeddings, clean.embeddings, rtol=0, atol=1e-6)
    assert not partial.exists() and not list(tmp_path.glob(".*.lock"))


def test_a_damaged_published_index_is_repaired_by_the_same_command(capfd, lincir_dir, gallery_dir, tmp_path):
    from commands.conftest import assert_error_line, run_cli

    command = ["index", "--model", lincir_dir, "--images", gallery_dir, "--save-every", 2, "--no-progress"]
    assert run_cli(capfd, *command, "--output", tmp_path / "clean.index")[0] == 0
    output = tmp_path / "photos.index"
    assert run_cli(capfd, *command, "--output", output)[0] == 0
    rows = read_manifest(output)["shard_rows"]
    shard = output / "embeddings" / "000001.npy"
    shard.write_bytes(shard.read_bytes()[:-10])  # damaged on disk after it was published
    with pytest.raises(ValueError, match="000001.npy is damaged"):
        GalleryIndex.load(output)
    code, out, err = run_cli(capfd, *command, "--output", output, "--json")
    assert code == 0, err
    assert json.loads(out)["computed"] == rows[1] < sum(rows)  # only the damaged shard's images
    clean, repaired = GalleryIndex.load(tmp_path / "clean.index"), GalleryIndex.load(output)
    assert repaired.paths == clean.paths and repaired.skipped == clean.skipped
    torch.testing.assert_close(repaired.embeddings, clean.embeddings, rtol=0, atol=1e-6)
    assert not (tmp_path / "photos.index.partial").exists()
    # Damaged, but built with other settings: not this command's to repair.
    shard.write_bytes(shard.read_bytes()[:-10])
    code, _, err = run_cli(capfd, *command[:-3], "--save-every", 3, "--no-progress", "--output", output)
    assert_error_line(code, err, "index", "is damaged", "not built by this same command", "--overwrite")


# -- a full disk ------------------------------------------------------------------------------------------------------


class FullDisk:
    """Files opened by `atomic_file` accept `budget` bytes in all, then fail as a full disk does (ENOSPC)."""

    def __init__(self, budget: int):
        self.left = budget
        self.real = os.fdopen

    def __call__(self, *args, **kwargs):
        return _FullDiskFile(self, self.real(*args, **kwargs))


class _FullDiskFile:
    def __init__(self, disk: FullDisk, handle):
        self._disk, self._handle = disk, handle

    def write(self, data):
        size = len(data.encode()) if isinstance(data, str) else memoryview(data).nbytes
        if size > self._disk.left:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._disk.left -= size
        return self._handle.write(data)

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._handle.close()


@pytest.mark.parametrize("budget", [0, 200, 1700, 4000])  # in the .npy header, its rows, the Parquet, the rest
def test_a_full_disk_is_named_and_leaves_nothing_half_written(capfd, lincir_dir, gallery_dir, tmp_path, budget):
    from commands.conftest import assert_error_line, run_cli

    before = snapshot(gallery_dir)
    output = tmp_path / "index"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("hf_cir.utils.io.os.fdopen", FullDisk(budget))
        code, _, err = run_cli(
            capfd, "index", "--model", lincir_dir, "--images", gallery_dir, "--output", output, "--no-progress"
        )
    assert_error_line(code, err, "index", "the disk is full", "no space left to write")
    assert not output.exists() and snapshot(gallery_dir) == before
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]  # nothing half-written


@pytest.mark.parametrize("kind", ["hnsw", "ivf-pq"])
def test_a_full_disk_while_writing_a_faiss_file_is_named(tmp_path, kind):
    from hf_cir.retrieval.compressed import CompressedIndex, plan_compressed_index
    from hf_cir.retrieval.search import FaissIndex

    vectors = torch.nn.functional.normalize(torch.randn(1000, 32, generator=torch.Generator().manual_seed(0)), dim=-1)
    index = (
        FaissIndex(vectors, kind="hnsw")
        if kind == "hnsw"
        else CompressedIndex.build(vectors, plan_compressed_index(1000, 32, m=16))
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("hf_cir.utils.io.os.fdopen", FullDisk(1000))
        with pytest.raises(OSError, match="the disk is full: no space left to write .*faiss.index"):
            index.save(tmp_path / "faiss.index")
    assert list(tmp_path.iterdir()) == []  # nothing half-written


# -- one build at a time ----------------------------------------------------------------------------------------------


def test_a_held_lock_refuses_a_second_build_and_a_stale_one_does_not(capfd, lincir_dir, gallery_dir, tmp_path):
    from commands.conftest import assert_error_line, run_cli

    output = tmp_path / "out.index"
    lock = tmp_path / ".out.index.lock"
    with open(lock, "w") as holder:  # another build holds the output
        holder.write("4242\n")
        holder.flush()
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        code, _, err = run_cli(
            capfd, "index", "--model", lincir_dir, "--images", gallery_dir, "--output", output, "--no-progress"
        )
        assert_error_line(code, err, "index", "another hf-cir index build (process 4242) is writing", "out.index")
        assert not output.exists() and not (tmp_path / "out.index.partial").exists()
    # The holder is gone (its lock file is left, as after a kill): the next build takes it over and removes it.
    code, _, err = run_cli(
        capfd, "index", "--model", lincir_dir, "--images", gallery_dir, "--output", output, "--no-progress"
    )
    assert code == 0, err
    assert GalleryIndex.load(output).paths and not lock.exists()


BUILD = textwrap.dedent(
    """
    import sys
    from hf_cir.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def test_two_concurrent_builds_of_one_output(lincir_dir, tmp_path):
    photos = tmp_path / "photos"
    make_gallery(photos, with_bad_files=False)
    output = tmp_path / "same.index"
    command = [sys.executable, "-c", BUILD, "index", "--model", str(lincir_dir), "--images", str(photos)]
    command += ["--output", str(output), "--save-every", "1", "--batch-size", "1", "--no-progress"]
    environment = dict(os.environ, OMP_NUM_THREADS="1", HF_HOME=str(tmp_path / "hf"))
    runs = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=environment) for _ in range(2)]
    results = [(run.wait(timeout=600), run.stderr.read()) for run in runs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    lines = [line for line in loser.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in loser, loser
    assert "another hf-cir index build" in lines[0] or "already exists" in lines[0], lines[0]
    assert len(GalleryIndex.load(output)) == 6
    assert {p.name for p in tmp_path.iterdir()} - {"hf"} == {"photos", "same.index"}  # no .partial, no lock
