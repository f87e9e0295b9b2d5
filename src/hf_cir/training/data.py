# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""Training data for hf-cir: caption datasets for LinCIR, embedding datasets for CompoDiff, and a deterministic,
resumable, process-sharded order of examples.

Every source goes through `datasets`: a Hub dataset name, a folder written by `Dataset.save_to_disk`, or local
txt / csv / json / jsonl / parquet files.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import datasets
import pyarrow
import pyarrow.parquet
import torch
from datasets.exceptions import DatasetsError

from ..hub import is_hub_id
from ..utils.errors import one_line
from .keywords import MASK_FALLBACK_RANDOM_WORD, MASK_FALLBACK_TEMPLATE, CaptionMasker, clean_caption

__all__ = [
    "IndexStream",
    "check_data_file",
    "dataset_fingerprint",
    "filter_captions",
    "load_data_files",
    "load_training_dataset",
    "mask_caption_dataset",
    "require_columns",
]

logger = logging.getLogger(__name__)

_BUILDERS = {".txt": "text", ".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def _builder_for(files: Sequence[str], argument: str = "--train_file") -> tuple[str, dict]:
    suffixes = {Path(f).suffix.lower() for f in files}
    builders = {_BUILDERS.get(suffix) for suffix in suffixes}
    if None in builders or len(builders) != 1:
        raise ValueError(
            f"{argument}: training files must all be one of {sorted(_BUILDERS)} (got suffixes {sorted(suffixes)}): "
            f"{list(files)[:3]}"
        )
    builder = builders.pop()
    kwargs = {"delimiter": "\t"} if suffixes == {".tsv"} else {}
    return builder, kwargs


def load_training_dataset(
    dataset_name: str | None = None,
    train_files: Sequence[str] | None = None,
    dataset_config_name: str | None = None,
    split: str = "train",
    cache_dir: str | None = None,
    argument: str = "--dataset_name",
) -> datasets.Dataset:
    """Load one split from a Hub dataset name, a `save_to_disk` folder, a folder of data files, or local files.

    Args:
        dataset_name (`str`, *optional*): Hub id or local folder (a `save_to_disk` folder, or a folder that
            `datasets.load_dataset` understands, e.g. parquet files).
        train_files (`list[str]`, *optional*): Local `.txt` (one caption per line, column `text`), `.csv`, `.tsv`,
            `.json`, `.jsonl` or `.parquet` files.
        dataset_config_name (`str`, *optional*): The Hub dataset's configuration.
        split (`str`, *optional*, defaults to `"train"`): The split to return.
        cache_dir (`str`, *optional*): The `datasets` cache folder.
        argument (`str`, *optional*, defaults to `"--dataset_name"`): How error messages name `dataset_name`.

    Files that are not what their suffix says (binary data in a text file, a file that is not parquet, JSON that does
    not parse) and sources that do not exist raise a `ValueError` / `FileNotFoundError` naming the file.

    Example:

    ```python
    >>> import tempfile, pathlib
    >>> from hf_cir.training import load_training_dataset
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "captions.txt"
    >>> _ = path.write_text("a red car\\na dog on the grass\\n")
    >>> list(load_training_dataset(train_files=[str(path)])["text"])
    ['a red car', 'a dog on the grass']

    ```
    """
    if (dataset_name is None) == (not train_files):
        raise ValueError("Pass exactly one of `dataset_name` (Hub id or folder) and `train_files` (local files).")
    if train_files:
        return load_data_files(list(train_files), split, cache_dir, "--train_file")
    path = Path(dataset_name)
    source = f"{argument} {dataset_name}"
    if path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file()):
        with _readable(source):
            loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise ValueError(f"{source} has no split {split!r}; it has {list(loaded)}.")
            loaded = loaded[split]
        return loaded
    if path.is_dir():
        files = sorted(str(p) for p in path.rglob("*") if p.suffix.lower() in _BUILDERS and p.is_file())
        if not files:
            raise FileNotFoundError(f"{source} holds no dataset files ({sorted(_BUILDERS)}) and no saved dataset.")
        return load_data_files(files, split, cache_dir, argument)
    if path.is_file():
        return load_data_files([str(path)], split, cache_dir, argument)
    if not is_hub_id(dataset_name):
        raise FileNotFoundError(f"{source} does not exist (neither a local folder or file nor a Hub dataset id).")
    with _readable(source):
        return datasets.load_dataset(dataset_name, dataset_config_name, split=split, cache_dir=cache_dir)


def load_data_files(
    files: list[str], split: str = "train", cache_dir: str | None = None, argument: str = "--train_file"
) -> datasets.Dataset:
    """Load local data files of one format (`check_data_file` each first); a failure to read them is a `ValueError`
    naming `argument` and the files."""
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise FileNotFoundError(f"{argument}: training file(s) not found: {missing}")
    builder, kwargs = _builder_for(files, argument)
    for file in files:
        check_data_file(file, builder, argument)
    named = " ".join(files) if len(files) <= 3 else f"{' '.join(files[:2])} ... ({len(files)} files)"
    with _readable(f"{argument} {named}"):
        return datasets.load_dataset(builder, data_files={split: files}, split=split, cache_dir=cache_dir, **kwargs)


