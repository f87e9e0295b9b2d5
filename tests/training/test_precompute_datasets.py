"""training/precompute_embeddings.py reads datasets the `datasets` way (an image folder keeps its image column), a
failed run never blocks its corrected rerun, --overwrite_output_dir replaces only an earlier run's files, and nothing in
--output_dir that hf-cir did not write is ever replaced."""

import json

import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, CLIPVisionModelWithProjection

from hf_cir.training.embeddings import load_embedding_dataset

from .helpers import _reset_accelerate, load_script, run_in_process

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
    assert json.loads((output / "training_run.json").read_text())["script"] == "precompute_embeddings.py"
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


def _exit_status(argv, capsys) -> tuple[int, str]:
    """Run the script as its command line does (`run_training_script`): exit status and what it printed to stderr."""
    _reset_accelerate()
    try:
        status = PRECOMPUTE.run_training_script(
            PRECOMPUTE.main, PRECOMPUTE.parse_args, [str(a) for a in argv], prog="precompute_embeddings.py"
        )
    finally:
        _reset_accelerate()
    return status, capsys.readouterr().err


@pytest.mark.parametrize(
    "entry",
    ["embeddings_info.json", "null_text_embeds.safetensors", "data/chunk-000000.parquet", "training_run.json"],
)
def test_users_files_in_output_dir_are_never_replaced(entry, image_folder, tiny_clip_dir, tmp_path, capsys):
    """A file of the user's where the script would write (even one named like a chunk, which would otherwise be taken
    as done) stops the run with one line and exit 2, before anything is written; the user's other files survive."""
    output = tmp_path / "emb"
    (output / entry).parent.mkdir(parents=True)
    (output / entry).write_text("mine")
    (output / "README.md").write_text("my notes")
    common = ["--task", "t2i", "--dataset_name", image_folder, "--text_column", "caption", "--output_dir", output,
              "--text_encoder_name_or_path", tiny_clip_dir, "--image_encoder_name_or_path", tiny_clip_dir]  # fmt: skip
    for extra in ([], ["--overwrite_output_dir"]):
        status, err = _exit_status([*common, *extra], capsys)
        assert status == 2
        assert err.count("\n") == 1 and "was not written by an hf-cir training run" in err
        assert (output / entry).read_text() == "mine" and (output / "README.md").read_text() == "my notes"
    assert sorted(p.name for p in output.iterdir()) == sorted({"README.md", entry.split("/")[0]})


def test_rerun_of_own_output_resumes_and_keeps_users_files(image_folder, tiny_clip_dir, tmp_path, capsys):
    """The user's README.md and notes beside the outputs survive a run, its resumption, and --overwrite_output_dir;
    a rerun with the same settings reuses the committed chunks; an earlier version's folder (`precompute_run.json`)
    resumes too."""
    output = tmp_path / "emb"
    output.mkdir()
    (output / "README.md").write_text("my notes")
    (output / "notes").mkdir()
    (output / "notes" / "a.txt").write_text("mine")
    common = ["--task", "t2i", "--dataset_name", image_folder, "--text_column", "caption", "--output_dir", output,
              "--chunk_size", 2,
              "--text_encoder_name_or_path", tiny_clip_dir, "--image_encoder_name_or_path", tiny_clip_dir]  # fmt: skip
    assert _exit_status(common, capsys)[0] == 0
    chunks = sorted((output / "data").iterdir())
    assert [p.name for p in chunks] == ["chunk-000000.parquet", "chunk-000001.parquet"]
    record = json.loads((output / "training_run.json").read_text())
    assert record["written"] == sorted(
        ["training_run.json", "data", "embeddings_info.json", "null_text_embeds.safetensors"]
    )

    # Resume: a removed chunk is recomputed, the other is reused as it is (same inode: never rewritten).
    kept = chunks[0].stat().st_ino
    chunks[1].unlink()
    assert _exit_status(common, capsys)[0] == 0
    assert chunks[0].stat().st_ino == kept and chunks[1].is_file()

    # A folder written by an earlier version (its run recorded in `precompute_run.json`) is adopted and resumed.
    settings = {k: v for k, v in record.items() if k not in ("script", "written")}
    (output / "training_run.json").unlink()
    (output / "precompute_run.json").write_text(json.dumps(settings))
    assert _exit_status(common, capsys)[0] == 0
    assert chunks[0].stat().st_ino == kept

    # Other settings + --overwrite_output_dir replace our files only.
    other = [*common, "--overwrite_output_dir"]
    other[other.index("--chunk_size") + 1] = 3
    assert _exit_status(other, capsys)[0] == 0
    assert [p.name for p in (output / "data").iterdir()] == ["chunk-000000.parquet"]
    assert (output / "README.md").read_text() == "my notes" and (output / "notes" / "a.txt").read_text() == "mine"
