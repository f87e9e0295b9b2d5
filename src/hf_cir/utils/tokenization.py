"""Building the OpenAI CLIP BPE tokenizer offline, from the merges file that open-clip-torch ships."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

from transformers import CLIPTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

# The OpenAI vocabulary uses the first 49,152 - 256 - 2 merges of the file.
_NUM_MERGES = 49152 - 256 - 2
_BPE_FILE_NAME = "bpe_simple_vocab_16e6.txt.gz"

__all__ = ["find_clip_bpe_file", "build_clip_tokenizer", "unknown_words", "warn_unknown_words"]


def find_clip_bpe_file() -> Path:
    """Locate `bpe_simple_vocab_16e6.txt.gz` inside an installed open-clip-torch, without importing it.

    Importing `open_clip` needs torchvision; finding the package's folder does not.

    Raises:
        FileNotFoundError: open-clip-torch is not installed (`pip install --no-deps open-clip-torch`).
    """
    spec = importlib.util.find_spec("open_clip")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / _BPE_FILE_NAME
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"Could not find {_BPE_FILE_NAME}: install open-clip-torch (`pip install --no-deps open-clip-torch`) "
        "or pass `bpe_path` explicitly."
    )


def build_clip_tokenizer(bpe_path: str | Path | None = None, model_max_length: int = 77, **kwargs) -> CLIPTokenizer:
    """Build the 49,408-token OpenAI CLIP tokenizer from its BPE merges file, with no network access.

    Args:
        bpe_path (`str` or `Path`, *optional*):
            The gzipped merges file. Defaults to the one shipped by open-clip-torch.
        model_max_length (`int`, *optional*, defaults to 77):
            The text tower's context length.
        kwargs:
            Passed to `CLIPTokenizer` (e.g. `pad_token="!"` for the SDXL-style padding).

    Example:

    ```python
    >>> from hf_cir.utils import build_clip_tokenizer
    >>> tokenizer = build_clip_tokenizer()
    >>> tokenizer.convert_tokens_to_ids("$</w>")
    259

    ```
    """
    path = Path(bpe_path) if bpe_path is not None else find_clip_bpe_file()
    if not path.is_file():
        raise FileNotFoundError(f"`bpe_path` {path} does not exist.")
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : _NUM_MERGES + 1]]
    symbols = list(bytes_to_unicode().values())  # GPT-2 / CLIP byte-level BPE: byte -> printable unicode
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(tokens)}
    kwargs.setdefault("bos_token", "<|startoftext|>")
    kwargs.setdefault("eos_token", "<|endoftext|>")
    kwargs.setdefault("unk_token", "<|endoftext|>")
    kwargs.setdefault("pad_token", "<|endoftext|>")
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length, **kwargs)


def unknown_words(tokenizer, texts: list[str]) -> list[str]:
    """The words of `texts` that `tokenizer` encodes as its unknown token (each once, in order of appearance).

    Byte-level tokenizers (CLIP's) know every word, so this is empty for them; a word-level one (the toy world's)
    maps words outside its vocabulary to its unknown token, and callers warn naming them.

    Example:

    ```python
    >>> from hf_cir.toy.tokenization import build_toy_tokenizer
    >>> from hf_cir.utils.tokenization import unknown_words
    >>> unknown_words(build_toy_tokenizer(), ["make it teal", "a zorb"])
    ['teal', 'zorb']
    ```
    """
    unk_id = getattr(tokenizer, "unk_token_id", None)
    if unk_id is None or not getattr(tokenizer, "is_fast", False):
        return []
    found: dict[str, None] = {}
    for text in texts:
        encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        for token_id, (start, end) in zip(encoding["input_ids"], encoding["offset_mapping"]):
            if token_id == unk_id and end > start:
                found[text[start:end]] = None
    return list(found)


def warn_unknown_words(tokenizer, texts: list[str], stacklevel: int = 2) -> list[str]:
    """Warn (a `UserWarning`) naming the words of `texts` that `tokenizer` encodes as its unknown token, and return
    them: the one check of [`LinCIRProcessor`], [`CompoDiffPipeline`] and so of every hf-cir command.

    Example:

    ```python
    >>> import warnings
    >>> from hf_cir.toy.tokenization import build_toy_tokenizer
    >>> from hf_cir.utils.tokenization import warn_unknown_words
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     _ = warn_unknown_words(build_toy_tokenizer(), ["make it teal"])
    >>> print(caught[0].message)
    The tokenizer does not know the word(s) 'teal': they are encoded as its unknown token (the model knows nothing of them).
    ```
    """
    import warnings

    unknown = unknown_words(tokenizer, texts)
    if unknown:
        name = getattr(tokenizer, "name_or_path", "") or ""
        owner = f"The tokenizer ({name})" if name else "The tokenizer"
        warnings.warn(
            f"{owner} does not know the word(s) {', '.join(map(repr, unknown))}: they are encoded as its unknown "
            "token (the model knows nothing of them).",
            stacklevel=stacklevel + 1,
        )
    return unknown