def check_data_file(path: str | os.PathLike, builder: str, argument: str = "--train_file") -> None:
    """Check that a local training file can be what its suffix says, before `datasets` reads it: not empty, text
    files (`text`, `csv`, `json` builders) UTF-8 without NUL bytes, parquet files framed by the `PAR1` magic.
    Raises a `ValueError` naming the file and what is wrong with it.

    Example:

    ```python
    >>> import tempfile, pathlib
    >>> from hf_cir.training.data import check_data_file
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "captions.txt"
    >>> _ = path.write_bytes(b"a red car\\n\\xff\\xfe\\n")
    >>> check_data_file(path, "text")
    Traceback (most recent call last):
    ...
    ValueError: --train_file ...captions.txt is not UTF-8 text (invalid byte at offset 10); expected one caption per line.
    ```
    """
    path = Path(path)
    what = f"{argument} {path}"
    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"{what} is empty.")
    with open(path, "rb") as handle:
        if builder == "parquet":
            head = handle.read(4)
            handle.seek(max(size - 4, 0))
            if head != b"PAR1" or handle.read(4) != b"PAR1":
                raise ValueError(f"{what} is not a parquet file (no PAR1 magic at its start and end).")
            try:
                rows = pyarrow.parquet.ParquetFile(path).metadata.num_rows
            except (OSError, pyarrow.ArrowException) as error:
                raise ValueError(f"{what} is not a readable parquet file ({one_line(error)}).") from None
            if rows == 0:
                raise ValueError(f"{what} holds no rows.")
            return
        decoder = codecs.getincrementaldecoder("utf-8")()
        offset = 0
        while chunk := handle.read(1 << 20):
            position = chunk.find(b"\0")
            if position >= 0:
                raise ValueError(f"{what} holds a NUL byte at offset {offset + position}: binary data, not text.")
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as error:
                raise ValueError(
                    f"{what} is not UTF-8 text (invalid byte at offset {offset + error.start}); "
                    f"expected {_EXPECTED_CONTENT[builder]}."
                ) from None
            offset += len(chunk)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise ValueError(f"{what} is not UTF-8 text (it ends inside a character).") from None


_EXPECTED_CONTENT = {"text": "one caption per line", "csv": "comma- or tab-separated rows", "json": "JSON rows"}


@contextlib.contextmanager
def _readable(source: str):
    """Turn a `datasets` failure to read or parse the data into a `ValueError` naming `source` and the cause."""
    verbosity = datasets.logging.get_verbosity()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # its "Failed to read file" line: the error says it
    try:
        yield
    except (DatasetsError, pyarrow.ArrowException, UnicodeDecodeError) as error:
        cause = error
        while cause.__cause__ is not None or cause.__context__ is not None:
            cause = cause.__cause__ or cause.__context__
        if isinstance(error, FileNotFoundError):
            raise FileNotFoundError(f"{source}: {one_line(error)}") from error
        raise ValueError(f"{source} cannot be read as training data: {one_line(cause)}") from error
    finally:
        datasets.logging.set_verbosity(verbosity)


def require_columns(dataset: datasets.Dataset, columns: dict[str, str | None]) -> None:
    """Raise a `ValueError` listing the dataset's columns when a requested column is missing.

    `columns` maps the argument name (e.g. `"--text_column"`) to the column it names; `None` values are ignored.
    """
    for argument, column in columns.items():
        if column is not None and column not in dataset.column_names:
            raise ValueError(
                f"{argument} {column!r} is not a column of the training data; its columns are {dataset.column_names}."
            )


