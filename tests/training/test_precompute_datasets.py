"""training/precompute_embeddings.py reads datasets the `datasets` way (an image folder keeps its image column), a
failed run never blocks its corrected rerun, and --overwrite_output_dir replaces only an earlier run's files."""

import json

import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, CLIPVisionModelWithProjection

from hf_cir.training.embeddings import load_embedding_dataset

from .helpers import load_script, run_in_process

PRECOMPUTE = load_script("precompute_embeddings")


@pytest.fixture
def image_folder(tmp_path):
    """A standard `datasets` image folder: PNGs and a metadata.jsonl with a caption per file."""
    folder = tmp_path / "images"
    folder.mkdir()
    rows = []
    for index, colour in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
        Image.new("RGB", (24, 24), colour).save(folder / f"{index}.png")
        rows.append({"file_name": f"{index}.png", "caption": f"colour {index}"})
    (folder / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return folder


def test_image_folder_rerun_after_failure_and_overwrite(image_folder, tiny_clip_dir, tmp_path):
    output = tmp_path / "emb"
    common = ["--task", "t2i", "--dataset_name", image_folder, "--output_dir", output,
              "--text_encoder_name_or_path", tiny_clip_dir, "--image_encoder_name_or_path", tiny_clip_dir]  # fmt: skip
    with pytest.raises(ValueError, match="--text_column"):
        run_in_process(PRECOMPUTE, [*common, "--text_column", "text"])  # the folder's column is `caption`
    assert (output / "precompute_run.json").is_file()
    run_in_process(PRECOMPUTE, [*common, "--text_column", "caption"])  # the corrected run is not blocked
    dataset, info = load_embedding_dataset(str(output))
    assert info["num_rows"] == 3 and len(dataset) == 3
    encoder = CLIPVisionModelWithProjection.from_pretrained(tiny_clip_dir).eval()
    processor = AutoImageProcessor.from_pretrained(tiny_clip_dir)
    with torch.no_grad():
        pixels = processor(images=[Image.open(image_folder / f"{i}.png").convert("RGB") for i in range(3)],
                           return_tensors="pt").pixel_values  # fmt: skip
        expected = encoder(pixel_values=pixels).image_embeds
    stored = torch.tensor(dataset.with_format("numpy")["target_image_embeds"])
    # (the fixture CLIP keeps float16 weights: agreement to float16 precision)
    torch.testing.assert_close(stored.float(), expected.float(), rtol=1e-2, atol=5e-3)

    # Chunks of a run with other settings are kept unless --overwrite_output_dir.
    with pytest.raises(ValueError, match="--overwrite_output_dir"):
        run_in_process(PRECOMPUTE, [*common, "--text_column", "caption", "--chunk_size", "2"])
    (output / "notes.txt").write_text("mine")
    run_in_process(PRECOMPUTE, [*common, "--text_column", "caption", "--chunk_size", "2", "--overwrite_output_dir"])
    assert sorted(p.name for p in (output / "data").iterdir()) == ["chunk-000000.parquet", "chunk-000001.parquet"]
    assert (output / "notes.txt").read_text() == "mine"  # not ours: left alone


def test_dataloader_workers_write_the_same_chunks(image_folder, tiny_clip_dir, tmp_path):
    """Images opened and preprocessed in DataLoader workers (the engine `hf-cir index` uses) give the very same
    files; a missing image is still reported as the script's error, from the worker."""
    common = ["--task", "t2i", "--dataset_name", image_folder, "--text_column", "caption", "--chunk_size", 2,
              "--text_encoder_name_or_path", tiny_clip_dir, "--image_encoder_name_or_path", tiny_clip_dir]  # fmt: skip
    run_in_process(PRECOMPUTE, [*common, "--output_dir", tmp_path / "none"])
    run_in_process(PRECOMPUTE, [*common, "--output_dir", tmp_path / "two", "--dataloader_num_workers", 2])
    for name in ("chunk-000000.parquet", "chunk-000001.parquet"):
        assert (tmp_path / "two" / "data" / name).read_bytes() == (tmp_path / "none" / "data" / name).read_bytes()

    (tmp_path / "pairs.jsonl").write_text(json.dumps({"image": "missing.png", "text": "gone"}) + "\n")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        run_in_process(
            PRECOMPUTE,
            ["--task", "t2i", "--train_file", tmp_path / "pairs.jsonl", "--image_root", image_folder,
             "--output_dir", tmp_path / "bad", "--dataloader_num_workers", 1,
             "--text_encoder_name_or_path", tiny_clip_dir, "--image_encoder_name_or_path", tiny_clip_dir],
        )  # fmt: skip
