"""A streaming dataset (`datasets.IterableDataset`, `--streaming`) indexes the same images with the same ids and
embeddings as the same dataset loaded whole, and a rerun after an interruption skips the shards it committed."""

import datasets
import pytest
import torch

from hf_cir.cli import main
from hf_cir.retrieval import GalleryIndex, load_retrieval_model
from hf_cir.retrieval.storage import read_manifest

from .conftest import make_gallery


@pytest.fixture(scope="module")
def lincir(lincir_dir):
    return load_retrieval_model(lincir_dir, device="cpu")


def write_parquet_gallery(photos, path):
    """The gallery as one Parquet file with the image bytes inside (as `push_to_hub` writes them) and a caption."""
    names = make_gallery(photos, with_bad_files=False)
    rows = {
        "image": [{"bytes": (photos / name).read_bytes(), "path": name} for name in names],
        "caption": [f"a photo of {name}" for name in names],
    }
    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string")})
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(path))
    return names


class CrashingEncoder:
    """Replaces the model's pixel encoder by one that raises on the third batch while `crash` is set."""

    def __init__(self, model, monkeypatch):
        self.original, self.crash, self.calls = model._encode_pixels, True, []
        monkeypatch.setattr(model, "_encode_pixels", self)

    def __call__(self, pixel_values):
        self.calls.append(len(pixel_values))
        if self.crash and len(self.calls) == 3:
            raise RuntimeError("simulated crash")
        return self.original(pixel_values)


def rows_of(index):
    return [{k: v for k, v in row.items() if k != "norm"} for row in index.metadata(range(len(index)))]


def test_streaming_equals_the_whole_dataset(capsys, lincir, lincir_dir, tmp_path):
    parquet = tmp_path / "gallery.parquet"
    names = write_parquet_gallery(tmp_path / "photos", parquet)
    common = ["index", "--model", str(lincir_dir), "--dataset", str(parquet), "--save-every", "4", "--no-progress"]
    assert main([*common, "--output", str(tmp_path / "whole.index")]) == 0, capsys.readouterr().err
    assert main([*common, "--streaming", "--output", str(tmp_path / "stream.index")]) == 0, capsys.readouterr().err
    whole, stream = GalleryIndex.load(tmp_path / "whole.index"), GalleryIndex.load(tmp_path / "stream.index")
    manifest = read_manifest(tmp_path / "stream.index")
    assert manifest["num_shards"] == 2 and manifest["count"] == len(names) and manifest["source"]["streaming"]
    assert stream.paths == whole.paths == [str(row) for row in range(len(names))]
    assert rows_of(stream) == rows_of(whole) and rows_of(stream)[1]["caption"] == f"a photo of {names[1]}"
    torch.testing.assert_close(stream.embeddings, whole.embeddings, rtol=0, atol=1e-6)

    # An image folder read as a stream through the Python API (an IterableDatasetDict: its "train" split).
    folder = datasets.load_dataset(str(tmp_path / "photos"), streaming=True)
    streamed = GalleryIndex.build(lincir, folder, tmp_path / "folder.index", save_every=4, show_progress=False)
    loaded = GalleryIndex.build(
        lincir, datasets.load_dataset(str(tmp_path / "photos")), tmp_path / "loaded.index", show_progress=False
    )
    assert streamed.paths == loaded.paths and rows_of(streamed) == rows_of(loaded)
    torch.testing.assert_close(streamed.embeddings, loaded.embeddings, rtol=0, atol=1e-6)
    torch.testing.assert_close(streamed.embeddings, whole.embeddings, rtol=0, atol=1e-6)


def test_interrupted_stream_resumes_its_committed_shards(lincir, tmp_path, monkeypatch):
    parquet = tmp_path / "gallery.parquet"
    names = write_parquet_gallery(tmp_path / "photos", parquet)
    output = tmp_path / "stream.index"
    encoder = CrashingEncoder(lincir, monkeypatch)

    def build():
        stream = datasets.load_dataset("parquet", data_files=str(parquet), split="train", streaming=True)
        return GalleryIndex.build(lincir, stream, output, batch_size=2, save_every=2, show_progress=False)

    with pytest.raises(RuntimeError, match="simulated crash"):
        build()
    partial = tmp_path / "stream.index.partial"
    assert sorted(p.name for p in (partial / "units").iterdir()) == ["000000.json", "000001.json"]
    kept = {p.name: p.stat().st_mtime_ns for p in (partial / "embeddings").iterdir()}

    encoder.crash, encoder.calls = False, []
    index = build()
    assert index.computed == len(names) - 4 and encoder.calls == [2]  # only the last unit is embedded again
    assert {name: (output / "embeddings" / name).stat().st_mtime_ns for name in kept} == kept
    whole = GalleryIndex.build(
        lincir, datasets.Dataset.from_parquet(str(parquet)), tmp_path / "whole.index", show_progress=False
    )
    assert index.paths == whole.paths
    torch.testing.assert_close(index.embeddings, whole.embeddings, rtol=0, atol=1e-6)


def test_a_stream_whose_files_changed_is_not_resumed(lincir, tmp_path, monkeypatch):
    from hf_cir.retrieval.sources import DatasetSource

    parquet = tmp_path / "gallery.parquet"
    names = write_parquet_gallery(tmp_path / "photos", parquet)
    output = tmp_path / "stream.index"
    encoder = CrashingEncoder(lincir, monkeypatch)

    def build():
        source = DatasetSource(str(parquet), streaming=True)
        return GalleryIndex.build(lincir, source, output, batch_size=2, save_every=2, show_progress=False)

    with pytest.raises(RuntimeError, match="simulated crash"):
        build()
    # The same first image, the other rows in another order: the committed second unit no longer holds them.
    table = datasets.Dataset.from_parquet(str(parquet))
    table.select([0, *range(len(table) - 1, 0, -1)]).to_parquet(str(parquet))
    encoder.crash, encoder.calls = False, []
    index = build()
    assert index.computed == len(names)  # started again, nothing reused
    whole = GalleryIndex.build(
        lincir, datasets.Dataset.from_parquet(str(parquet)), tmp_path / "whole.index", show_progress=False
    )
    assert index.paths == whole.paths
    torch.testing.assert_close(index.embeddings, whole.embeddings, rtol=0, atol=1e-6)
