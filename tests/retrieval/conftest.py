"""Tiny LinCIR and CompoDiff folders built from the fixture CLIP, and a generated image folder with bad files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 200, 40),
    "blue": (30, 40, 220),
    "yellow": (230, 220, 30),
    "black": (10, 10, 10),
    "white": (245, 245, 245),
}


def _save_tiny_clip_copy(source: Path, target: Path, projection_dim: int) -> Path:
    """A random CLIP like the fixture one but with another projection size (same tokenizer and preprocessing)."""
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig.from_pretrained(source)
    config.projection_dim = projection_dim
    config.text_config.projection_dim = projection_dim
    config.vision_config.projection_dim = projection_dim
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(target)
    for name in ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"):
        shutil.copy(source / name, target / name)
    return target


@pytest.fixture(scope="session")
def lincir_dir(tmp_path_factory, tiny_clip_dir) -> Path:
    from hf_cir.models.lincir import LinCIRModel, LinCIRProcessor

    folder = tmp_path_factory.mktemp("models") / "lincir"
    torch.manual_seed(0)
    LinCIRModel.from_clip(tiny_clip_dir).save_pretrained(folder)
    LinCIRProcessor.from_pretrained(tiny_clip_dir).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def lincir_other_size_dir(tmp_path_factory, tiny_clip_dir) -> Path:
    from hf_cir.models.lincir import LinCIRModel, LinCIRProcessor

    root = tmp_path_factory.mktemp("models")
    clip = _save_tiny_clip_copy(tiny_clip_dir, root / "clip32", projection_dim=32)
    folder = root / "lincir32"
    LinCIRModel.from_clip(clip).save_pretrained(folder)
    LinCIRProcessor.from_pretrained(clip).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def compodiff_dir(tmp_path_factory, tiny_clip_dir) -> Path:
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPTextModel, CLIPVisionModelWithProjection

    from hf_cir.models.compodiff import CompoDiffPriorTransformer
    from hf_cir.pipelines.compodiff import CompoDiffPipeline
    from hf_cir.schedulers import CompoDiffScheduler

    config = json.loads((tiny_clip_dir / "config.json").read_text())
    torch.manual_seed(0)
    prior = CompoDiffPriorTransformer(
        embedding_dim=config["projection_dim"],
        num_layers=1,
        num_attention_heads=2,
        attention_head_dim=16,
        num_cross_attention_heads=2,
        text_embed_dim=config["text_config"]["hidden_size"],
        mask_size=8,
    )
    pipeline = CompoDiffPipeline(
        prior=prior,
        scheduler=CompoDiffScheduler(),
        text_encoder=CLIPTextModel.from_pretrained(tiny_clip_dir, dtype=torch.float32),
        tokenizer=AutoTokenizer.from_pretrained(tiny_clip_dir),
        image_encoder=CLIPVisionModelWithProjection.from_pretrained(tiny_clip_dir, dtype=torch.float32),
        image_processor=AutoImageProcessor.from_pretrained(tiny_clip_dir),
    )
    folder = tmp_path_factory.mktemp("models") / "compodiff"
    pipeline.save_pretrained(folder)
    return folder


def make_image(path: Path, colour: tuple[int, int, int], seed: int, size=(20, 16), mode: str = "RGB") -> Path:
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + rng.integers(-20, 20, size=(size[1], size[0], 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).convert(mode).save(path)
    return path


BAD_FILES = {
    "notes.txt": "not an image file (unknown extension)",
    "nested/empty.png": "empty file (0 bytes)",
    "nested/deeper/broken.jpg": "is not a readable image",
}


def make_gallery(root: Path, with_bad_files: bool = True) -> list[str]:
    """Six colour images in nested folders (PNG, JPEG, a palette GIF), plus a non-image, an empty and a corrupt file."""
    names = []
    for index, (name, colour) in enumerate(COLOURS.items()):
        relative = ["", "nested/", "nested/deeper/"][index % 3] + f"{name}." + ["png", "jpg", "gif"][index % 3]
        make_image(root / relative, colour, seed=index, mode="P" if relative.endswith("gif") else "RGB")
        names.append(relative)
    if with_bad_files:
        (root / "notes.txt").write_text("not an image")
        (root / "nested" / "empty.png").write_bytes(b"")
        (root / "nested" / "deeper" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    return sorted(names)


@pytest.fixture
def gallery_dir(tmp_path) -> Path:
    root = tmp_path / "photos"
    make_gallery(root)
    return root
