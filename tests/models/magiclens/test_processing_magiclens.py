"""MagicLensProcessor: the reference tokenizer's conventions and both image protocols."""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer

from hf_cir.models.magiclens import MagicLensImageProcessor, MagicLensProcessor, clean_text
from hf_cir.models.magiclens.processing_magiclens import largest_square_crop, resize_bilinear_antialiased


@pytest.fixture(scope="module")
def processor(tiny_clip_dir):
    return MagicLensProcessor(MagicLensImageProcessor(size=32), AutoTokenizer.from_pretrained(tiny_clip_dir))


def test_texts_pad_with_zero_and_mask_ids_above_zero(processor):
    inputs = processor(text=["", "no!; make it red!"])
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    assert ids.shape == (2, 77) and ids.dtype == torch.long
    assert ids[0, :3].tolist() == [49406, 49407, 0] and mask[0].sum() == 2
    # "no!;" -> no, "!" (id 0: hidden like padding), ";"; the final "!" is "!</w>" (256), kept
    assert ids[1, :9].tolist() == [49406, 871, 0, 282, 1078, 585, 736, 256, 49407]
    assert mask[1, :10].tolist() == [1, 1, 0, 1, 1, 1, 1, 1, 1, 0]
    assert torch.equal(mask, (ids > 0).long())


def test_long_text_keeps_end_of_text(processor):
    ids = processor(text=" ".join(["word"] * 100))["input_ids"][0]
    assert ids.shape == (77,) and ids[-1] == 49407 and (ids > 0).all()


def test_text_cleaning_is_the_reference_s():
    assert clean_text("  a &amp;amp; b\n\t c ") == "a & b c"
    assert clean_text("caf\u00c3\u00a9") == "caf\u00e9"  # ftfy repairs mojibake (installed with the magiclens extra)


def test_model_protocol_crops_the_centre_square():
    wide = np.zeros((40, 96, 3), dtype=np.uint8)
    wide[:, 28:68] = 255  # the centred 40 x 40 square is white, the sides black
    pixels = MagicLensImageProcessor(size=32, image_mean=[0, 0, 0], image_std=[1, 1, 1])(wide)["pixel_values"]
    assert pixels.shape == (1, 3, 32, 32) and torch.allclose(pixels, torch.ones_like(pixels))


def test_evaluation_protocol_divides_by_the_image_maximum_and_squashes():
    dark = np.full((40, 96, 3), 100, dtype=np.uint8)
    dark[:, :28] = 50
    processor = MagicLensImageProcessor(size=32, protocol="evaluation", image_mean=[0, 0, 0], image_std=[1, 1, 1])
    pixels = processor(Image.fromarray(dark))["pixel_values"]
    assert pixels.max().item() == pytest.approx(1.0, abs=1e-6)  # 100 / max, not 100 / 255
    assert pixels[0, 0, :, 0].max() < 0.6  # the dark left side survives: squashed, not cropped


def test_resize_matches_the_reference_kernel_on_a_known_case():
    # Downsampling 4 -> 2 with the antialiased triangle kernel (width 2): output i covers inputs 2i-1 .. 2i+2.
    row = np.array([0.0, 1.0, 2.0, 3.0], dtype=np.float32)
    image = np.repeat(row[None, :, None], 1, axis=0)
    out = resize_bilinear_antialiased(image, 1, 2)[0, :, 0]
    expected = [(0.75 * 0 + 0.75 * 1 + 0.25 * 2) / 1.75, (0.25 * 1 + 0.75 * 2 + 0.75 * 3) / 1.75]
    assert np.allclose(out, expected, atol=1e-6)
    assert largest_square_crop(np.zeros((5, 9, 3))).shape == (5, 5, 3)


def test_processor_round_trip_keeps_the_protocol(processor, tmp_path):
    evaluation = MagicLensProcessor(MagicLensImageProcessor(size=32, protocol="evaluation"), processor.tokenizer)
    evaluation.save_pretrained(tmp_path)
    loaded = MagicLensProcessor.from_pretrained(tmp_path)
    assert loaded.image_processor.protocol == "evaluation" and loaded.image_processor.size == 32


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda p: p(), ValueError, "needs `images`, `text` or both"),
        (lambda p: p(images=[Image.new("RGB", (8, 8))] * 2, text=["a"]), ValueError, "2 images and 1 texts"),
        (lambda p: p(text=3), TypeError, "`text` must be a string"),
        (lambda p: p(images=np.zeros((4, 4, 5))), ValueError, r"images\[0\] must be"),
        (lambda p: MagicLensImageProcessor(protocol="paper"), ValueError, "`protocol` must be one of"),
    ],
)
def test_bad_input_is_one_clear_error(processor, call, error, match):
    with pytest.raises(error, match=match):
        call(processor)
