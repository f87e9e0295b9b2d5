"""Every gallery source indexes the same images with the same embeddings: folder, datasets sources, webdataset tars."""

import io
import json
import tarfile

import datasets
import numpy as np
import pytest
import torch

from hf_cir.cli import main
from hf_cir.retrieval import GalleryIndex, load_retrieval_model
from hf_cir.retrieval.sources import DatasetSource, WebDatasetSource, expand_shard_pattern
from hf_cir.retrieval.storage import read_manifest

from .conftest import make_gallery


@pytest.fixture(scope="module")
def lincir(lincir_dir):
    return load_retrieval_model(lincir_dir, device="cpu")


@pytest.fixture
def folder_index(lincir, tmp_path):
    photos = tmp_path / "photos"
    names = make_gallery(photos, with_bad_files=False)
    index = GalleryIndex.build(lincir, photos, tmp_path / "folder.index", batch_size=4, show_progress=False)
    assert index.paths == names
    return photos, index


def embeddings_by(index, key):
    rows = index.metadata(range(len(index)))
    return {row[key]: index.get_embeddings([i])[0] for i, row in enumerate(rows)}


def assert_same_images(reference, other, key, rename=lambda name: name):
    expected = embeddings_by(reference, "id")
    found = {rename(name): embedding for name, embedding in embeddings_by(other, key).items()}
    assert sorted(found) == sorted(expected)
    for name, embedding in expected.items():
        torch.testing.assert_close(found[name], embedding, rtol=0, atol=1e-6)


def test_dataset_image_folder_and_saved_dataset_equal_the_folder(capsys, lincir_dir, folder_index, tmp_path):
    photos, reference = folder_index
    # An image folder as `datasets` reads it: the images plus metadata.jsonl with a caption per file.
    with open(photos / "metadata.jsonl", "w") as handle:
        for name in reference.paths:
            handle.write(json.dumps({"file_name": name, "caption": f"a photo of {name}"}) + "\n")
    output = tmp_path / "dataset.index"
    code = main(
        ["index", "--model", str(lincir_dir), "--dataset", str(photos), "--output", str(output), "--no-progress"]
    )
    assert code == 0, capsys.readouterr().err
    index = GalleryIndex.load(output)
    assert read_manifest(output)["source"]["kind"] == "dataset"
    assert_same_images(reference, index, "path")
    first = index.metadata([0])[0]
    assert first["caption"] == f"a photo of {first['path']}" and first["row"] == 0 and first["id"] == "0"
    hit = index.search(reference.get_embeddings([0]), k=1)[0][0]
    assert hit.metadata["path"] == reference.paths[0] and hit.absolute_path == str(
        photos.resolve() / reference.paths[0]
    )

    # The same rows written with save_to_disk (images embedded as bytes), through the Python API.
    saved = tmp_path / "saved"
    dataset = datasets.Dataset.from_dict(
        {"image": [str(photos / n) for n in reference.paths], "name": reference.paths}
    )
    dataset.cast_column("image", datasets.Image()).save_to_disk(str(saved))
    source = DatasetSource(str(saved), id_column="name")
    from_disk = GalleryIndex.build(lincir_from(lincir_dir), source, tmp_path / "saved.index", show_progress=False)
    assert_same_images(reference, from_disk, "id")


def lincir_from(folder):
    return load_retrieval_model(folder, device="cpu")


