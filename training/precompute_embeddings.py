#!/usr/bin/env python
# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""Embed images and texts once with CompoDiff's CLIP encoders, so that prior training never runs CLIP.

    accelerate launch training/precompute_embeddings.py --task t2i \\
        --dataset_name my/image-captions --image_column image --text_column caption \\
        --pipeline_name_or_path path/to/compodiff-pipeline --output_dir embeddings/t2i

The output folder (`embeddings_info.json`, `null_text_embeds.safetensors`, parquet chunks under `data/`) is the
format `training/train_compodiff.py --train_data` reads (training/README.md). The work runs on hf-cir's embedding
engine (`hf_cir.utils.units.run_units`, as `hf-cir index`): chunks are split across processes (chunk `c` goes
to process `c mod N`), images are opened and preprocessed in `--dataloader_num_workers` DataLoader workers, each
chunk is written atomically, and chunks already written are skipped, so an interrupted run continues where it
stopped.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import datasets
import torch
from accelerate.logging import get_logger
from safetensors.torch import save
from transformers import AutoImageProcessor, AutoTokenizer, CLIPTextModel, CLIPVisionModelWithProjection

from hf_cir.pipelines.compodiff import preprocess_mask
from hf_cir.training import (
    TrainingArgumentParser,
    add_accelerator_arguments,
    add_dataset_arguments,
    build_accelerator,
    check_dataset_arguments,
    load_pretrained,
    load_training_dataset,
    mixed_precision_dtype,
    require_columns,
    run_training_script,
)
from hf_cir.training.embeddings import (
    EMBEDDINGS_DATA_DIR,
    EMBEDDINGS_INFO_NAME,
    NULL_TEXT_EMBEDS_NAME,
)
from hf_cir.training.outputs import RUN_FILE_NAME, check_foreign_entries, claim_outputs, read_run_record, record_run
from hf_cir.utils import atomic_file, load_image
from hf_cir.utils.units import ProcessGroup, UnitWork, run_units

logger = get_logger(__name__, log_level="INFO")


def parse_args(input_args=None):
    parser = TrainingArgumentParser(
        prog="precompute_embeddings.py", description="Precompute CLIP embeddings for CompoDiff prior training."
    )
    parser.add_argument("--task", required=True, choices=["t2i", "triplet", "masked"])
    add_dataset_arguments(parser)
    parser.add_argument("--image_root", type=str, default=None, help="Folder that relative image paths start from.")
    parser.add_argument("--text_column", type=str, default="text", help="Caption (t2i, masked) or modification text.")
    parser.add_argument("--image_column", type=str, default="image", help="The image (t2i, masked).")
    parser.add_argument("--reference_image_column", type=str, default="reference_image", help="Triplets.")
    parser.add_argument("--target_image_column", type=str, default="target_image", help="Triplets.")
    parser.add_argument("--reverse_text_column", type=str, default=None, help="Triplets: target -> reference text.")
    parser.add_argument("--mask_column", type=str, default="mask", help="Masked examples: single-channel mask images.")
    parser.add_argument("--mask_size", type=int, default=64, help="The prior's mask side.")
    parser.add_argument(
        "--pipeline_name_or_path", type=str, default=None, help="Take the encoders from this pipeline."
    )
    parser.add_argument("--text_encoder_name_or_path", type=str, default=None)
    parser.add_argument("--image_encoder_name_or_path", type=str, default=None)
    parser.add_argument("--tokenizer_name_or_path", type=str, default=None, help="Defaults to the text encoder's.")
    parser.add_argument(
        "--image_processor_name_or_path", type=str, default=None, help="Defaults to the image encoder's."
    )
    parser.add_argument("--output_dir", type=str, required=True)
    parser.add_argument(
        "--overwrite_output_dir",
        action="store_true",
        help="Remove the embeddings of an earlier run with other settings from --output_dir (only those files).",
    )
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument(
        "--dataloader_num_workers", type=int, default=0, help="DataLoader workers that open and preprocess images."
    )
    parser.add_argument(
        "--chunk_size", type=int, default=1024, help="Rows per parquet chunk (the unit of resumption)."
    )
    parser.add_argument("--max_samples", type=int, default=None)
    parser.add_argument("--embedding_dtype", type=str, default="float32", choices=["float32", "float16"])
    add_accelerator_arguments(parser)
    args = parser.parse_args(input_args)
    check_dataset_arguments(parser, args)
    if args.pipeline_name_or_path is None and (
        args.text_encoder_name_or_path is None or args.image_encoder_name_or_path is None
    ):
        parser.error(
            "pass --pipeline_name_or_path, or both --text_encoder_name_or_path and --image_encoder_name_or_path."
        )
    for name in ("batch_size", "chunk_size", "mask_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1.")
    if args.dataloader_num_workers < 0:
        parser.error("--dataloader_num_workers must be >= 0.")
    return args


