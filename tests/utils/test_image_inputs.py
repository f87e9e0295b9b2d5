"""One RGB conversion and one size bound for every image input: `LinCIRProcessor`, `CompoDiffPipeline`, and the
CLI / index / app path (`hf_cir.utils.load_image` on a file) give the same pixels for every PIL mode, and an image
whose aspect ratio would make the CLIP resize explode is refused with one clear error everywhere."""

import numpy as np
import pytest
import torch
from PIL import Image

from hf_cir import LinCIRProcessor
from hf_cir.utils import load_image
from hf_cir.utils.images import MAX_ASPECT_RATIO, check_image_size


def _gradient(low: int, high: int, dtype) -> np.ndarray:
    return np.linspace(low, high, 24 * 30).reshape(24, 30).astype(dtype)


def _image(mode: str) -> Image.Image:
    """An image of `mode` whose pixels use the mode's range (16-bit values above 255, real transparency, ...)."""
    rgb = Image.fromarray(np.stack([_gradient(0, 255, np.uint8)] * 3, axis=-1)[..., ::-1].copy())
    if mode in ("I;16", "I"):
        return Image.fromarray(_gradient(0, 65535, np.uint16 if mode == "I;16" else np.int32))
    if mode == "F":
        return Image.fromarray(_gradient(0, 300, np.float32))
    if mode in ("LA", "RGBA"):
        image = rgb.convert(mode)
        image.putalpha(Image.fromarray(_gradient(0, 255, np.uint8)))
        return image
    if mode == "P-transparency":
        image = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        image.info["transparency"] = 3
        return image
    if mode == "RGB-transparency":
        rgb.info["transparency"] = tuple(int(v) for v in np.asarray(rgb)[0, 0])
        return rgb
    return rgb.convert(mode)


MODES = ["I;16", "I", "F", "LA", "RGBA", "P-transparency", "RGB-transparency", "CMYK", "1", "L", "P", "RGB"]


@pytest.fixture(scope="module")
def processor(tiny_clip_dir):
    return LinCIRProcessor.from_pretrained(tiny_clip_dir)


@pytest.mark.parametrize("mode", MODES)
def test_processor_and_cli_decoding_give_the_same_pixels(processor, mode, tmp_path):
    image = _image(mode)
    through_processor = processor(images=image)["pixel_values"]
    # The CLI, the index and the app decode with `load_image`, then hand RGB images to the same image processor.
    through_cli = processor.image_processor(images=[load_image(image)], return_tensors="pt")["pixel_values"]
    assert torch.equal(through_processor, through_cli), (through_processor - through_cli).abs().max()
    if mode in ("I;16", "LA", "RGBA", "L", "1", "P", "RGB", "CMYK", "F"):  # modes PIL writes as they are
        path = tmp_path / ("image.tif" if mode in ("CMYK", "F") else "image.png")
        image.save(path)
        assert torch.equal(processor(images=path)["pixel_values"], through_processor)
        from_file = processor.image_processor(images=[load_image(path)], return_tensors="pt")["pixel_values"]
        assert torch.equal(from_file, through_processor)


def test_sixteen_bit_images_are_scaled_from_their_range():
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    rgb = np.asarray(load_image(Image.fromarray(values)))
    assert rgb[0, :, 0].tolist() == [0, 1, 128, 255]
    assert (rgb == rgb[..., :1]).all()  # gray stays gray


def test_pipeline_and_cli_decoding_give_the_same_pixels(tmp_path, tiny_clip_dir):
    from hf_cir.pipelines.compodiff import CompoDiffPipeline
    from hf_cir.toy.checkpoints import toy_checkpoint

    pipe = CompoDiffPipeline.from_pretrained(toy_checkpoint("compodiff"))
    image = _image("I;16")
    pixel_values, _ = pipe._preprocess_images(image)
    cli = pipe.image_processor(images=[load_image(image)], return_tensors="pt")["pixel_values"]
    assert torch.equal(pixel_values, cli)
    assert torch.equal(pipe.encode_image(image), pipe.encode_image([load_image(image)]))


@pytest.mark.parametrize(
    "make",
    [
        lambda: Image.new("L", (20000, 1)),
        lambda: Image.new("RGB", (3, 3 * (MAX_ASPECT_RATIO + 1))),
        lambda: np.zeros((1, 20000, 3), dtype=np.uint8),
        lambda: torch.zeros(3, 1, 20000),
    ],
    ids=["pil-20000x1", "pil-tall", "array", "tensor"],
)
def test_absurd_aspect_ratio_is_refused_before_the_resize(processor, make):
    # CLIP's image processor resizes the *short* side first: at 224 pixels a 20000x1 image would take gigabytes.
    with pytest.raises(ValueError, match=r"`images\[0\]` is \d+x\d+ pixels: its aspect ratio \d+:1 exceeds 50:1"):
        processor(images=make())


def test_absurd_aspect_ratio_is_refused_for_files_pipelines_and_the_cli(tmp_path):
    from hf_cir.pipelines.compodiff import CompoDiffPipeline
    from hf_cir.toy.checkpoints import toy_checkpoint

    path = tmp_path / "strip.png"
    Image.new("L", (20000, 1)).save(path)
    with pytest.raises(ValueError, match="strip.png.*aspect ratio 20000:1 exceeds 50:1"):
        load_image(path, name="images[0]")
    pipe = CompoDiffPipeline.from_pretrained(toy_checkpoint("compodiff"))
    with pytest.raises(ValueError, match="aspect ratio 20000:1"):
        pipe.encode_image(str(path))
    with pytest.raises(ValueError, match="aspect ratio 20000:1"):
        pipe("make it blue", image=Image.open(path), num_inference_steps=2)


def test_ordinary_shapes_pass():
    for width, height in [(1, 1), (MAX_ASPECT_RATIO, 1), (4000, 3000), (1, MAX_ASPECT_RATIO)]:
        check_image_size(width, height)
    with pytest.raises(ValueError, match="empty"):
        check_image_size(0, 5)
