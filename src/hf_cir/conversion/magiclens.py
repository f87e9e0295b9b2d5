# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""Convert a released google-deepmind/magiclens checkpoint (`magic_lens_clip_base.pkl`, `magic_lens_clip_large.pkl`)
into a MagicLens folder (safetensors weights, config, tokenizer, image processor, model card).

The release is a pickle holding one bytes object: flax `serialization.to_bytes` of `{"params": ...}`, i.e. msgpack
whose arrays are extension type 1 (`(shape, dtype name, raw bytes)`). It is read without ever unpickling an object:
[`load_magiclens_params`] uses an unpickler that resolves no global at all and accepts exactly one bytes object, then
decodes the msgpack (the optional dependency `msgpack`, `pip install "hf-cir[magiclens]"`). Every size (CLIP widths,
layers, heads, patch, resolution, fusion and pooler shapes) is read from the parameters' shapes, never from a size name.

Flax layouts: a dense kernel is `(in, out)` (a torch `Linear` weight is its transpose), a multi-head projection kernel
is `(in, heads, head_dim)` (output projection: `(heads, head_dim, out)` for scenic's CLIP, `(out, heads, head_dim)` for
MagicLens's own attention), a convolution kernel is `(height, width, in, out)`. MagicLens's own layer norms compute
`x * (1 + scale) + bias`, so their torch weight is `1 + scale`. scenic's `logit_scale` is not used by MagicLens and is
dropped.

Usage:

```bash
hf-cir convert magiclens --checkpoint magic_lens_clip_large.pkl --output-dir magiclens-large
```
"""

from __future__ import annotations

import gzip
import io
import math
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from ..models.magiclens import MagicLensConfig, MagicLensImageProcessor, MagicLensModel, MagicLensProcessor
from ..models.magiclens.processing_magiclens import PROTOCOLS as IMAGE_PROTOCOLS

# msgpack extension types of flax.serialization
_EXT_NDARRAY = 1
_EXT_NPSCALAR = 3
_DTYPES = {"float32", "float16", "float64", "bfloat16", "int32", "int64", "int8", "uint8", "bool"}
_CHUNKED = "__msgpack_chunked_array__"

__all__ = [
    "build_magiclens_model",
    "convert_magiclens_checkpoint",
    "convert_magiclens_params",
    "load_magiclens_params",
    "magiclens_config_from_params",
]


# -- reading the release without unpickling objects ---------------------------------------------------------------------


class _Refused(pickle.UnpicklingError):
    """The pickle asks for something a MagicLens release never holds."""


class _BytesOnlyUnpickler(pickle.Unpickler):
    """An unpickler that can build nothing but the built-in values pickle encodes without a global (bytes, str,
    numbers, lists, dicts): every global (class, function) and every persistent id is refused before it is looked up."""

    def find_class(self, module: str, name: str):
        raise _Refused(f"it refers to the global {module}.{name}")

    def persistent_load(self, pid):
        raise _Refused("it holds a persistent id")


def _read_payload(path: Path) -> bytes:
    """The one bytes object of a MagicLens release pickle (gzipped or not)."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as error:
            raise ValueError(f"`checkpoint` {path} is a broken gzip file ({error}).") from None
    try:
        payload = _BytesOnlyUnpickler(io.BytesIO(raw)).load()
    except _Refused as error:
        raise ValueError(
            f"`checkpoint` {path} was refused: {error}; a MagicLens release is a pickle of one bytes object and nothing "
            "in it is ever executed."
        ) from None
    except Exception as error:  # truncated or not a pickle at all
        raise ValueError(
            f"`checkpoint` {path} is not a MagicLens release (a pickle of flax msgpack bytes): {error}."
        ) from None
    if not isinstance(payload, (bytes, bytearray)):
        raise ValueError(
            f"`checkpoint` {path} holds a {type(payload).__name__}, not the one bytes object of a MagicLens release."
        )
    return bytes(payload)


def _array_from_ext(data: bytes) -> np.ndarray:
    import msgpack

    shape, dtype_name, buffer = msgpack.unpackb(data, raw=True)
    dtype_name = dtype_name.decode() if isinstance(dtype_name, bytes) else str(dtype_name)
    if dtype_name not in _DTYPES:
        raise ValueError(f"an array has dtype {dtype_name!r}, not one of {sorted(_DTYPES)}")
    if dtype_name == "bfloat16":  # numpy has no bfloat16: widen the bits to float32
        array = (np.frombuffer(buffer, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
    else:
        array = np.frombuffer(buffer, dtype=np.dtype(dtype_name))
    if array.size != math.prod(shape):
        raise ValueError(f"an array of shape {tuple(shape)} holds {array.size} values")
    return array.reshape(shape)


def _ext_hook(code: int, data: bytes):
    if code == _EXT_NDARRAY:
        return _array_from_ext(data)
    if code == _EXT_NPSCALAR:
        return _array_from_ext(data)[()]
    raise ValueError(f"msgpack extension type {code} is not a flax array")


def _flatten(tree, prefix: str, out: dict[str, np.ndarray]) -> None:
    if isinstance(tree, dict) and _CHUNKED in tree:  # flax splits arrays above 1 GiB into chunks
        shape = tuple(tree["shape"][str(i)] for i in range(len(tree["shape"])))
        chunks = [tree["chunks"][str(i)] for i in range(len(tree["chunks"]))]
        out[prefix] = np.concatenate(chunks).reshape(shape)
    elif isinstance(tree, dict):
        for key, value in tree.items():
            _flatten(value, f"{prefix}/{key}" if prefix else str(key), out)
    elif isinstance(tree, np.ndarray) or np.isscalar(tree):
        out[prefix] = np.asarray(tree)
    else:
        raise ValueError(f"entry {prefix!r} is a {type(tree).__name__}, not an array")


def load_magiclens_params(checkpoint: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a released MagicLens checkpoint into a flat `{"clip/visual/conv1/kernel": array, ...}` dict.

    Only a pickle of exactly one bytes object is accepted: an unpickler that resolves no global reads it (a crafted
    pickle that would call anything is refused before anything runs), then msgpack decodes flax's bytes.

    Raises:
        FileNotFoundError: the file does not exist.
        ImportError: `msgpack` is not installed.
        ValueError: the file is not a MagicLens release (one line naming the file and the problem).

    Example:

    ```python
    >>> from hf_cir.conversion.magiclens import load_magiclens_params
    >>> params = load_magiclens_params("magic_lens_clip_base.pkl")  # doctest: +SKIP
    >>> params["clip/visual/conv1/kernel"].shape  # doctest: +SKIP
    (16, 16, 3, 768)
    ```
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"`checkpoint` {path} does not exist or is not a file.")
    try:
        import msgpack
    except ImportError:
        raise ImportError(
            'Reading a MagicLens release needs msgpack: pip install "hf-cir[magiclens]" (or pip install msgpack).'
        ) from None
    payload = _read_payload(path)
    try:
        tree = msgpack.unpackb(payload, ext_hook=_ext_hook, raw=False, strict_map_key=False)
    except Exception as error:
        raise ValueError(f"`checkpoint` {path} holds bytes that are not flax msgpack parameters: {error}.") from None
    if not isinstance(tree, dict) or not isinstance(tree.get("params"), dict):
        raise ValueError(f"`checkpoint` {path} holds no flax `params` tree (top-level keys: {list(tree)[:5]}).")
    flat: dict[str, np.ndarray] = {}
    try:
        _flatten(tree["params"], "", flat)
    except ValueError as error:
        raise ValueError(f"`checkpoint` {path}: {error}.") from None
    return flat


# -- sizes, read from the parameters ----------------------------------------------------------------------------------


def _count(params: Mapping[str, np.ndarray], pattern: str) -> int:
    found = {int(m.group(1)) for key in params if (m := re.match(pattern, key))}
    if found != set(range(len(found))):
        raise ValueError(f"layer indices {sorted(found)} are not consecutive")
    return len(found)


def magiclens_config_from_params(params: Mapping[str, np.ndarray], tokenizer=None) -> MagicLensConfig:
    """The [`MagicLensConfig`] of a checkpoint: every size from the parameters' shapes; the special token ids of the
    text tower from `tokenizer` (start and end of text; padding is id 0, the reference's)."""
    try:
        return _config_from_params(params, tokenizer)
    except KeyError as error:
        raise ValueError(f"the checkpoint lacks the MagicLens parameter {error.args[0]!r}.") from None


def _config_from_params(params, tokenizer) -> MagicLensConfig:
    patch, _, _, vision_width = params["clip/visual/conv1/kernel"].shape
    grid = math.isqrt(params["clip/visual/positional_embedding"].shape[0] - 1)
    projection_dim = params["clip/visual/proj/kernel"].shape[1]
    vocab_size, text_width = params["clip/text/token_embedding/embedding"].shape
    vision_block, text_block = "clip/visual/transformer/resblocks_0", "clip/text/transformer/resblocks_0"
    text_config = {
        "vocab_size": vocab_size,
        "hidden_size": text_width,
        "intermediate_size": params[f"{text_block}/mlp/c_fc/kernel"].shape[1],
        "num_hidden_layers": _count(params, r"clip/text/transformer/resblocks_(\d+)/"),
        "num_attention_heads": params[f"{text_block}/attn/query/kernel"].shape[1],
        "max_position_embeddings": params["clip/text/positional_embedding"].shape[0],
        "projection_dim": params["clip/text/text_projection/kernel"].shape[1],
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
        "pad_token_id": 0,
    }
    if tokenizer is not None:
        text_config.update(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    vision_config = {
        "hidden_size": vision_width,
        "intermediate_size": params[f"{vision_block}/mlp/c_fc/kernel"].shape[1],
        "num_hidden_layers": _count(params, r"clip/visual/transformer/resblocks_(\d+)/"),
        "num_attention_heads": params[f"{vision_block}/attn/query/kernel"].shape[1],
        "image_size": grid * patch,
        "patch_size": patch,
        "projection_dim": projection_dim,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
    }
    fusion_query = params["multimodal_encoder/x_layers_0/self_attention/query/w"]
    pool_query = params["contrastive_multimodal_pooler/pool_attn/query/w"]
    return MagicLensConfig(
        text_config=text_config,
        vision_config=vision_config,
        projection_dim=projection_dim,
        fusion_num_hidden_layers=_count(params, r"multimodal_encoder/x_layers_(\d+)/"),
        fusion_num_attention_heads=fusion_query.shape[1],
        fusion_intermediate_size=params["multimodal_encoder/x_layers_0/ff_layer/ffn_layer1/linear/w"].shape[1],
        pooler_num_attention_heads=pool_query.shape[1],
        pooler_head_dim=pool_query.shape[2],
        num_query_tokens=params["contrastive_multimodal_pooler/pooling_attn_query"].shape[0],
    )


# -- key mapping, one function per sub-module ------------------------------------------------------------------------


def _t(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(array, dtype=np.float32))


def _dense(kernel: np.ndarray) -> torch.Tensor:
    """flax `(in, out)` -> torch `Linear.weight` `(out, in)`"""
    return _t(kernel).T.contiguous()


def _clip_block(params, src: str, dst: str) -> dict[str, torch.Tensor]:
    """scenic `ResidualAttentionBlock` -> transformers `CLIPEncoderLayer`:
    ln_1 / ln_2 {scale, bias}        -> layer_norm1 / layer_norm2 {weight, bias}
    attn/{query,key,value}/kernel    (W, heads, head_dim) -> self_attn.{q,k,v}_proj.weight (heads*head_dim, W)
    attn/{query,key,value}/bias      (heads, head_dim)    -> self_attn.{q,k,v}_proj.bias
    attn/out/kernel                  (heads, head_dim, W) -> self_attn.out_proj.weight (W, heads*head_dim)
    attn/out/bias                                         -> self_attn.out_proj.bias
    mlp/c_fc, mlp/c_proj {kernel, bias}                   -> mlp.fc1, mlp.fc2 {weight, bias}
    """
    out = {}
    for flax_name, torch_name in (("ln_1", "layer_norm1"), ("ln_2", "layer_norm2")):
        out[f"{dst}.{torch_name}.weight"] = _t(params.pop(f"{src}/{flax_name}/scale"))
        out[f"{dst}.{torch_name}.bias"] = _t(params.pop(f"{src}/{flax_name}/bias"))
    for flax_name, torch_name in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
        kernel = params.pop(f"{src}/attn/{flax_name}/kernel")
        out[f"{dst}.self_attn.{torch_name}.weight"] = _dense(kernel.reshape(kernel.shape[0], -1))
        out[f"{dst}.self_attn.{torch_name}.bias"] = _t(params.pop(f"{src}/attn/{flax_name}/bias").reshape(-1))
    kernel = params.pop(f"{src}/attn/out/kernel")
    out[f"{dst}.self_attn.out_proj.weight"] = _dense(kernel.reshape(-1, kernel.shape[-1]))
    out[f"{dst}.self_attn.out_proj.bias"] = _t(params.pop(f"{src}/attn/out/bias"))
    for flax_name, torch_name in (("c_fc", "fc1"), ("c_proj", "fc2")):
        out[f"{dst}.mlp.{torch_name}.weight"] = _dense(params.pop(f"{src}/mlp/{flax_name}/kernel"))
        out[f"{dst}.mlp.{torch_name}.bias"] = _t(params.pop(f"{src}/mlp/{flax_name}/bias"))
    return out


def _vision_tower(params, config: MagicLensConfig) -> dict[str, torch.Tensor]:
    """scenic `VisionTransformer` (clip/visual) -> `CLIPVisionModelWithProjection` (vision_model.*):
    conv1/kernel (p, p, 3, W)   -> vision_model.embeddings.patch_embedding.weight (W, 3, p, p)
    class_embedding             -> vision_model.embeddings.class_embedding
    positional_embedding        -> vision_model.embeddings.position_embedding.weight
    ln_pre / ln_post            -> vision_model.pre_layrnorm / vision_model.post_layernorm
    transformer/resblocks_{i}   -> vision_model.encoder.layers.{i} (see `_clip_block`)
    proj/kernel (W, E)          -> visual_projection.weight (E, W)
    """
    src, dst = "clip/visual", "vision_model.vision_model"
    out = {
        f"{dst}.embeddings.patch_embedding.weight": _t(params.pop(f"{src}/conv1/kernel")).permute(3, 2, 0, 1),
        f"{dst}.embeddings.class_embedding": _t(params.pop(f"{src}/class_embedding")),
        f"{dst}.embeddings.position_embedding.weight": _t(params.pop(f"{src}/positional_embedding")),
        "vision_model.visual_projection.weight": _dense(params.pop(f"{src}/proj/kernel")),
    }
    for flax_name, torch_name in (("ln_pre", "pre_layrnorm"), ("ln_post", "post_layernorm")):
        out[f"{dst}.{torch_name}.weight"] = _t(params.pop(f"{src}/{flax_name}/scale"))
        out[f"{dst}.{torch_name}.bias"] = _t(params.pop(f"{src}/{flax_name}/bias"))
    for i in range(config.vision_config.num_hidden_layers):
        out.update(_clip_block(params, f"{src}/transformer/resblocks_{i}", f"{dst}.encoder.layers.{i}"))
    return out


def _text_tower(params, config: MagicLensConfig) -> dict[str, torch.Tensor]:
    """scenic `TextEncoder` (clip/text) -> `CLIPTextModelWithProjection` (text_model.*):
    token_embedding/embedding   -> text_model.embeddings.token_embedding.weight
    positional_embedding        -> text_model.embeddings.position_embedding.weight
    transformer/resblocks_{i}   -> text_model.encoder.layers.{i} (see `_clip_block`)
    ln_final                    -> text_model.final_layer_norm
    text_projection/kernel      -> text_projection.weight (transposed)
    """
    src, dst = "clip/text", "text_model.text_model"
    out = {
        f"{dst}.embeddings.token_embedding.weight": _t(params.pop(f"{src}/token_embedding/embedding")),
        f"{dst}.embeddings.position_embedding.weight": _t(params.pop(f"{src}/positional_embedding")),
        f"{dst}.final_layer_norm.weight": _t(params.pop(f"{src}/ln_final/scale")),
        f"{dst}.final_layer_norm.bias": _t(params.pop(f"{src}/ln_final/bias")),
        "text_model.text_projection.weight": _dense(params.pop(f"{src}/text_projection/kernel")),
    }
    for i in range(config.text_config.num_hidden_layers):
        out.update(_clip_block(params, f"{src}/transformer/resblocks_{i}", f"{dst}.encoder.layers.{i}"))
    return out


def _layer_norm(params, src: str, dst: str) -> dict[str, torch.Tensor]:
    """MagicLens `LayerNorm` {scale, bias}, computing `x * (1 + scale) + bias` -> `nn.LayerNorm` {1 + scale, bias}"""
    return {f"{dst}.weight": 1.0 + _t(params.pop(f"{src}/scale")), f"{dst}.bias": _t(params.pop(f"{src}/bias"))}


def _attention(params, src: str, dst: str) -> dict[str, torch.Tensor]:
    """MagicLens `DotProductAttention` -> `MagicLensAttention`:
    {query,key,value}/w (D, heads, head_dim) -> {q,k,v}_proj.weight (heads*head_dim, D); /b (heads, head_dim) -> .bias
    post/w (D, heads, head_dim)              -> out_proj.weight (D, heads*head_dim);     post/b -> out_proj.bias
    per_dim_scale/per_dim_scale (head_dim)   -> per_dim_scale (pooler only)
    """
    out = {}
    for flax_name, torch_name in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
        kernel = params.pop(f"{src}/{flax_name}/w")
        out[f"{dst}.{torch_name}.weight"] = _dense(kernel.reshape(kernel.shape[0], -1))
        out[f"{dst}.{torch_name}.bias"] = _t(params.pop(f"{src}/{flax_name}/b").reshape(-1))
    kernel = params.pop(f"{src}/post/w")
    out[f"{dst}.out_proj.weight"] = _t(kernel.reshape(kernel.shape[0], -1))
    out[f"{dst}.out_proj.bias"] = _t(params.pop(f"{src}/post/b"))
    if f"{src}/per_dim_scale/per_dim_scale" in params:
        out[f"{dst}.per_dim_scale"] = _t(params.pop(f"{src}/per_dim_scale/per_dim_scale"))
    return out


def _fusion_encoder(params, config: MagicLensConfig) -> dict[str, torch.Tensor]:
    """MagicLens `StackedTransformer` (multimodal_encoder/x_layers_{i}) -> `fusion.layers.{i}`:
    layer_norm                         -> layer_norm (see `_layer_norm`)
    self_attention                     -> self_attn (see `_attention`)
    ff_layer/layer_norm                -> feed_forward.layer_norm
    ff_layer/ffn_layer{1,2}/linear/w   -> feed_forward.fc{1,2}.weight (transposed)
    ff_layer/ffn_layer{1,2}/bias/b     -> feed_forward.fc{1,2}.bias
    """
    out = {}
    for i in range(config.fusion_num_hidden_layers):
        src, dst = f"multimodal_encoder/x_layers_{i}", f"fusion.layers.{i}"
        out.update(_layer_norm(params, f"{src}/layer_norm", f"{dst}.layer_norm"))
        out.update(_attention(params, f"{src}/self_attention", f"{dst}.self_attn"))
        out.update(_layer_norm(params, f"{src}/ff_layer/layer_norm", f"{dst}.feed_forward.layer_norm"))
        for n in (1, 2):
            ffn = f"{src}/ff_layer/ffn_layer{n}"
            out[f"{dst}.feed_forward.fc{n}.weight"] = _dense(params.pop(f"{ffn}/linear/w"))
            out[f"{dst}.feed_forward.fc{n}.bias"] = _t(params.pop(f"{ffn}/bias/b"))
    return out


def _pooler(params) -> dict[str, torch.Tensor]:
    """MagicLens `AttenTokenPoolingLayer` (contrastive_multimodal_pooler) -> `pooler`:
    pooling_attn_query (queries, D) -> query
    pool_attn                       -> attention (see `_attention`, with per_dim_scale)
    pool_attn_ln                    -> layer_norm (see `_layer_norm`)
    """
    src = "contrastive_multimodal_pooler"
    out = {"pooler.query": _t(params.pop(f"{src}/pooling_attn_query"))}
    out.update(_attention(params, f"{src}/pool_attn", "pooler.attention"))
    out.update(_layer_norm(params, f"{src}/pool_attn_ln", "pooler.layer_norm"))
    return out


def convert_magiclens_params(params: Mapping[str, np.ndarray], config: MagicLensConfig) -> dict[str, torch.Tensor]:
    """Map the flat flax parameters of a release to a [`MagicLensModel`] state dict (float32).

    Raises:
        ValueError: a parameter is missing, or the checkpoint holds parameters MagicLens does not have.
    """
    remaining = dict(params)
    remaining.pop("clip/logit_scale", None)  # CLIP's contrastive temperature: unused by MagicLens
    try:
        state_dict = {
            **_vision_tower(remaining, config),
            **_text_tower(remaining, config),
            **_fusion_encoder(remaining, config),
            **_pooler(remaining),
        }
    except KeyError as error:
        raise ValueError(f"the checkpoint lacks the MagicLens parameter {error.args[0]!r}.") from None
    if remaining:
        raise ValueError(f"the checkpoint holds parameters MagicLens does not have: {sorted(remaining)[:5]}.")
    return state_dict


def build_magiclens_model(params: Mapping[str, np.ndarray], tokenizer=None) -> MagicLensModel:
    """A float32 [`MagicLensModel`] holding the converted parameters (every weight checked to load)."""
    config = magiclens_config_from_params(params, tokenizer)
    state_dict = convert_magiclens_params(params, config)
    model = MagicLensModel(config)
    expected = model.state_dict()
    wrong = [k for k, v in state_dict.items() if k not in expected or expected[k].shape != v.shape]
    missing = sorted(set(expected) - set(state_dict))
    if wrong or missing:
        raise ValueError(f"converted weights do not fit MagicLensModel: wrong {wrong[:5]}, missing {missing[:5]}.")
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def convert_magiclens_checkpoint(
    checkpoint: str | os.PathLike,
    output_dir: str | os.PathLike,
    tokenizer=None,
    push_to_hub: str | None = None,
    overwrite: bool = False,
    image_protocol: str | None = None,
) -> MagicLensModel:
    """Convert a released MagicLens pickle and write a loadable folder: `model.safetensors` + config, the tokenizer
    (OpenAI CLIP BPE; `MagicLensProcessor` pads with id 0 itself, as the reference does), the image processor at the checkpoint's
    resolution, and a model card with both licenses (code Apache-2.0, weights CC-BY-4.0).

    Args:
        checkpoint: the released file, e.g. `magic_lens_clip_large.pkl`.
        output_dir: where to write the folder (a new or empty folder).
        tokenizer: a CLIP tokenizer or its folder / Hub id. Defaults to the OpenAI CLIP tokenizer built offline from
            open-clip-torch's BPE file ([`~hf_cir.utils.build_clip_tokenizer`]).
        push_to_hub: also upload the folder to this repository id.
        overwrite: replace an earlier MagicLens conversion at `output_dir` (nothing else is ever replaced; the old
            folder stays until the new one is complete).
        image_protocol: the saved image processor's `protocol`: `"model"` (the default: the model's own centred
            square crop) or `"evaluation"` (the reference evaluation script's preprocessing, behind the published
            benchmark numbers; see [`MagicLensImageProcessor`]).

    Raises:
        FileExistsError: `output_dir` holds something and `overwrite` is not set.
        ValueError: the checkpoint is not a MagicLens release (one line naming it and the problem).
    """
    from transformers import AutoTokenizer

    from ..hub import save_pretrained
    from ..hub.magiclens import MAGICLENS_FOLDER, create_magiclens_model_card
    from ..utils import atomic_directory, build_clip_tokenizer

    image_protocol = "model" if image_protocol is None else image_protocol
    if image_protocol not in IMAGE_PROTOCOLS:
        raise ValueError(f"`image_protocol` must be one of {', '.join(IMAGE_PROTOCOLS)}, got {image_protocol!r}.")
    output_dir = Path(output_dir)
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())) and not overwrite:
        raise FileExistsError(f"`output_dir` {output_dir} already exists and is not an empty folder.")
    params = load_magiclens_params(checkpoint)
    if tokenizer is None:
        tokenizer = build_clip_tokenizer()
    elif isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = AutoTokenizer.from_pretrained(tokenizer)
    try:
        model = build_magiclens_model(params, tokenizer)
    except ValueError as error:
        raise ValueError(f"`checkpoint` {checkpoint}: {error}") from None
    processor = MagicLensProcessor(
        MagicLensImageProcessor(size=model.config.vision_config.image_size, protocol=image_protocol), tokenizer
    )
    card = create_magiclens_model_card(
        model, model_id=push_to_hub, source=f"converted from `{Path(checkpoint).name}` (google-deepmind/magiclens)"
    )
    with atomic_directory(output_dir, overwrite=overwrite, kind=MAGICLENS_FOLDER, argument="output_dir") as tmp:
        save_pretrained(model, tmp, processor, model_card=card)
    if push_to_hub:
        from huggingface_hub import HfApi

        api = HfApi()
        repo_id = api.create_repo(push_to_hub, exist_ok=True).repo_id
        api.upload_folder(repo_id=repo_id, folder_path=str(output_dir), commit_message="Upload converted MagicLens")
    return model
