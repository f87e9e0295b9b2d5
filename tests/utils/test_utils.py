import json

import numpy as np
import pytest
from PIL import Image
from transformers import AutoTokenizer

from hf_cir.utils import atomic_directory, atomic_file, build_clip_tokenizer, load_image, to_rgb


def test_built_tokenizer_matches_reference_ids(reference_dir):
    tokenizer = build_clip_tokenizer()
    assert len(tokenizer) == 49408
    assert tokenizer.convert_tokens_to_ids("$</w>") == 259
    stored = AutoTokenizer.from_pretrained(reference_dir / "clip")
    cases = json.loads((reference_dir / "lincir" / "cases.json").read_text())["cases"]
    for case in cases:
        ids = tokenizer(case["texts"], padding="max_length", truncation=True, max_length=77)["input_ids"]
        assert ids == case["input_ids"]
        assert ids == stored(case["texts"], padding="max_length", truncation=True, max_length=77)["input_ids"]


def test_build_clip_tokenizer_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="bpe_path"):
        build_clip_tokenizer(tmp_path / "nope.txt.gz")


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "1"])
def test_to_rgb_every_mode(mode):
    image = Image.new(mode, (3, 2))
    converted = to_rgb(image)
    assert converted.mode == "RGB" and converted.size == (3, 2)


def test_transparent_pixels_become_background():
    image = Image.new("RGBA", (2, 2), (10, 20, 30, 0))
    assert to_rgb(image).getpixel((0, 0)) == (255, 255, 255)


def test_load_image_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_image(tmp_path / "missing.png")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.jpg"):
        load_image(empty)
    with pytest.raises(ValueError, match="shape"):
        load_image(np.zeros((2, 2, 2), dtype=np.uint8))
    with pytest.raises(TypeError, match="reference_image"):
        load_image(3, name="reference_image")


def test_load_image_from_path_and_array(tmp_path):
    path = tmp_path / "gray.png"
    Image.new("L", (5, 4), 128).save(path)
    assert load_image(path).getpixel((0, 0)) == (128, 128, 128)
    assert load_image(np.full((4, 5, 1), 7, dtype=np.uint8)).getpixel((0, 0)) == (7, 7, 7)


def test_atomic_file_keeps_old_content_on_error(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_file(target, "w") as handle:
            handle.write("new")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_atomic_directory_replaces_whole_folder(tmp_path):
    from hf_cir.utils.io import ArtefactKind

    kind = ArtefactKind("test folder", None, lambda _: True, entries=("x", "y"))
    target = tmp_path / "index"
    with atomic_directory(target) as tmp:
        (tmp / "x").write_text("1")
    with pytest.raises(FileExistsError):
        with atomic_directory(target):
            pass
    with pytest.raises(RuntimeError):
        with atomic_directory(target, overwrite=True, kind=kind) as tmp:
            (tmp / "y").write_text("2")
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in target.iterdir()) == ["x"]
    with atomic_directory(target, overwrite=True, kind=kind) as tmp:
        (tmp / "y").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["y"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]


def test_load_image_float_array_is_zero_to_one():
    array = np.full((2, 2, 3), 0.5, dtype=np.float32)
    assert load_image(array).getpixel((0, 0)) == (128, 128, 128)


def test_atomic_writes_get_ordinary_permissions(tmp_path):
    import os
    import stat

    mask = os.umask(0o022)
    try:
        with atomic_file(tmp_path / "f.txt", "w") as handle:
            handle.write("x")
        with atomic_directory(tmp_path / "d"):
            pass
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755
