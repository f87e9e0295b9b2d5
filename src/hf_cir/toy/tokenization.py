"""The toy world's word-level tokenizer: one id per word, `$` a word of its own, unknown words one unknown token.

It is an ordinary `PreTrainedTokenizerFast` (a `tokenizers` WordLevel model), saved with `save_pretrained` and
loaded with `AutoTokenizer`, so `LinCIRProcessor` and `CompoDiffPipeline` use it like any CLIP tokenizer.

Two choices are deliberate:
- A word outside the vocabulary becomes the unknown token `UNK_TOKEN`, which shares the padding token's id: the
  toy text towers never attend to padding, so that id carries no learned meaning, and the shipped checkpoints keep
  their embedding tables (and results) unchanged. Queries with unknown words therefore run; hf-cir's retrieval
  models warn naming the words (`hf_cir.utils.tokenization.unknown_words`), and `check_toy_text` refuses them
  where a text must be fully known (training data).
- `<|endoftext|>` gets the largest id and never id 2: transformers' CLIP text model pools at
  `input_ids.argmax(-1)` when `eos_token_id == 2` (the legacy OpenAI convention) and at the first
  `eos_token_id` otherwise; with EOS the largest id both rules agree.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from .world import toy_vocabulary

__all__ = ["PAD_TOKEN", "BOS_TOKEN", "EOS_TOKEN", "UNK_TOKEN", "build_toy_tokenizer", "check_toy_text"]

PAD_TOKEN = "<|pad|>"
# Unknown words share the padding id (see the module docstring): no new row in the towers' embedding tables.
UNK_TOKEN = PAD_TOKEN
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
# Punctuation is dropped before splitting on whitespace, so "make it blue." reads as "make it blue".
_PUNCTUATION = r"[.,;:!?\"()]"


def build_toy_tokenizer(words: Sequence[str] | None = None, model_max_length: int = 32) -> PreTrainedTokenizerFast:
    """Build the word-level tokenizer of the toy world.

    Ids: `<|pad|>` 0 (also the unknown-word token), `<|startoftext|>` 1, the words (sorted) from 2,
    `<|endoftext|>` last. Texts are
    lower-cased, punctuation is dropped, and every encoding is `<|startoftext|> words <|endoftext|>`;
    truncation keeps the end-of-text token.

    Args:
        words (`Sequence[str]`, *optional*):
            The vocabulary. Defaults to `toy_vocabulary()` (every word of the toy captions and modification
            texts, the LinCIR template words and `$`).
        model_max_length (`int`, *optional*, defaults to 32):
            The text tower's context length.

    Example:

    ```python
    >>> from hf_cir.toy.tokenization import build_toy_tokenizer
    >>> tokenizer = build_toy_tokenizer()
    >>> tokenizer.convert_ids_to_tokens(tokenizer("a photo of $").input_ids)
    ['<|startoftext|>', 'a', 'photo', 'of', '$', '<|endoftext|>']
    ```
    """
    words = sorted(set(toy_vocabulary() if words is None else words))
    if not words:
        raise ValueError("`words` must not be empty.")
    bad = [w for w in words if not w or re.search(r"\s", w) or w != w.lower() or re.fullmatch(_PUNCTUATION, w)]
    if bad:
        raise ValueError(f"Vocabulary words must be lower-case, non-empty, without spaces or punctuation: {bad}")
    if model_max_length < 3:
        raise ValueError(f"`model_max_length` must be at least 3 (start, one word, end); got {model_max_length}.")
    vocab = {PAD_TOKEN: 0, BOS_TOKEN: 1}
    for word in words:
        vocab[word] = len(vocab)
    vocab[EOS_TOKEN] = len(vocab)

    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    backend.normalizer = normalizers.Sequence(
        [normalizers.Lowercase(), normalizers.Replace(Regex(_PUNCTUATION), " "), normalizers.Strip()]
    )
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A {EOS_TOKEN}",
        pair=f"{BOS_TOKEN} $A {EOS_TOKEN} $B {EOS_TOKEN}",
        special_tokens=[(BOS_TOKEN, vocab[BOS_TOKEN]), (EOS_TOKEN, vocab[EOS_TOKEN])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        model_max_length=model_max_length,
        padding_side="right",
        truncation_side="right",
        model_input_names=["input_ids", "attention_mask"],
        clean_up_tokenization_spaces=False,
    )


def _words(tokenizer: PreTrainedTokenizerBase, text: str) -> list[str]:
    backend = tokenizer.backend_tokenizer
    normalized = backend.normalizer.normalize_str(text) if backend.normalizer is not None else text
    return [piece for piece, _ in backend.pre_tokenizer.pre_tokenize_str(normalized)]


def check_toy_text(tokenizer: PreTrainedTokenizerBase, texts: str | Iterable[str], name: str = "text") -> None:
    """Raise a `ValueError` naming every word of `texts` that the word-level `tokenizer` does not know.

    Example:

    ```python
    >>> from hf_cir.toy.tokenization import build_toy_tokenizer, check_toy_text
    >>> check_toy_text(build_toy_tokenizer(), "make it blue")
    >>> check_toy_text(build_toy_tokenizer(), "make it teal")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: `text` has word(s) outside the toy vocabulary: 'teal'. Known words: $ a an ...
    ```
    """
    texts = [texts] if isinstance(texts, str) else list(texts)
    vocab = tokenizer.get_vocab()
    unknown: list[str] = []
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"`{name}` must be a string or a list of strings; got {type(text).__name__}.")
        unknown.extend(word for word in _words(tokenizer, text) if word not in vocab and word not in unknown)
    if unknown:
        known = [t for t in sorted(vocab, key=vocab.get) if not t.startswith("<|")]
        raise ValueError(
            f"`{name}` has word(s) outside the toy vocabulary: {', '.join(map(repr, unknown))}. "
            f"Known words: {' '.join(known)}"
        )
