"""LinCIR's training speed-ups change nothing but the cost: padding each batch to its longest caption, and the
frozen tower's target embeddings computed once and stored with the dataset, give the loss and phi's gradients of the
plain path (padded to the context, target recomputed at every step) to float32 rounding, with eager and sdpa
attention, over several optimizer steps; and a training run with the switches on ends where one with them off does.
"""

import datasets
import pytest
import torch

from hf_cir import LinCIRModel, LinCIRProcessor
from hf_cir.training import (
    TARGET_COLUMN,
    CaptionMasker,
    add_caption_targets,
    get_keyword_extractor,
    mask_caption_dataset,
    pad_caption_batch,
)

from .helpers import load_script, run_in_process, weights

CAPTIONS = [
    "a dog",
    "a small red car parked on a quiet street next to a tall old house at night",
    "two cats",
    "a man riding a blue bike in the park with a large striped umbrella and a young child behind him",
    "the sea",
    "a wooden table with a plate of bread, a cup of tea, an old book and a small green plant near the window",
    "an empty chair",
    "a bird on a tree",
]
STEPS = 4


def _run(clip_dir, attn, dynamic_padding, cached_targets):
    """Losses and phi gradients of STEPS AdamW steps over the captions in batches of 4."""
    processor = LinCIRProcessor.from_pretrained(clip_dir)
    torch.manual_seed(0)
    model = LinCIRModel.from_clip(str(clip_dir), processor.tokenizer, attn_implementation=attn)
    model.requires_grad_(False)
    model.phi.requires_grad_(True)
    masker = CaptionMasker(
        processor.tokenizer, model.config.placeholder_token, get_keyword_extractor("builtin"), pad_to_max_length=False
    )
    rows, _ = mask_caption_dataset(datasets.Dataset.from_dict({"text": CAPTIONS}), masker)
    if cached_targets:
        rows = add_caption_targets(rows, model.text_model, processor.tokenizer.pad_token_id, batch_size=3)
    columns = ["masked_input_ids", "masked_attention_mask"]
    columns += [TARGET_COLUMN] if cached_targets else ["input_ids", "attention_mask"]
    rows = rows.select_columns(columns)
    optimizer = torch.optim.AdamW(model.phi.parameters(), lr=1e-2)
    model.train()
    losses, gradients = [], []
    for step in range(STEPS):
        indices = [(4 * step + i) % len(CAPTIONS) for i in range(4)]
        batch = pad_caption_batch(rows[indices], processor.tokenizer.pad_token_id, None if dynamic_padding else 77)
        if cached_targets:
            batch["text_embeds"] = batch.pop(TARGET_COLUMN)
        torch.manual_seed(100 + step)  # the noise and phi's dropout draw the same numbers in every path
        loss = model(**batch).loss
        loss.backward()
        losses.append(loss.detach())
        gradients.append(torch.cat([p.grad.flatten() for p in model.phi.parameters()]))
        optimizer.step()
        optimizer.zero_grad()
    return torch.stack(losses), gradients, batch


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_dynamic_padding_and_cached_targets_equal_the_plain_path(attn, tiny_clip_dir):
    plain_losses, plain_gradients, plain_batch = _run(tiny_clip_dir, attn, False, False)
    assert plain_batch["masked_input_ids"].shape[1] == 77
    for dynamic_padding, cached_targets in [(True, False), (False, True), (True, True)]:
        losses, gradients, batch = _run(tiny_clip_dir, attn, dynamic_padding, cached_targets)
        if dynamic_padding:
            assert batch["masked_input_ids"].shape[1] < 77  # the work really shrank
        torch.testing.assert_close(losses, plain_losses, rtol=0, atol=1e-5)
        for step, (gradient, plain) in enumerate(zip(gradients, plain_gradients)):
            assert plain.abs().max() > 1e-4, step  # gradients that say something
            torch.testing.assert_close(gradient, plain, rtol=0, atol=1e-5, msg=f"step {step}")


def test_target_cache_is_reused_and_keyed_by_the_tower(tiny_clip_dir, tmp_path):
    processor = LinCIRProcessor.from_pretrained(tiny_clip_dir)
    model = LinCIRModel.from_clip(str(tiny_clip_dir), processor.tokenizer)
    path = tmp_path / "captions.txt"
    path.write_text("\n".join(CAPTIONS) + "\n")
    captions = datasets.load_dataset("text", data_files=str(path), split="train", cache_dir=str(tmp_path / "cache"))
    masker = CaptionMasker(processor.tokenizer, "$", get_keyword_extractor("builtin"), pad_to_max_length=False)
    rows, _ = mask_caption_dataset(captions, masker)
    first = add_caption_targets(rows, model.text_model, processor.tokenizer.pad_token_id)
    assert first.cache_files and first.cache_files[0]["filename"].startswith(str(tmp_path / "cache"))  # mmapped
    again = add_caption_targets(rows, model.text_model, processor.tokenizer.pad_token_id)
    assert again.cache_files == first.cache_files
    with torch.no_grad():
        model.text_model.text_projection.weight.mul_(2)
    changed = add_caption_targets(rows, model.text_model, processor.tokenizer.pad_token_id)
    assert changed.cache_files != first.cache_files
    torch.testing.assert_close(
        torch.tensor(changed[TARGET_COLUMN]), 2 * torch.tensor(first[TARGET_COLUMN]), rtol=1e-5, atol=1e-6
    )


def test_training_with_the_switches_ends_where_the_plain_run_ends(tiny_clip_dir, tmp_path):
    script = load_script("train_lincir")
    data = tmp_path / "captions.txt"
    data.write_text("\n".join(CAPTIONS) + "\n")
    common = [
        "--clip_model_name_or_path", tiny_clip_dir, "--train_file", data, "--keyword_extractor", "builtin",
        "--train_batch_size", 4, "--max_train_steps", 4, "--learning_rate", 5e-3, "--seed", 3, "--no-progress",
        "--checkpointing_steps", 100, "--adam_epsilon", 1e-4,
    ]  # fmt: skip
    run_in_process(script, [*common, "--output_dir", tmp_path / "on"])
    run_in_process(
        script, [*common, "--output_dir", tmp_path / "off", "--no-dynamic_padding", "--no-cache_target_embeddings"]
    )
    on, off = (
        weights(tmp_path / "on" / "model.safetensors", "phi."),
        weights(tmp_path / "off" / "model.safetensors", "phi."),
    )
    assert on.keys() == off.keys()
    for key in on:
        torch.testing.assert_close(on[key], off[key], rtol=0, atol=1e-5)
    card = (tmp_path / "off" / "README.md").read_text()
    assert "--no-dynamic_padding" in card and "--no-cache_target_embeddings" in card