def encoder_sources(args) -> dict[str, tuple[str, str | None]]:
    """(name or path, subfolder) of each encoder component."""
    if args.pipeline_name_or_path is not None:
        base = args.pipeline_name_or_path
        return {
            "text_encoder": (
                args.text_encoder_name_or_path or base,
                None if args.text_encoder_name_or_path else "text_encoder",
            ),
            "tokenizer": (args.tokenizer_name_or_path or base, None if args.tokenizer_name_or_path else "tokenizer"),
            "image_encoder": (
                args.image_encoder_name_or_path or base,
                None if args.image_encoder_name_or_path else "image_encoder",
            ),
            "image_processor": (
                args.image_processor_name_or_path or base,
                None if args.image_processor_name_or_path else "image_processor",
            ),
        }
    return {
        "text_encoder": (args.text_encoder_name_or_path, None),
        "tokenizer": (args.tokenizer_name_or_path or args.text_encoder_name_or_path, None),
        "image_encoder": (args.image_encoder_name_or_path, None),
        "image_processor": (args.image_processor_name_or_path or args.image_encoder_name_or_path, None),
    }


def task_columns(args) -> dict[str, str]:
    if args.task == "triplet":
        columns = {
            "--reference_image_column": args.reference_image_column,
            "--target_image_column": args.target_image_column,
        }
        if args.reverse_text_column:
            columns["--reverse_text_column"] = args.reverse_text_column
    elif args.task == "masked":
        columns = {"--image_column": args.image_column, "--mask_column": args.mask_column}
    else:
        columns = {"--image_column": args.image_column}
    return {"--text_column": args.text_column, **columns}


def open_image(value, root: str | None, name: str, mode: str | None = "RGB"):
    """A PIL image from a datasets Image value, a `{"bytes", "path"}` dict, or a path (relative to `root`)."""
    import io

    from PIL import Image

    if isinstance(value, dict):
        if value.get("bytes"):
            value = Image.open(io.BytesIO(value["bytes"]))
        else:
            value = value.get("path")
    if isinstance(value, str) and root is not None and not os.path.isabs(value):
        value = os.path.join(root, value)
    if mode is None:  # masks keep their single channel
        if isinstance(value, str):
            if not os.path.isfile(value):
                raise FileNotFoundError(f"{name}: no such file {value}")
            with Image.open(value) as handle:
                handle.load()
                return handle.copy()
        return value
    return load_image(value, name=name)


