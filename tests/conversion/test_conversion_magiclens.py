"""Reading and converting a MagicLens release: bytes-only unpickling, msgpack arrays, sizes from the parameters,
the converted folder (card, tokenizer, image processor) and `hf-cir convert magiclens`."""

import gzip
import json
import pickle

import msgpack
import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard

from hf_cir.cli import main
from hf_cir.conversion.magiclens import (
    convert_magiclens_checkpoint,
    load_magiclens_params,
    magiclens_config_from_params,
)
from hf_cir.models.magiclens import MagicLensProcessor


@pytest.fixture(scope="module")
def tiny(reference_dir):
    folder = reference_dir / "magiclens"
    return folder / "magic_lens_tiny.pkl.gz", json.loads((folder / "cases.json").read_text())


class WouldRunCode:
    """Unpickling this with the standard `pickle.load` would create `path` (the payload of a crafted checkpoint)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        import pathlib

        return pathlib.Path.touch, (pathlib.Path(self.path),)


def write_pickle(path, value, compress=False):
    data = pickle.dumps(value, protocol=4)
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def flax_bytes(tree) -> bytes:
    def pack(value):
        if isinstance(value, np.ndarray):
            return msgpack.ExtType(1, msgpack.packb((value.shape, value.dtype.name, value.tobytes())))
        return value

    return msgpack.packb(tree, default=pack)


def test_reads_the_release_format_with_every_shape(tiny):
    checkpoint, document = tiny
    params = load_magiclens_params(checkpoint)
    assert {key: list(value.shape) for key, value in params.items()} == {
        key.removeprefix("params/"): shape for key, shape in document["parameter_shapes"].items()
    }
    assert all(value.dtype == np.float32 for value in params.values())


@pytest.mark.parametrize("compress", [False, True])
def test_a_crafted_pickle_runs_nothing_and_is_refused_in_one_line(tmp_path, compress):
    sentinel = tmp_path / "executed"
    crafted = write_pickle(tmp_path / "crafted.pkl", WouldRunCode(sentinel), compress)
    with pytest.raises(ValueError) as error:
        load_magiclens_params(crafted)
    message = str(error.value)
    assert "\n" not in message and str(crafted) in message and "pathlib" in message and "refused" in message
    assert not sentinel.exists()
    # the same object nested inside an otherwise valid-looking payload
    nested = write_pickle(tmp_path / "nested.pkl", [b"\x80", WouldRunCode(sentinel)], compress)
    with pytest.raises(ValueError, match="refused"):
        load_magiclens_params(nested)
    assert not sentinel.exists()
    pickle.loads(pickle.dumps(WouldRunCode(sentinel)))  # the payload is live: the standard unpickler runs it
    assert sentinel.exists()


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ([b"a", b"b"], "holds a list, not the one bytes object"),
        ({"params": {"w": [1.0, 2.0]}}, "holds a dict, not the one bytes object"),
        ("text", "holds a str"),
        (b"not msgpack \xc1", "not flax msgpack parameters"),
        (msgpack.packb({"opt_state": {}}), "holds no flax `params` tree"),
        (msgpack.packb({"params": {"w": msgpack.ExtType(7, b"xx")}}), "extension type 7"),
        (flax_bytes({"params": {"w": np.zeros(2, dtype=np.complex64)}}), "complex64"),
    ],
)
def test_anything_else_is_refused_in_one_line(tmp_path, value, match):
    path = write_pickle(tmp_path / "checkpoint.pkl", value)
    with pytest.raises(ValueError, match=match) as error:
        load_magiclens_params(path)
    assert "\n" not in str(error.value) and str(path) in str(error.value)


def test_not_a_pickle_and_missing_file(tmp_path):
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"PK\x03\x04 this is a zip, not a pickle")
    with pytest.raises(ValueError, match="is not a MagicLens release"):
        load_magiclens_params(garbage)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_magiclens_params(tmp_path / "missing.pkl")


def test_chunked_and_bfloat16_arrays(tmp_path):
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    bf16 = (values.view(np.uint32) >> 16).astype(np.uint16)
    chunked = {
        "__msgpack_chunked_array__": True,
        "shape": {"0": 2, "1": 3},
        "chunks": {"0": values.ravel()[:4], "1": values.ravel()[4:]},
    }
    tree = {"params": {"a": chunked, "b": msgpack.ExtType(1, msgpack.packb(((2, 3), "bfloat16", bf16.tobytes())))}}
    path = write_pickle(tmp_path / "checkpoint.pkl", flax_bytes(tree))
    params = load_magiclens_params(path)
    assert np.array_equal(params["a"], values) and np.array_equal(params["b"], values)


def test_sizes_come_from_the_parameters(tiny):
    checkpoint, document = tiny
    config = magiclens_config_from_params(load_magiclens_params(checkpoint))
    clip, fusion = document["tiny_clip"], document["tiny_fusion"]
    assert config.projection_dim == clip["embed_dim"] == fusion["embed_dim"]
    assert config.vision_config.hidden_size == clip["vision_features"]
    assert config.vision_config.num_hidden_layers == clip["vision_num_layers"]
    assert config.vision_config.num_attention_heads == clip["vision_features"] // document["vision_head_dim"]
    assert config.vision_config.patch_size == clip["vision_patch_size"]
    assert config.vision_config.image_size == document["image_resolution"]
    assert config.text_config.hidden_size == clip["text_features"]
    assert config.text_config.num_attention_heads == clip["text_num_heads"]
    assert config.text_config.vocab_size == clip["vocab_size"]
    assert config.fusion_num_hidden_layers == fusion["num_layers"]
    assert config.fusion_num_attention_heads == fusion["num_heads"]
    assert config.fusion_intermediate_size == fusion["ff_hidden_size"]
    # the pooler's head size is 4 x width / heads, not width / heads
    assert config.pooler_head_dim == 4 * fusion["embed_dim"] // fusion["num_heads"]


def test_a_checkpoint_missing_a_parameter_is_named(tiny, reference_dir, tmp_path):
    checkpoint, _ = tiny
    tree = pickle.loads(gzip.decompress(checkpoint.read_bytes()))
    decoded = msgpack.unpackb(tree, raw=False)
    del decoded["params"]["contrastive_multimodal_pooler"]["pool_attn_ln"]
    broken = write_pickle(tmp_path / "broken.pkl", msgpack.packb(decoded))
    with pytest.raises(ValueError, match="lacks the MagicLens parameter 'contrastive_multimodal_pooler/pool_attn_ln"):
        convert_magiclens_checkpoint(broken, tmp_path / "out", tokenizer=reference_dir / "clip")
    assert not (tmp_path / "out").exists()


def test_converted_folder_holds_card_tokenizer_and_processor(tiny, reference_dir, tmp_path):
    checkpoint, _ = tiny
    output = tmp_path / "converted"
    convert_magiclens_checkpoint(checkpoint, output, tokenizer=reference_dir / "clip")
    card = ModelCard.load(output / "README.md")
    assert card.data.license == "cc-by-4.0" and "magiclens" in card.data.tags
    assert "Apache-2.0" in card.text and "zhang2024magiclens" in card.text and "magic_lens_tiny.pkl.gz" in card.text
    assert str(tmp_path) not in card.content
    assert (output / "tokenizer.json").is_file()
    processor_config = json.loads((output / "processor_config.json").read_text())
    assert processor_config["image_processor"]["size"] == 32  # the resolution read from the checkpoint
    config = json.loads((output / "config.json").read_text())
    assert config["model_type"] == "magiclens" and config["text_config"]["eos_token_id"] == 49407
    with pytest.raises(FileExistsError, match="already exists"):
        convert_magiclens_checkpoint(checkpoint, output, tokenizer=reference_dir / "clip")


def test_image_protocol_is_chosen_at_conversion(tiny, reference_dir, tmp_path, capsys):
    checkpoint, _ = tiny
    args = ["convert", "magiclens", "--checkpoint", str(checkpoint), "--tokenizer", str(reference_dir / "clip")]
    assert main([*args, "--image-protocol", "evaluation", "--output-dir", str(tmp_path / "eval")]) == 0
    capsys.readouterr()
    saved = json.loads((tmp_path / "eval" / "processor_config.json").read_text())["image_processor"]
    assert saved["protocol"] == "evaluation"
    assert MagicLensProcessor.from_pretrained(tmp_path / "eval").image_processor.protocol == "evaluation"
    default = tmp_path / "default"
    convert_magiclens_checkpoint(checkpoint, default, tokenizer=reference_dir / "clip")
    assert json.loads((default / "processor_config.json").read_text())["image_processor"]["protocol"] == "model"
    capsys.readouterr()  # the direct call's progress bars

    code = main([*args, "--image-protocol", "paper", "--output-dir", str(tmp_path / "never")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "image_protocol" in err and "'paper'" in err, err
    assert not (tmp_path / "never").exists()


def test_cli_converts_and_refuses_a_crafted_pickle(tiny, reference_dir, tmp_path, capsys):
    checkpoint, _ = tiny
    output = tmp_path / "cli"
    args = ["convert", "magiclens", "--checkpoint", str(checkpoint), "--tokenizer", str(reference_dir / "clip")]
    assert main([*args, "--output-dir", str(output)]) == 0
    assert "Wrote MagicLens" in capsys.readouterr().out
    assert main([*args, "--output-dir", str(output)]) == 2
    assert "--output-dir" in capsys.readouterr().err
    assert main([*args, "--output-dir", str(output), "--overwrite"]) == 0
    capsys.readouterr()

    sentinel = tmp_path / "executed"
    crafted = write_pickle(tmp_path / "magic_lens_clip_large.pkl", WouldRunCode(sentinel))
    code = main(["convert", "magiclens", "--checkpoint", str(crafted), "--output-dir", str(tmp_path / "never")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "refused" in err, err
    assert not sentinel.exists() and not (tmp_path / "never").exists()


def released_shapes(embed, vision_width, vision_layers, patch, image_size, text_width, text_heads, fusion_heads):
    """The parameter shapes of a MagicLens release (the reference's `MagicLens(model_size)` with scenic's CLIP)."""
    shapes = {
        "clip/logit_scale": (),
        "clip/visual/conv1/kernel": (patch, patch, 3, vision_width),
        "clip/visual/class_embedding": (vision_width,),
        "clip/visual/positional_embedding": ((image_size // patch) ** 2 + 1, vision_width),
        "clip/visual/proj/kernel": (vision_width, embed),
        "clip/text/token_embedding/embedding": (49408, text_width),
        "clip/text/positional_embedding": (77, text_width),
        "clip/text/text_projection/kernel": (text_width, embed),
    }
    for tower, width, layers, heads in (
        ("visual", vision_width, vision_layers, vision_width // 64),
        ("text", text_width, 12, text_heads),
    ):
        for norm in ("ln_pre", "ln_post") if tower == "visual" else ("ln_final",):
            shapes.update({f"clip/{tower}/{norm}/scale": (width,), f"clip/{tower}/{norm}/bias": (width,)})
        for i in range(layers):
            block = f"clip/{tower}/transformer/resblocks_{i}"
            for name in ("query", "key", "value"):
                shapes[f"{block}/attn/{name}/kernel"] = (width, heads, width // heads)
                shapes[f"{block}/attn/{name}/bias"] = (heads, width // heads)
            shapes.update(
                {f"{block}/attn/out/kernel": (heads, width // heads, width), f"{block}/attn/out/bias": (width,)}
            )
            for norm in ("ln_1", "ln_2"):
                shapes.update({f"{block}/{norm}/scale": (width,), f"{block}/{norm}/bias": (width,)})
            shapes.update({f"{block}/mlp/c_fc/kernel": (width, 4 * width), f"{block}/mlp/c_fc/bias": (4 * width,)})
            shapes.update({f"{block}/mlp/c_proj/kernel": (4 * width, width), f"{block}/mlp/c_proj/bias": (width,)})
    for i in range(4):
        layer = f"multimodal_encoder/x_layers_{i}"
        for norm in (f"{layer}/layer_norm", f"{layer}/ff_layer/layer_norm"):
            shapes.update({f"{norm}/scale": (embed,), f"{norm}/bias": (embed,)})
        for name in ("query", "key", "value", "post"):
            shapes[f"{layer}/self_attention/{name}/w"] = (embed, fusion_heads, embed // fusion_heads)
            shapes[f"{layer}/self_attention/{name}/b"] = (
                (embed,) if name == "post" else (fusion_heads, embed // fusion_heads)
            )
        shapes.update({f"{layer}/ff_layer/ffn_layer1/linear/w": (embed, 4 * embed)})
        shapes.update({f"{layer}/ff_layer/ffn_layer1/bias/b": (4 * embed,)})
        shapes.update({f"{layer}/ff_layer/ffn_layer2/linear/w": (4 * embed, embed)})
        shapes.update({f"{layer}/ff_layer/ffn_layer2/bias/b": (embed,)})
    pool, head = "contrastive_multimodal_pooler", 4 * embed // fusion_heads
    for name in ("query", "key", "value", "post"):
        shapes[f"{pool}/pool_attn/{name}/w"] = (embed, fusion_heads, head)
        shapes[f"{pool}/pool_attn/{name}/b"] = (embed,) if name == "post" else (fusion_heads, head)
    shapes.update({f"{pool}/pool_attn/per_dim_scale/per_dim_scale": (head,), f"{pool}/pooling_attn_query": (1, embed)})
    shapes.update({f"{pool}/pool_attn_ln/scale": (embed,), f"{pool}/pool_attn_ln/bias": (embed,)})
    return shapes


@pytest.mark.slow
@pytest.mark.parametrize(
    "size",
    [
        dict(
            embed=512,
            vision_width=768,
            vision_layers=12,
            patch=16,
            image_size=224,
            text_width=512,
            text_heads=8,
            fusion_heads=8,
        ),  # magic_lens_clip_base.pkl: CLIP ViT-B/16
        dict(
            embed=768,
            vision_width=1024,
            vision_layers=24,
            patch=14,
            image_size=224,
            text_width=768,
            text_heads=12,
            fusion_heads=16,
        ),  # magic_lens_clip_large.pkl: CLIP ViT-L/14
    ],
    ids=["base", "large"],
)
def test_released_sizes_convert(size, reference_dir, tmp_path):
    # Random weights in the released shapes (float16 to keep the file small): every size is read from them.
    rng = np.random.default_rng(0)
    tree: dict = {}
    for key, shape in released_shapes(**size).items():
        node = tree
        for part in key.split("/")[:-1]:
            node = node.setdefault(part, {})
        node[key.split("/")[-1]] = np.asarray(rng.standard_normal(shape) * 0.02, dtype=np.float16)
    checkpoint = write_pickle(tmp_path / "release.pkl", flax_bytes({"params": tree}))
    del tree
    model = convert_magiclens_checkpoint(checkpoint, tmp_path / "converted", tokenizer=reference_dir / "clip")
    config = model.config
    assert (config.projection_dim, config.fusion_num_attention_heads) == (size["embed"], size["fusion_heads"])
    assert config.pooler_head_dim == 4 * size["embed"] // size["fusion_heads"]
    assert config.vision_config.num_attention_heads == size["vision_width"] // 64
    assert config.vision_config.image_size == size["image_size"]
    assert config.text_config.num_attention_heads == size["text_heads"]
    pixels = torch.zeros(1, 3, size["image_size"], size["image_size"])
    with torch.no_grad():
        assert model(pixel_values=pixels).composed_embeds.shape == (1, size["embed"])
