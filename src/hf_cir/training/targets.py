# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""LinCIR's training batches without wasted work: token ids padded per batch, and the frozen text tower's target
embedding of each caption computed once and stored with the dataset.

- `pad_caption_batch`: the rows of a batch padded to its longest text (or to a fixed length). A causal text tower
  pooled at the EOS token gives the same output whatever comes after the EOS, so padding to the batch's longest
  caption instead of the context length (77) changes nothing but the cost (tests/training/test_training_speedups.py).
- `add_caption_targets`: a cached `datasets.map` that stores the target embedding (`text_embeds` of the caption)
  in a `target_embeds` column, memory-mapped like every `datasets` cache; the loss then takes it as `text_embeds`
  instead of running the tower once more at every step.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

import datasets
import numpy as np
import torch

from .data import dataset_fingerprint

__all__ = [
    "TARGET_COLUMN",
    "add_caption_targets",
    "caption_training_batch",
    "pad_caption_batch",
    "text_tower_fingerprint",
]

TARGET_COLUMN = "target_embeds"
_TOKEN_COLUMNS = (("input_ids", "attention_mask"), ("masked_input_ids", "masked_attention_mask"))


def pad_caption_batch(
    rows: Mapping[str, Sequence], pad_token_id: int, pad_to: int | None = None
) -> dict[str, torch.Tensor]:
    """Stack a batch of `CaptionMasker` rows (`dataset[indices]`, lists of token ids of any lengths) into tensors:
    the ids padded with `pad_token_id` (attention 0) to the batch's longest text, or to `pad_to`. Other columns
    (e.g. `target_embeds`) are stacked as float32.

    Example:

    ```python
    >>> from hf_cir.training import pad_caption_batch
    >>> rows = {"input_ids": [[49406, 320, 49407], [49406, 49407]], "attention_mask": [[1, 1, 1], [1, 1]]}
    >>> batch = pad_caption_batch(rows, pad_token_id=0)
    >>> batch["input_ids"].tolist(), batch["attention_mask"].tolist()
    ([[49406, 320, 49407], [49406, 49407, 0]], [[1, 1, 1], [1, 1, 0]])
    ```
    """
    batch = {}
    for ids_key, mask_key in _TOKEN_COLUMNS:
        if ids_key not in rows:
            continue
        ids, masks = rows[ids_key], rows[mask_key]
        longest = max(len(row) for row in ids)
        length = longest if pad_to is None else pad_to
        if longest > length:
            raise ValueError(f"`{ids_key}` holds a text of {longest} tokens, more than `pad_to`={pad_to}.")
        padded = torch.full((len(ids), length), pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(ids), length), dtype=torch.long)
        for row, (row_ids, row_mask) in enumerate(zip(ids, masks)):
            padded[row, : len(row_ids)] = torch.as_tensor(row_ids, dtype=torch.long)
            attention[row, : len(row_mask)] = torch.as_tensor(row_mask, dtype=torch.long)
        batch[ids_key], batch[mask_key] = padded, attention
    for key, values in rows.items():
        if key not in batch and all(key not in pair for pair in _TOKEN_COLUMNS):
            batch[key] = torch.as_tensor(np.asarray(values, dtype=np.float32))
    return batch


def caption_training_batch(
    dataset: datasets.Dataset,
    indices: Sequence[int],
    pad_token_id: int,
    pad_to: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> dict[str, torch.Tensor]:
    """The keyword arguments of `LinCIRModel(...)` for the training loss on rows `indices` of a masked caption
    dataset (`pad_caption_batch`, moved to `device`; a stored `target_embeds` column becomes `text_embeds` in
    `dtype`, the dtype of the frozen tower that computed it)."""
    batch = {key: value.to(device) for key, value in pad_caption_batch(dataset[indices], pad_token_id, pad_to).items()}
    if TARGET_COLUMN in batch:
        batch["text_embeds"] = batch.pop(TARGET_COLUMN).to(dtype)
    return batch


def text_tower_fingerprint(text_model: torch.nn.Module) -> str:
    """A hash of everything that decides a text tower's output: its config, attention implementation, device type,
    and every weight (names, dtypes and bytes)."""
    digest = hashlib.blake2b(digest_size=16)
    config = getattr(text_model, "config", None)
    if config is not None:
        digest.update(json.dumps(config.to_dict(), sort_keys=True, default=str).encode())
        digest.update(str(getattr(config, "_attn_implementation", None)).encode())
    for name, tensor in text_model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}/{tensor.dtype}/{tuple(tensor.shape)}/{tensor.device.type}".encode())
        digest.update(tensor.view(torch.uint8).numpy() if tensor.numel() else b"")
    first = next(text_model.parameters(), None)
    digest.update(str(first.device.type if first is not None else "cpu").encode())
    return digest.hexdigest()


def add_caption_targets(
    dataset: datasets.Dataset,
    text_model: torch.nn.Module,
    pad_token_id: int,
    batch_size: int = 256,
    load_from_cache_file: bool = True,
) -> datasets.Dataset:
    """Add the `target_embeds` column: the projected text features (`text_model(...).text_embeds`, stored as
    float32) of each row's `input_ids`, computed once with a cached `datasets.map` (batches padded to their longest
    caption) keyed by the dataset and `text_tower_fingerprint(text_model)`.

    Example:

    ```python
    >>> import datasets, torch
    >>> from transformers import CLIPTextConfig, CLIPTextModelWithProjection
    >>> from hf_cir.training import add_caption_targets
    >>> tower = CLIPTextModelWithProjection(CLIPTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
    ...                                                    num_attention_heads=2, projection_dim=16)).eval()
    >>> rows = datasets.Dataset.from_dict({"input_ids": [[49406, 320, 49407]], "attention_mask": [[1, 1, 1]]})
    >>> len(add_caption_targets(rows, tower, pad_token_id=0)["target_embeds"][0])
    16
    ```
    """
    if len(dataset) == 0:
        raise ValueError("There are no captions to embed: the dataset has no rows.")
    device = next(text_model.parameters()).device

    def embed(batch):
        inputs = pad_caption_batch({key: batch[key] for key in _TOKEN_COLUMNS[0]}, pad_token_id)
        with torch.no_grad():
            output = text_model(
                input_ids=inputs["input_ids"].to(device), attention_mask=inputs["attention_mask"].to(device)
            )
        return {TARGET_COLUMN: output.text_embeds.float().cpu().numpy()}

    fingerprint = hashlib.sha256(
        f"{dataset_fingerprint(dataset)}/{text_tower_fingerprint(text_model)}/{batch_size}/{pad_token_id}".encode()
    ).hexdigest()[:32]
    return dataset.map(
        embed,
        batched=True,
        batch_size=batch_size,
        new_fingerprint=fingerprint,
        load_from_cache_file=load_from_cache_file,
        desc="Embedding the captions once (training targets)",
    )