def filter_captions(
    dataset: datasets.Dataset, text_column: str, placeholder_token: str = "", num_proc: int | None = None
) -> tuple[datasets.Dataset, int]:
    """Drop rows whose caption is not a string or is empty after cleaning; return the kept dataset and the number
    of rows dropped.

    Example:

    ```python
    >>> import datasets
    >>> from hf_cir.training import filter_captions
    >>> kept, skipped = filter_captions(datasets.Dataset.from_dict({"text": ["a cat", None, " ", "$"]}), "text", "$")
    >>> list(kept["text"]), skipped
    (['a cat'], 3)

    ```
    """
    require_columns(dataset, {"--text_column": text_column})
    feature = dataset.features[text_column]
    if not (isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string", "null")):
        raise ValueError(
            f"--text_column {text_column!r} holds {_describe_feature(feature)} values; expected text (one caption per "
            "row)."
        )

    def keep(batch):
        return [bool(clean_caption(text, placeholder_token)) for text in batch[text_column]]

    before = len(dataset)
    kept = dataset.filter(keep, batched=True, num_proc=num_proc, desc="Dropping empty captions")
    if len(kept) == 0:
        raise ValueError(
            f"The training data has no usable caption: all {before} rows of --text_column {text_column!r} are empty "
            "or not text."
        )
    return kept, before - len(kept)


def _describe_feature(feature) -> str:
    return str(feature.dtype) if isinstance(feature, datasets.Value) else type(feature).__name__


def dataset_fingerprint(dataset) -> str:
    """The `datasets` fingerprint of `dataset` (what its cache files are keyed by).

    `datasets` has no public accessor for it; this is the one place hf-cir reads the private `_fingerprint`
    attribute, and `tests/training/test_training_library.py` fails loudly if a release renames it.
    """
    fingerprint = getattr(dataset, "_fingerprint", None)
    if not isinstance(fingerprint, str) or not fingerprint:
        raise RuntimeError(
            f"This datasets release has no `Dataset._fingerprint` (found {fingerprint!r}); hf-cir's caption masking "
            "keys its cache by it: please report this."
        )
    return fingerprint


def mask_caption_dataset(
    dataset: datasets.Dataset,
    masker: CaptionMasker,
    text_column: str = "text",
    num_proc: int | None = None,
    batch_size: int = 1000,
    load_from_cache_file: bool = True,
) -> tuple[datasets.Dataset, dict]:
    """Tokenize and keyword-mask every caption once, with a batched, multi-process, cached `datasets.map`.

    Returns the dataset with the `CaptionMasker` columns (other columns removed) and statistics: the number of
    captions, how many took the random-word fallback and how many the truncation fallback, and the extractor used.
    """
    require_columns(dataset, {"text_column": text_column})
    if len(dataset) == 0:
        raise ValueError("There are no captions to mask: the dataset has no rows.")
    masked = dataset.map(
        masker,
        batched=True,
        batch_size=batch_size,
        with_indices=True,
        fn_kwargs={"text_column": text_column},
        remove_columns=dataset.column_names,
        num_proc=num_proc,
        load_from_cache_file=load_from_cache_file,
        new_fingerprint=hashlib.sha256(
            f"{dataset_fingerprint(dataset)}/{text_column}/{masker.fingerprint()}".encode()
        ).hexdigest()[:32],
        desc=f"Masking keywords ({masker.extractor_name})",
    )
    fallbacks = masked["mask_fallback"]
    stats = {
        "num_captions": len(masked),
        "random_word_fallbacks": sum(1 for f in fallbacks if f == MASK_FALLBACK_RANDOM_WORD),
        "template_fallbacks": sum(1 for f in fallbacks if f == MASK_FALLBACK_TEMPLATE),
        "keyword_extractor": masker.extractor_name,
        "masking_policy": masker.masking_policy,
        "mask_unit": masker.mask_unit,
    }
    return masked, stats


class IndexStream:
    """An endless, deterministic stream of dataset indices: epoch after epoch, each a fresh seeded permutation.

    The `k`-th index drawn depends only on `(num_items, seed, k)`, so a run resumed at any position reads exactly
    the examples an uninterrupted run would, and every process can compute the global batch and take its own slice
    (process `r` of `n` takes rows `r * b : (r + 1) * b` of a global batch of `n * b`), which keeps a 2-process run on
    the same data as a 1-process run with the same global batch.

    Example:

    ```python
    >>> from hf_cir.training import IndexStream
    >>> stream = IndexStream(5, seed=0)
    >>> first = stream.take(4) + stream.take(4)
    >>> resumed = IndexStream(5, seed=0, position=4).take(4)
    >>> first[4:] == resumed and sorted(first[:5]) == [0, 1, 2, 3, 4]
    True

    ```
    """

    def __init__(self, num_items: int, seed: int = 0, position: int = 0, shuffle: bool = True):
        if num_items < 1:
            raise ValueError("IndexStream needs at least one item.")
        self.num_items = num_items
        self.seed = seed
        self.position = position
        self.shuffle = shuffle
        self._epoch, self._order = None, None

    def _permutation(self, epoch: int) -> list[int]:
        if self._epoch != epoch:
            if self.shuffle:
                generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
                self._order = torch.randperm(self.num_items, generator=generator).tolist()
            else:
                self._order = list(range(self.num_items))
            self._epoch = epoch
        return self._order

    @property
    def epoch(self) -> int:
        return self.position // self.num_items

    def take(self, count: int) -> list[int]:
        """The next `count` indices (a batch may run across an epoch boundary)."""
        indices = []
        while len(indices) < count:
            epoch, offset = divmod(self.position, self.num_items)
            chunk = self._permutation(epoch)[offset : offset + count - len(indices)]
            indices += chunk
            self.position += len(chunk)
        return indices
