"""MagicLens against the reference JAX code: a converted tiny release reproduces the recorded outputs.

The fixtures (`tests/fixtures/reference/magiclens/`, made by its `make_fixtures.py` from google-deepmind/magiclens and
google-research/scenic at named commits) hold a tiny checkpoint in the released format, six images (square, tall and
smaller than the resolution, wide, exact, large, dark) and, per case, the reference's token ids, preprocessed pixels,
CLIP embeddings, `multimodal_embed` and `multimodal_embed_norm`, under both image protocols (the model's own and the
evaluation script's).
"""

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoProcessor

from hf_cir.conversion.magiclens import convert_magiclens_checkpoint
from hf_cir.models.magiclens import MagicLensImageProcessor, MagicLensModel, MagicLensProcessor

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def fixtures(reference_dir):
    # HF_CIR_MAGICLENS_REFERENCE: a fresh set from `make_fixtures.py --seed N --output-dir DIR` (the reference run now)
    folder = Path(os.environ.get("HF_CIR_MAGICLENS_REFERENCE", reference_dir / "magiclens"))
    return folder, json.loads((folder / "cases.json").read_text()), load_file(folder / "expected.safetensors")


@pytest.fixture(scope="module")
def converted(fixtures, reference_dir, tmp_path_factory):
    folder, _, _ = fixtures
    output = tmp_path_factory.mktemp("magiclens") / "tiny"
    convert_magiclens_checkpoint(folder / "magic_lens_tiny.pkl.gz", output, tokenizer=reference_dir / "clip")
    return output


def processor_for(converted, protocol):
    processor = MagicLensProcessor.from_pretrained(converted)
    size = processor.image_processor.size
    return MagicLensProcessor(MagicLensImageProcessor(size=size, protocol=protocol), processor.tokenizer)


def max_diff(actual, expected):
    return (actual.float() - expected).abs().max().item()


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_converted_model_matches_reference(fixtures, converted, attn_implementation):
    folder, document, expected = fixtures
    model = MagicLensModel.from_pretrained(converted, attn_implementation=attn_implementation).eval()
    assert model.text_model.config._attn_implementation == attn_implementation
    assert model.vision_model.config._attn_implementation == attn_implementation
    processors = {protocol: processor_for(converted, protocol) for protocol in ("model", "evaluation")}
    assert {case["protocol"] for case in document["cases"]} == set(processors)
    for case in document["cases"]:
        name, texts = case["name"], case["texts"]
        inputs = processors[case["protocol"]](images=[folder / case["image_file"]] * len(texts), text=texts)
        assert torch.equal(inputs["input_ids"], expected[f"{name}.input_ids"]), name
        assert max_diff(inputs["pixel_values"][:1], expected[f"{name}.pixel_values"]) <= TOLERANCE, name
        with torch.no_grad():
            output = model(**inputs)
            from_stored_pixels = model(
                pixel_values=expected[f"{name}.pixel_values"].expand(len(texts), -1, -1, -1),
                input_ids=expected[f"{name}.input_ids"],
            )
        for actual, key in (
            (output.image_embeds, "image_embeds"),
            (output.text_embeds, "text_embeds"),
            (output.composed_embeds, "multimodal_embed"),
            (output.normalized_composed_embeds, "multimodal_embed_norm"),
            (from_stored_pixels.composed_embeds, "multimodal_embed"),
            (from_stored_pixels.normalized_composed_embeds, "multimodal_embed_norm"),
        ):
            assert max_diff(actual, expected[f"{name}.{key}"]) <= TOLERANCE, (name, key, attn_implementation)


def test_cases_cover_what_the_reference_must_show(fixtures):
    _, document, expected = fixtures
    cases = document["cases"]
    texts = {text for case in cases for text in case["texts"]}
    assert "" in texts and any("!" in text for text in texts)
    long_rows = [ids for case in cases for ids in case["input_ids"] if ids[-1] != 0]
    assert long_rows and all(row[-1] == 49407 for row in long_rows)  # truncated, end of text kept
    # a "!" inside a text is id 0 between real tokens: masked like padding by the reference
    assert any(0 in row[: row.index(49407)] for case in cases for row in case["input_ids"])
    sizes = {tuple(case["image_size_wh"]) for case in cases}
    assert any(w > h for w, h in sizes) and any(w < h for w, h in sizes) and any(w == h for w, h in sizes)
    assert any(min(size) < document["image_resolution"] for size in sizes)
    assert {case["image_mode"] for case in cases} >= {"RGB", "L", "P"}
    assert all(expected[f"{case['name']}.multimodal_embed"].shape[-1] == 16 for case in cases)


def test_gallery_embedding_is_the_empty_text_path(fixtures, converted):
    folder, document, expected = fixtures
    model = MagicLensModel.from_pretrained(converted).eval()
    case = next(case for case in document["cases"] if case["protocol"] == "model" and "" in case["texts"])
    row = case["texts"].index("")
    pixels = expected[f"{case['name']}.pixel_values"]
    with torch.no_grad():
        gallery = model.get_image_features(pixels).pooler_output
        no_text = model(pixel_values=pixels).normalized_composed_embeds
    assert max_diff(gallery, expected[f"{case['name']}.multimodal_embed"][row : row + 1]) <= TOLERANCE
    assert max_diff(no_text, expected[f"{case['name']}.multimodal_embed_norm"][row : row + 1]) <= TOLERANCE


