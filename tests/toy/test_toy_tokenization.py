"""The toy word-level tokenizer: ids, `$`, strictness about unknown words, save/load round trips."""

import pytest
from transformers import AutoTokenizer

from hf_cir.toy import ToyWorld, toy_vocabulary
from hf_cir.toy.tokenization import EOS_TOKEN, build_toy_tokenizer, check_toy_text


@pytest.fixture(scope="module")
def tokenizer():
    return build_toy_tokenizer()


def test_ids(tokenizer):
    assert len(tokenizer) == len(toy_vocabulary()) + 3
    assert tokenizer.pad_token_id == 0 and tokenizer.bos_token_id == 1
    # EOS is the largest id and never 2 (CLIP's legacy argmax pooling).
    assert tokenizer.eos_token_id == len(tokenizer) - 1 != 2
    placeholder = tokenizer("$", add_special_tokens=False).input_ids
    assert len(placeholder) == 1 and placeholder[0] < tokenizer.eos_token_id


def test_encoding_padding_and_truncation(tokenizer):
    encoded = tokenizer("A photo of $ that make it blue.", padding="max_length")
    tokens = tokenizer.convert_ids_to_tokens(encoded.input_ids)
    assert tokens[:9] == ["<|startoftext|>", "a", "photo", "of", "$", "that", "make", "it", "blue"]
    assert tokens[9] == EOS_TOKEN and len(tokens) == tokenizer.model_max_length
    assert sum(encoded.attention_mask) == 10
    long = tokenizer("make it red " * 30, truncation=True).input_ids
    assert len(long) == tokenizer.model_max_length and long[-1] == tokenizer.eos_token_id


def test_every_toy_text_is_known(tokenizer):
    world = ToyWorld()
    texts = world.captions("train", per_combination=2)[:500] + [t.text for t in world.triplets("train", 500)]
    check_toy_text(tokenizer, texts)
    assert all(len(ids) <= tokenizer.model_max_length - 6 for ids in tokenizer(texts).input_ids)


def test_unknown_words_become_the_unknown_token(tokenizer):
    from hf_cir.utils.tokenization import unknown_words

    # The unknown token shares the padding id, so the shipped towers' embedding tables need no new row.
    assert tokenizer.unk_token == tokenizer.pad_token and tokenizer.unk_token_id == 0
    known = tokenizer("make it blue").input_ids
    assert tokenizer("make it teal").input_ids == known[:3] + [tokenizer.unk_token_id] + known[4:]
    assert unknown_words(tokenizer, ["make it teal", "a navy circle", "make it blue"]) == ["teal", "navy"]
    # Where a text must be fully known (training data), `check_toy_text` still refuses it.
    with pytest.raises(ValueError, match="'teal', 'navy'.*Known words: \\$ a an"):
        check_toy_text(tokenizer, ["make it teal", "a navy circle"], name="text")
    with pytest.raises(TypeError, match="string"):
        check_toy_text(tokenizer, [3])


def test_save_and_load_with_auto_tokenizer(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = ["a small red circle on the left on a plain background", "a photo of $ that turn it green"]
    assert loaded(text, padding="max_length").input_ids == tokenizer(text, padding="max_length").input_ids
    assert loaded.model_max_length == tokenizer.model_max_length
    assert loaded.unk_token_id == tokenizer.unk_token_id
    assert loaded("make it teal").input_ids == tokenizer("make it teal").input_ids


def test_shipped_tokenizers_know_the_unknown_token():
    from hf_cir.toy.checkpoints import toy_checkpoint

    expected = build_toy_tokenizer()
    for folder in (toy_checkpoint("clip"), toy_checkpoint("lincir"), toy_checkpoint("compodiff") / "tokenizer"):
        loaded = AutoTokenizer.from_pretrained(folder)
        assert loaded.get_vocab() == expected.get_vocab()  # same ids: the weights and results are unchanged
        assert loaded.unk_token_id == expected.pad_token_id
        assert loaded("a photo of $ that make it teal").input_ids[-2] == loaded.unk_token_id


def test_bad_vocabularies():
    with pytest.raises(ValueError, match="lower-case"):
        build_toy_tokenizer(["Red"])
    with pytest.raises(ValueError, match="empty"):
        build_toy_tokenizer([])
    with pytest.raises(ValueError, match="model_max_length"):
        build_toy_tokenizer(model_max_length=2)