class Encoders:
    def __init__(self, args, device, dtype):
        sources = encoder_sources(args)
        self.tokenizer = load_pretrained(AutoTokenizer, sources["tokenizer"])
        self.image_processor = load_pretrained(AutoImageProcessor, sources["image_processor"])
        self.text_encoder = load_pretrained(CLIPTextModel, sources["text_encoder"], dtype=dtype).to(device).eval()
        self.image_encoder = (
            load_pretrained(CLIPVisionModelWithProjection, sources["image_encoder"], dtype=dtype).to(device).eval()
        )
        self.device, self.dtype = device, dtype

    @torch.no_grad()
    def texts(self, texts: list[str]) -> torch.Tensor:
        """The text encoder's last hidden state over all positions, padded to the context, with each text's own
        attention mask (as `CompoDiffPipeline.encode_prompt`)."""
        tokens = self.tokenizer(
            texts,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        output = self.text_encoder(
            input_ids=tokens.input_ids.to(self.device), attention_mask=tokens.attention_mask.to(self.device)
        )
        return output.last_hidden_state.float().cpu()

    @torch.no_grad()
    def pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pixel_values = pixel_values.to(self.device, self.image_encoder.dtype)
        return self.image_encoder(pixel_values=pixel_values).image_embeds.float().cpu()

    def images(self, images) -> torch.Tensor:
        return self.pixels(self.image_processor(images=images, return_tensors="pt").pixel_values)


def prepare_row(args, row: dict, number: int, image_processor) -> dict[str, torch.Tensor]:
    """The pixel values (and masks) of one dataset row; runs in the DataLoader workers."""

    def pixels(column: str, what: str = "") -> torch.Tensor:
        image = open_image(row[column], args.image_root, f"row {number}{what}")
        return image_processor(images=[image], return_tensors="pt").pixel_values[0]

    if args.task == "t2i":
        return {"target": pixels(args.image_column)}
    if args.task == "triplet":
        return {"reference": pixels(args.reference_image_column), "target": pixels(args.target_image_column)}
    image = open_image(row[args.image_column], args.image_root, f"row {number}")
    mask = open_image(row[args.mask_column], args.image_root, f"row {number} mask", mode=None)
    if image.size != mask.size:
        raise ValueError(f"Row {number}: the mask has size {mask.size} but its image {image.size}.")
    grid, small = preprocess_mask([mask], image_processor, args.mask_size)
    pixel_values = image_processor(images=[image], return_tensors="pt").pixel_values[0]
    return {"target": pixel_values, "grid": grid[0], "mask": small[0]}


def check_texts(args, texts: list, start: int) -> None:
    bad = [start + i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise ValueError(f"--text_column {args.text_column!r}: rows {bad[:10]} are not strings.")


def embed_rows(args, encoders: Encoders, texts: dict[str, list], prepared: list[dict], start: int) -> dict[str, list]:
    """The columns of consecutive rows from `start`: their texts and prepared images, encoded."""
    text = texts[args.text_column]
    out = {"id": list(range(start, start + len(text))), "task": [args.task] * len(text)}
    out["text_embeds"] = encoders.texts(text)

    def stack(key: str) -> torch.Tensor:
        return torch.stack([row[key] for row in prepared])

    if args.task == "t2i":
        out["target_image_embeds"] = encoders.pixels(stack("target"))
    elif args.task == "triplet":
        out["reference_image_embeds"] = encoders.pixels(stack("reference"))
        out["target_image_embeds"] = encoders.pixels(stack("target"))
        if args.reverse_text_column:
            out["reverse_text_embeds"] = encoders.texts(texts[args.reverse_text_column])
    else:
        pixel_values = stack("target")
        out["target_image_embeds"] = encoders.pixels(pixel_values)
        out["reference_image_embeds"] = encoders.pixels(pixel_values * (1.0 - stack("grid")))  # masked region zeroed
        out["mask"] = stack("mask").to(torch.uint8)
    return out


def prepare_dataset_row(args, dataset: datasets.Dataset, image_processor, row: int) -> dict[str, torch.Tensor]:
    """Row `row` of `dataset` prepared in a DataLoader worker (what `EmbeddingChunks.preparer` sends there)."""
    return prepare_row(args, dataset[row], row, image_processor)


class EmbeddingChunks(UnitWork):
    """The engine's unit work of this script: unit `c` is rows `c * chunk_size ...`, written as
    `data/chunk-{c:06d}.parquet` (the chunk file itself commits it)."""

    def __init__(self, args, dataset: datasets.Dataset, encoders: Encoders, data_dir: Path):
        self.args, self.dataset, self.encoders, self.data_dir = args, dataset, encoders, data_dir
        self.image_processor = encoders.image_processor
        self.text_columns = [args.text_column] + (
            [args.reverse_text_column] if args.task == "triplet" and args.reverse_text_column else []
        )

    def path(self, chunk: int) -> Path:
        return self.data_dir / f"chunk-{chunk:06d}.parquet"

    def num_units(self) -> int:
        return -(-len(self.dataset) // self.args.chunk_size)

    def rows(self, chunk: int) -> list[int]:
        size = self.args.chunk_size
        return list(range(chunk * size, min((chunk + 1) * size, len(self.dataset))))

    def iter_units(self, wanted):
        for chunk in range(self.num_units()):
            yield chunk, (self.rows(chunk) if wanted(chunk) else None)

    def committed(self, chunk: int) -> dict | None:
        return {} if self.path(chunk).is_file() else None

    def preparer(self):
        return functools.partial(prepare_dataset_row, self.args, self.dataset, self.image_processor)

    def compute(self, chunk, rows, batch):
        start = rows[batch[0][0]]
        texts = self.dataset.select_columns(self.text_columns)[start : start + len(batch)]
        check_texts(self.args, texts[self.args.text_column], start)
        for _, _, error in batch:
            if error is not None:
                raise error  # the row's own error (an image that is missing, unreadable, of the wrong size)
        return embed_rows(self.args, self.encoders, texts, [value for _, value, _ in batch], start)

    def write(self, chunk, rows, parts) -> dict:
        columns = {
            key: torch.cat([p[key] for p in parts])
            if isinstance(parts[0][key], torch.Tensor)
            else sum((p[key] for p in parts), [])
            for key in parts[0]
        }
        spec = features(self.args, columns["text_embeds"].shape[1:], columns["target_image_embeds"].shape[1])
        write_chunk(self.path(chunk), columns, spec, self.args.embedding_dtype)
        logger.info(f"chunk {chunk + 1}/{self.num_units()}: rows {rows[0]}-{rows[-1]}", main_process_only=False)
        return {}


def features(args, text_shape, embedding_dim) -> datasets.Features:
    float_type = args.embedding_dtype
    spec = {
        "id": datasets.Value("int64"),
        "task": datasets.Value("string"),
        "text_embeds": datasets.Array2D(shape=tuple(text_shape), dtype=float_type),
        "target_image_embeds": datasets.Sequence(datasets.Value(float_type), length=embedding_dim),
    }
    if args.task in ("triplet", "masked"):
        spec["reference_image_embeds"] = datasets.Sequence(datasets.Value(float_type), length=embedding_dim)
    if args.task == "triplet" and args.reverse_text_column:
        spec["reverse_text_embeds"] = datasets.Array2D(shape=tuple(text_shape), dtype=float_type)
    if args.task == "masked":
        spec["mask"] = datasets.Array2D(shape=(args.mask_size, args.mask_size), dtype="uint8")
    return datasets.Features(spec)


def write_chunk(path: Path, columns: dict, feature_spec: datasets.Features, dtype: str) -> None:
    numpy_columns = {
        key: (value.numpy().astype(dtype) if value.is_floating_point() else value.numpy())
        if isinstance(value, torch.Tensor)
        else value
        for key, value in columns.items()
    }
    chunk = datasets.Dataset.from_dict(numpy_columns, features=feature_spec)
    with atomic_file(path, "wb") as handle:  # the chunk file commits its unit: never seen half written
        chunk.to_parquet(handle)


def run_identity(args) -> dict:
    keys = ("task", "dataset_name", "dataset_config_name", "train_file", "dataset_split", "text_column", "image_column",
            "reference_image_column", "target_image_column", "reverse_text_column", "mask_column", "mask_size",
            "pipeline_name_or_path", "text_encoder_name_or_path", "image_encoder_name_or_path", "tokenizer_name_or_path",
            "image_processor_name_or_path", "chunk_size", "max_samples", "embedding_dtype")  # fmt: skip
    return {key: getattr(args, key) for key in keys}


def load_dataset_from_args(args) -> datasets.Dataset:
    """The dataset through `datasets` itself: `load_from_disk` for a saved dataset, `load_dataset(folder)` for any
    other folder (an image folder with `metadata.jsonl` keeps its `image` column), the files' builder, or the Hub."""
    from hf_cir.retrieval.sources import load_image_dataset

    if args.dataset_config_name is not None or (args.train_file and Path(args.train_file[0]).suffix == ".txt"):
        return load_training_dataset(
            args.dataset_name, args.train_file, args.dataset_config_name, args.dataset_split, args.cache_dir
        )
    return load_image_dataset(args.dataset_name or args.train_file, split=args.dataset_split, cache_dir=args.cache_dir)


# The top-level entries of --output_dir this script writes; nothing else there is ever replaced or deleted.
OUTPUT_ENTRIES = (RUN_FILE_NAME, EMBEDDINGS_DATA_DIR, EMBEDDINGS_INFO_NAME, NULL_TEXT_EMBEDS_NAME)
SCRIPT_NAME = "precompute_embeddings.py"
# Before the ownership record, this script recorded its run in this file (adopted as the record on the next run).
LEGACY_RUN_NAME = "precompute_run.json"


def _adopt_legacy_record(output_dir: Path) -> None:
    """Take an earlier version's `precompute_run.json` (the run's settings, written by this script) as the
    `training_run.json` record: its folder's entries named like this script's outputs are then its own (the old file
    is left in place)."""
    legacy = output_dir / LEGACY_RUN_NAME
    if (output_dir / RUN_FILE_NAME).exists() or not legacy.is_file() or legacy.is_symlink():
        return
    try:
        settings = json.loads(legacy.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if isinstance(settings, dict) and "task" in settings and "chunk_size" in settings:
        with atomic_file(output_dir / RUN_FILE_NAME, "w") as handle:
            json.dump({"script": SCRIPT_NAME, **settings}, handle, indent=2, sort_keys=True)


def prepare_output_dir(output_dir: Path, identity: dict, overwrite: bool) -> None:
    """Claim `output_dir` for this run (`hf_cir.training.outputs`: only entries hf-cir wrote are replaced).

    A file or folder of this script's names (`OUTPUT_ENTRIES`) that hf-cir did not write stops the run before anything
    is written, with a `FileExistsError` naming it; the folder's other files are never touched. Chunks of a run with
    other settings are kept (and the run refused) unless `overwrite`; a run that wrote no chunk (it failed early)
    never blocks the next one; a rerun with the same settings resumes.
    """
    identity = {"script": SCRIPT_NAME, **identity}
    may_write = frozenset(OUTPUT_ENTRIES).__contains__
    if output_dir.is_dir():
        _adopt_legacy_record(output_dir)
    check_foreign_entries(output_dir, may_write)
    previous = read_run_record(output_dir)
    if previous is not None and previous.get("script") != SCRIPT_NAME:
        raise FileExistsError(
            f"--output_dir {output_dir} holds the outputs of {previous['script']}, not of {SCRIPT_NAME}; choose "
            "another --output_dir."
        )
    data_dir = output_dir / EMBEDDINGS_DATA_DIR
    chunks = sorted(data_dir.glob("chunk-*.parquet")) if data_dir.is_dir() else []
    recorded = {key: previous.get(key) for key in identity} if previous is not None else None
    if recorded is not None and recorded != json.loads(json.dumps(identity)) and chunks:
        if not overwrite:
            raise ValueError(
                f"--output_dir {output_dir} holds {len(chunks)} embedding chunk(s) of a run with other settings "
                f"({output_dir / RUN_FILE_NAME}); pass --overwrite_output_dir to replace them, or choose another "
                "--output_dir."
            )
        for path in chunks:  # the data folder is ours (checked above)
            path.unlink()
        for name in (EMBEDDINGS_INFO_NAME, NULL_TEXT_EMBEDS_NAME):
            (output_dir / name).unlink(missing_ok=True)
    record_run(output_dir, identity, may_write)
    claim_outputs(output_dir, OUTPUT_ENTRIES[1:])
    data_dir.mkdir(parents=True, exist_ok=True)


def main(args):
    accelerator = build_accelerator(args, tracking=False)
    output_dir = Path(args.output_dir)
    data_dir = output_dir / EMBEDDINGS_DATA_DIR
    if accelerator.is_main_process:
        prepare_output_dir(output_dir, run_identity(args), args.overwrite_output_dir)
    accelerator.wait_for_everyone()

    with accelerator.main_process_first():
        dataset = load_dataset_from_args(args)
    require_columns(dataset, task_columns(args))
    if args.max_samples is not None:
        dataset = dataset.select(range(min(args.max_samples, len(dataset))))
    if len(dataset) == 0:
        raise ValueError("The dataset is empty.")

    dtype = mixed_precision_dtype(accelerator.mixed_precision)
    encoders = Encoders(args, accelerator.device, dtype)
    work = EmbeddingChunks(args, dataset, encoders, data_dir)
    num_chunks = work.num_units()
    run = run_units(work, ProcessGroup(), batch_size=args.batch_size, num_workers=args.dataloader_num_workers)
    logger.info(
        f"process {accelerator.process_index}: {len(run.written)} chunks written, {len(run.reused)} already done",
        main_process_only=False,
    )

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        null_text = encoders.texts([""])
        with atomic_file(output_dir / NULL_TEXT_EMBEDS_NAME, "wb") as handle:
            handle.write(save({"null_text_embeds": null_text.contiguous()}))
        sources = encoder_sources(args)
        info = {
            "task": args.task,
            "num_rows": len(dataset),
            "num_chunks": num_chunks,
            "embedding_dim": encoders.image_encoder.config.projection_dim,
            "text_embed_dim": encoders.text_encoder.config.hidden_size,
            "text_length": int(null_text.shape[1]),
            "mask_size": args.mask_size if args.task == "masked" else None,
            "embedding_dtype": args.embedding_dtype,
            "null_text_embeds": NULL_TEXT_EMBEDS_NAME,
            **{
                name: {
                    "name_or_path": str(Path(src[0]).resolve()) if Path(src[0]).exists() else src[0],
                    "subfolder": src[1],
                }
                for name, src in sources.items()
            },
        }
        with atomic_file(output_dir / EMBEDDINGS_INFO_NAME, "w") as handle:
            json.dump(info, handle, indent=2)
    accelerator.end_training()


if __name__ == "__main__":
    sys.exit(run_training_script(main, parse_args, prog="precompute_embeddings.py"))
