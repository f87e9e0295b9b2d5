"""Training files for CompoDiff on the toy world: formats, masks, and no held-out combination anywhere."""

import json

import numpy as np
from PIL import Image

from hf_cir.toy import ToyWorld

from .tools import load_toy_tool

write_compodiff_training_files = load_toy_tool("build_toy_models").write_compodiff_training_files


def test_training_files(tmp_path):
    world = ToyWorld()
    files = write_compodiff_training_files(tmp_path, world, variants=1, num_triplets=20, max_combinations=40)
    rows = {task: [json.loads(line) for line in path.read_text().splitlines()] for task, path in files.items()}
    assert len(rows["t2i"]) == len(rows["masked"]) == 40
    assert len(rows["triplet"]) == 20
    assert set(rows["triplet"][0]) == {"reference_image", "target_image", "text", "reverse_text"}
    used = {
        int(row[key].split("/")[1].split("_")[0])
        for task in rows
        for row in rows[task]
        for key in row
        if key.endswith("image") or key == "image"
    }
    held_out = {c.index for c in world.held_out_combinations}
    assert used and not used & held_out
    row = rows["masked"][0]
    image = np.asarray(Image.open(tmp_path / row["image"]), dtype=np.int32)
    mask = np.asarray(Image.open(tmp_path / row["mask"])) > 0
    assert Image.open(tmp_path / row["mask"]).mode == "L" and mask.shape == image.shape[:2]
    # The mask covers the object: the (saturated) object pixels lie inside it.
    colourful = np.abs(image[..., 0] - image[..., 1]) + np.abs(image[..., 1] - image[..., 2]) > 60
    assert colourful.sum() == 0 or (colourful & mask).sum() / colourful.sum() > 0.95
    assert 0 < mask.mean() < 0.8
    for triplet in rows["triplet"]:
        assert triplet["text"] and triplet["reverse_text"] and triplet["text"] != triplet["reverse_text"]