def test_the_reference_mask_hides_a_bang_inside_a_text(fixtures, converted):
    _, document, expected = fixtures
    model = MagicLensModel.from_pretrained(converted).eval()
    case, row = next(
        (case, i)
        for case in document["cases"]
        for i, ids in enumerate(case["input_ids"])
        if 0 in ids[: ids.index(49407)]
    )
    ids = expected[f"{case['name']}.input_ids"][row : row + 1]
    pixels = expected[f"{case['name']}.pixel_values"]
    tokenizer_mask = torch.zeros_like(ids)
    tokenizer_mask[0, : ids[0].tolist().index(49407) + 1] = 1  # what a plain tokenizer's mask would be
    with torch.no_grad():
        reference_mask = model(pixel_values=pixels, input_ids=ids).composed_embeds
        plain_mask = model(pixel_values=pixels, input_ids=ids, attention_mask=tokenizer_mask).composed_embeds
    assert max_diff(reference_mask, expected[f"{case['name']}.multimodal_embed"][row : row + 1]) <= TOLERANCE
    assert max_diff(plain_mask, expected[f"{case['name']}.multimodal_embed"][row : row + 1]) > 1e-3


def test_logit_cap_and_one_plus_scale_norms_are_what_the_fixtures_test(fixtures, converted):
    # Each reference detail moves the output far beyond the tolerance, so the parity test would catch its loss.
    _, document, expected = fixtures
    case = document["cases"][0]
    inputs = {
        "pixel_values": expected[f"{case['name']}.pixel_values"].expand(len(case["texts"]), -1, -1, -1),
        "input_ids": expected[f"{case['name']}.input_ids"],
    }
    target = expected[f"{case['name']}.multimodal_embed"]
    uncapped = MagicLensModel.from_pretrained(converted, attention_logit_cap=1e9).eval()
    shifted = MagicLensModel.from_pretrained(converted).eval()
    with torch.no_grad():
        for layer in shifted.fusion.layers:
            layer.layer_norm.weight -= 1.0  # as if `scale` were used without the reference's `1 + scale`
        assert max_diff(uncapped(**inputs).composed_embeds, target) > 1e-3
        assert max_diff(shifted(**inputs).composed_embeds, target) > 1e-3


def test_auto_classes_and_round_trip(fixtures, converted, tmp_path):
    _, document, expected = fixtures
    model = AutoModel.from_pretrained(converted)
    processor = AutoProcessor.from_pretrained(converted)
    assert type(model) is MagicLensModel and type(processor) is MagicLensProcessor
    assert type(processor.image_processor) is MagicLensImageProcessor
    assert processor.image_processor.size == model.config.vision_config.image_size == document["image_resolution"]
    assert (converted / "model.safetensors").is_file() and not list(converted.glob("*.bin"))
    model.save_pretrained(tmp_path / "again")
    processor.save_pretrained(tmp_path / "again")
    reloaded = MagicLensModel.from_pretrained(tmp_path / "again").eval()
    case = document["cases"][1]
    inputs = {
        "pixel_values": expected[f"{case['name']}.pixel_values"].expand(len(case["texts"]), -1, -1, -1),
        "input_ids": expected[f"{case['name']}.input_ids"],
    }
    with torch.no_grad():
        assert torch.equal(model.eval()(**inputs).composed_embeds, reloaded(**inputs).composed_embeds)
    again = MagicLensProcessor.from_pretrained(tmp_path / "again")
    assert again.image_processor.to_dict() == processor.image_processor.to_dict()


REMOTE_CODE_SCRIPT = """
import json, sys, torch
{block}
from transformers import AutoModel, AutoProcessor
folder, image, output = sys.argv[1:4]
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
with torch.no_grad():
    embeds = model(**processor(images=[image, image], text=["", "find a dog but it is wet"])).composed_embeds
json.dump({{"model": type(model).__module__, "processor": type(processor).__module__, "embeds": embeds.tolist()}},
          open(output, "w"))
"""


def test_folder_loads_with_remote_code_and_no_hf_cir(fixtures, converted, tmp_path):
    import subprocess
    import sys

    from remote_code_helpers import BLOCK_HF_CIR

    folder, document, expected = fixtures
    assert (converted / "modeling_magiclens.py").is_file() and (converted / "processing_magiclens.py").is_file()
    script, output = tmp_path / "load.py", tmp_path / "out.json"
    script.write_text(REMOTE_CODE_SCRIPT.format(block=BLOCK_HF_CIR))
    case = next(case for case in document["cases"] if case["name"] == "m00")
    subprocess.run(
        [sys.executable, str(script), str(converted), str(folder / case["image_file"]), str(output)],
        check=True,
        timeout=300,
    )
    result = json.loads(output.read_text())
    assert not result["model"].startswith("hf_cir") and not result["processor"].startswith("hf_cir")
    reference = expected["m00.multimodal_embed"][:2]  # m00's first two texts: "" and the plain query
    assert case["texts"][:2] == ["", "find a dog but it is wet"]
    assert max_diff(torch.tensor(result["embeds"]), reference) <= TOLERANCE


def test_import_hf_cir_registers_magiclens_with_the_auto_classes(converted, tmp_path):
    import subprocess
    import sys

    script = (
        "import sys, hf_cir\n"
        "from transformers import AutoModel, AutoProcessor\n"
        "model, processor = AutoModel.from_pretrained(sys.argv[1]), AutoProcessor.from_pretrained(sys.argv[1])\n"
        "print(type(model).__module__, type(processor).__module__)\n"
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script, str(converted)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "hf_cir.models.magiclens.modeling_magiclens",
        "hf_cir.models.magiclens.processing_magiclens",
    ]