def write_tar_shards(photos, names, folder, per_shard=4):
    """Tar shards as img2dataset writes them: `{key}.png`, `{key}.txt` (caption), `{key}.json` (url)."""
    folder.mkdir()
    keys = {}
    for shard in range(-(-len(names) // per_shard)):
        with tarfile.open(folder / f"{shard:05d}.tar", "w") as archive:
            for offset, name in enumerate(names[shard * per_shard : (shard + 1) * per_shard]):
                key = f"{shard:05d}{offset:04d}"
                keys[key] = name
                extension = name.rsplit(".", 1)[-1]
                members = {
                    extension: (photos / name).read_bytes(),
                    "txt": f"caption of {name}".encode(),
                    "json": json.dumps({"url": f"https://example.com/{name}", "key": key}).encode(),
                }
                for suffix, data in members.items():
                    info = tarfile.TarInfo(f"{key}.{suffix}")
                    info.size = len(data)
                    archive.addfile(info, io.BytesIO(data))
    return keys


def test_webdataset_shards_equal_the_folder(capsys, lincir_dir, folder_index, tmp_path):
    photos, reference = folder_index
    keys = write_tar_shards(photos, reference.paths, tmp_path / "shards")
    pattern = str(tmp_path / "shards" / "{00000..00001}.tar")
    assert [p.name for p in expand_shard_pattern(pattern)] == ["00000.tar", "00001.tar"]
    output = tmp_path / "wds.index"
    args = ["index", "--model", str(lincir_dir), "--webdataset", pattern, "--output", str(output), "--no-progress"]
    assert main(args + ["--num-workers", "2", "--embedding-dtype", "float32"]) == 0, capsys.readouterr().err
    index = GalleryIndex.load(output)
    assert read_manifest(output)["num_shards"] == 2  # one shard per tar
    assert_same_images(reference, index, "id", rename=keys.get)
    row = index.metadata([5])[0]
    assert row["caption"] == f"caption of {keys[row['key']]}" and row["url"].endswith(keys[row["key"]])
    assert row["shard"] == "00001.tar"

    with pytest.raises(FileNotFoundError, match="no such tar file"):
        WebDatasetSource(str(tmp_path / "shards" / "{00000..00003}.tar"))


def test_workers_and_float16_storage(lincir, folder_index, tmp_path):
    photos, reference = folder_index
    index = GalleryIndex.build(
        lincir, photos, tmp_path / "f16.index", num_workers=2, dtype="float16", save_every=4, show_progress=False
    )
    manifest = read_manifest(tmp_path / "f16.index")
    assert manifest["dtype"] == "float16" and manifest["num_shards"] == 2 and manifest["count"] == 6
    assert np.load(tmp_path / "f16.index" / "embeddings" / "000000.npy").dtype == np.float16
    assert index.paths == reference.paths
    torch.testing.assert_close(index.embeddings, reference.embeddings, rtol=2e-3, atol=2e-3)
    query = reference.get_embeddings([2])
    assert [h.path for h in index.search(query, k=3)[0]] == [h.path for h in reference.search(query, k=3)[0]]


def test_dataset_errors(lincir_dir, tmp_path):
    dataset = datasets.Dataset.from_dict({"caption": ["a", "b"]})
    with pytest.raises(ValueError, match="no image column None; its columns are \\['caption'\\]"):
        DatasetSource(dataset)
    with pytest.raises(ValueError, match="`id_column`: the dataset has no column 'key'"):
        DatasetSource(datasets.Dataset.from_dict({"image": ["x.png"]}), id_column="key")
    with pytest.raises(ValueError, match="no image column None; its columns are \\['caption'\\]"):
        DatasetSource(dataset.to_iterable_dataset())  # a stream is checked the same way
    empty = datasets.Dataset.from_dict({"image": []}, features=datasets.Features({"image": datasets.Image()}))
    empty.to_parquet(str(tmp_path / "empty.parquet"))
    with pytest.raises(ValueError, match="`dataset`: .*empty.parquet has no rows"):
        DatasetSource(str(tmp_path / "empty.parquet"), streaming=True)


def test_what_workers_receive_is_picklable_and_holds_no_model(lincir, folder_index, tmp_path):
    # Workers started by spawn or forkserver (macOS, Windows, Python 3.14 on Linux) get the preparer by pickling.
    import pickle

    from hf_cir.retrieval.engine import _GalleryShards
    from hf_cir.retrieval.sources import ImageFolderSource

    photos, _ = folder_index
    source = ImageFolderSource(photos)
    work = _GalleryShards(lincir, source, tmp_path / "work", unit_size=4, dtype="float32")
    payload = pickle.dumps(work.preparer())
    assert b"LinCIRModel" not in payload and b"CLIPTextModel" not in payload
    row = source.entries(0, 4)[0]
    assert torch.equal(pickle.loads(payload)(row), work.preparer()(row))
