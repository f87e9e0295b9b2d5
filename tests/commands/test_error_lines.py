"""The CLI's error boundary: every subcommand, fed bad input, ends with exit status 2 and ONE stderr line
`hf-cir <command>: error: ...` naming what is wrong, and no traceback.

Each case is `(id, command, setup)`: `setup(ctx)` writes whatever bad input the case needs into the case's own
folder and returns `(argv, fragments)`, the fragments being what the error line must name (the argument, the file,
the entry).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from .conftest import assert_error_line, edit_index, run_cli, snapshot

NO_PROGRESS = "--no-progress"


def _index_args(ctx, *extra):
    return ["search", "--index", ctx.index, *extra, NO_PROGRESS]


def _crafted(ctx, **changes):
    return edit_index(ctx.index, **changes)


def _embeddings(ctx, tensor):
    save_file({"embeddings": tensor}, str(ctx.index / "embeddings.safetensors"))


def _bomb(ctx) -> Path:
    path = ctx.root / "bomb.png"
    Image.new("1", (20000, 20000)).save(path)  # 400 MP: PIL refuses it as a decompression bomb
    return path


def _malicious_pickle(ctx) -> Path:
    class Exploit:
        def __reduce__(self):
            return (Path.write_text, (ctx.root / "pwned.txt", "code ran"))

    path = ctx.root / "phi.pt"
    path.write_bytes(pickle.dumps({"Phi": Exploit()}))
    return path


def _file(ctx, name: str, data: bytes) -> Path:
    path = ctx.root / name
    path.write_bytes(data)
    return path


# A safetensors file whose header claims a terabyte of JSON (8-byte little-endian length, then the JSON).
LYING_SAFETENSORS = (10**12).to_bytes(8, "little") + b"{}"
REFERENCE_COMPODIFF = (
    Path(__file__).resolve().parents[1] / "fixtures" / "reference" / "compodiff" / "reference_checkpoint"
)


def _convert(ctx, method, checkpoint_flag, checkpoint, *extra):
    """`hf-cir convert METHOD` with a checkpoint and the toy CLIP as every encoder (unless `extra` overrides)."""
    encoders = (
        ["--clip", ctx.clip] if method != "compodiff" else ["--text-encoder", ctx.clip, "--image-encoder", ctx.clip]
    )
    return ["convert", method, checkpoint_flag, checkpoint, *encoders, *extra, "--output-dir", ctx.root / "out"]


def _benchmark(ctx, name, edit=None):
    from evaluation.conftest import build_circo, build_cirr, build_fashioniq, build_genecis

    builders = {"cirr": build_cirr, "circo": build_circo, "fashioniq": build_fashioniq, "genecis": build_genecis}
    root = builders[name](ctx.root / name)
    if edit is not None:
        relative, change = edit
        path = root / relative
        path.write_text(json.dumps(change(json.loads(path.read_text()))))
    return root


def _drop(entries, index, *keys):
    target = entries[index]
    for key in keys[:-1]:
        target = target[key]
    del target[keys[-1]]
    return entries


def _set(entries, index, key, value):
    entries[index][key] = value
    return entries


def _parquet(ctx, name: str, rows: int = 2, image: bool = True) -> Path:
    """A Parquet dataset with `rows` rows: a caption column, and an image column unless `image` is false."""
    import datasets

    columns = {"caption": datasets.Value("string")} | ({"image": datasets.Image()} if image else {})
    data = {"caption": [f"photo {i}" for i in range(rows)]}
    if image:
        data["image"] = [{"bytes": (ctx.photos / "red.png").read_bytes(), "path": "red.png"}] * rows
    path = ctx.root / name
    datasets.Dataset.from_dict(data, features=datasets.Features(columns)).to_parquet(str(path))
    return path


def _tar(ctx, *names: str) -> Path:
    """A webdataset shard whose members are `names`, each holding the bytes of red.png."""
    import io
    import tarfile

    path = ctx.root / "shards" / "00000.tar"
    path.parent.mkdir(exist_ok=True)
    data = (ctx.photos / "red.png").read_bytes()
    with tarfile.open(path, "w") as archive:
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def _v2(ctx, damage=None) -> Path:
    """A format-2 copy of the toy index in four one-row shards, with `damage(folder)` applied (a crafted index)."""
    from hf_cir.retrieval import GalleryIndex

    folder = ctx.root / "v2.index"
    GalleryIndex.load(ctx.toy_index).save(folder, shard_size=1)
    if damage is not None:
        damage(folder)
    return folder


def _v2_search(ctx, damage=None) -> list:
    return ["search", "--index", _v2(ctx, damage), "--text", "make it blue", NO_PROGRESS]


def _v2_int64_shard(folder: Path) -> None:
    import numpy as np

    shard = folder / "embeddings" / "000002.npy"
    np.save(shard, (np.load(shard) * 100).astype(np.int64))


def _v2_integer_column(folder: Path, column: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = folder / "metadata" / "000001.parquet"
    table = pq.read_table(path)
    pq.write_table(table.set_column(table.column_names.index(column), column, pa.array([7])), path)


def _v2_linked_shard(folder: Path, target: Path) -> None:
    (folder / "embeddings" / "000001.npy").unlink()
    (folder / "embeddings" / "000001.npy").symlink_to(target)


def _v2_fifo_shard(folder: Path) -> None:
    import os

    (folder / "embeddings" / "000002.npy").unlink()
    os.mkfifo(folder / "embeddings" / "000002.npy")


def _v2_truncated_shard(folder: Path) -> None:
    shard = folder / "embeddings" / "000001.npy"
    shard.write_bytes(shard.read_bytes()[:-16])


def _v2_other_dimension_faiss(folder: Path) -> None:
    from hf_cir.retrieval.compressed import CompressedIndex, plan_compressed_index

    vectors = torch.nn.functional.normalize(torch.randn(1000, 32, generator=torch.Generator().manual_seed(0)), dim=-1)
    CompressedIndex.build(vectors, plan_compressed_index(1000, 32, m=16)).save(folder / "faiss.index")
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps(dict(manifest, faiss={"kind": "ivf-pq", "file": "faiss.index"})))


def _locked(ctx, output: Path) -> Path:
    """Hold the build lock of `output` as another running `hf-cir index` would (released with the case)."""
    import fcntl

    ctx.lock = open(output.with_name(f".{output.name}.lock"), "w")  # closed by the `ctx` fixture
    ctx.lock.write("4242\n")
    ctx.lock.flush()
    fcntl.flock(ctx.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return output


CASES = [
    # -- index ------------------------------------------------------------------------------------------------------
    (
        "index-missing-images",
        "index",
        lambda c: (
            ["index", "--model", c.lincir, "--images", c.root / "nope", "--output", c.root / "o"],
            ["--images", "nope"],
        ),
    ),
    (
        "index-images-is-a-file",
        "index",
        lambda c: (
            ["index", "--model", c.lincir, "--images", c.photos / "red.png", "--output", c.root / "o"],
            ["red.png"],
        ),
    ),
    (
        "index-model-missing",
        "index",
        lambda c: (
            ["index", "--model", c.root / "no_model", "--images", c.photos, "--output", c.root / "o"],
            ["no_model"],
        ),
    ),
    (
        "index-model-is-not-a-model",
        "index",
        lambda c: (
            ["index", "--model", c.photos, "--images", c.photos, "--output", c.root / "o"],
            ["photos", "LinCIR"],
        ),
    ),
    (
        "index-model-corrupt-config",
        "index",
        lambda c: (
            (
                (c.root / "broken").mkdir() or (c.root / "broken" / "config.json").write_text("{"),
                ["index", "--model", c.root / "broken", "--images", c.photos, "--output", c.root / "o"],
            )[1:]
            + (["config.json"],)
        ),
    ),
    (
        "index-output-exists",
        "index",
        lambda c: (
            ["index", "--model", c.lincir, "--images", c.photos, "--output", c.index],
            ["--output", "--overwrite"],
        ),
    ),
    (
        "index-overwrite-images-folder",
        "index",
        lambda c: (
            ["index", "--model", c.lincir, "--images", c.photos, "--output", c.photos, "--overwrite"],
            ["photos", "--images"],
        ),
    ),
    (
        "index-overwrite-parent-of-images",
        "index",
        lambda c: (
            ["index", "--model", c.lincir, "--images", c.photos, "--output", c.root, "--overwrite"],
            [str(c.root), "contains"],
        ),
    ),
    (
        "index-overwrite-foreign-folder",
        "index",
        lambda c: (
            ["index", "--model", c.lincir, "--images", c.photos, "--output", c.root / "thesis", "--overwrite"],
            ["thesis", "not an hf-cir index"],
        ),
    ),
    (
        "index-overwrite-index-with-foreign-file",
        "index",
        lambda c: (
            (
                (c.index / "notes.docx").write_text("mine"),
                ["index", "--model", c.lincir, "--images", c.photos, "--output", c.index, "--overwrite"],
            )[1:]
            + (["notes.docx"],)
        ),
    ),
    (
        "index-output-is-a-file",
        "index",
        lambda c: (
            [
                "index",
                "--model",
                c.lincir,
                "--images",
                c.photos,
                "--output",
                c.root / "thesis" / "thesis.docx",
                "--overwrite",
            ],
            ["thesis.docx", "a file"],
        ),
    ),
    (
        "index-batch-size-zero",
        "index",
        lambda c: (
            ["index", "--model", c.lincir, "--images", c.photos, "--output", c.root / "o", "--batch-size", 0],
            ["--batch-size"],
        ),
    ),
    (
        "index-save-every-zero",
        "index",
        lambda c: (
            ["index", "--model", c.lincir, "--images", c.photos, "--output", c.root / "o", "--save-every", 0],
            ["--save-every"],
        ),
    ),
    (
        "index-sampling-option-does-not-apply",
        "index",
        lambda c: (
            ["index", "--model", c.lincir, "--images", c.photos, "--output", c.root / "o", "--num-inference-steps", 3],
            ["--num-inference-steps", "do not apply"],
        ),
    ),
    (
        "index-no-readable-image",
        "index",
        lambda c: (
            (
                (c.root / "texts").mkdir() or (c.root / "texts" / "a.txt").write_text("x"),
                ["index", "--model", c.lincir, "--images", c.root / "texts", "--output", c.root / "o", NO_PROGRESS],
            )[1:]
            + (["no readable image"],)
        ),
    ),
    (
        "index-foreign-partial-folder",
        "index",
        lambda c: (
            (
                (c.root / "o.partial").mkdir() or (c.root / "o.partial" / "diary.txt").write_text("x"),
                ["index", "--model", c.lincir, "--images", c.photos, "--output", c.root / "o"],
            )[1:]
            + (["o.partial"],)
        ),
    ),
    (
        "index-dataset-missing-image-column",
        "index",
        lambda c: (
            [
                "index",
                "--model",
                c.lincir,
                "--dataset",
                _parquet(c, "captions.parquet", image=False),
                "--output",
                c.root / "o",
                NO_PROGRESS,
            ],
            ["image_column", "caption"],
        ),  # fmt: skip
    ),
    (
        "index-streaming-missing-image-column",
        "index",
        lambda c: (
            [
                "index",
                "--model",
                c.lincir,
                "--dataset",
                _parquet(c, "captions.parquet", image=False),
                "--streaming",
                "--output",
                c.root / "o",
                NO_PROGRESS,
            ],
            ["image_column", "caption"],
        ),  # fmt: skip
    ),
    (
        "index-streaming-no-rows",
        "index",
        lambda c: (
            [
                "index",
                "--model",
                c.lincir,
                "--dataset",
                _parquet(c, "empty.parquet", rows=0),
                "--streaming",
                "--output",
                c.root / "o",
                NO_PROGRESS,
            ],
            ["`dataset`", "empty.parquet", "has no rows"],
        ),  # fmt: skip
    ),
    (
        "index-streaming-without-dataset",
        "index",
        lambda c: (
            ["index", "--model", c.lincir, "--images", c.photos, "--streaming", "--output", c.root / "o"],
            ["--streaming", "--dataset"],
        ),
    ),
    (
        "index-usage-missing-model",
        "index",
        lambda c: (["index", "--images", c.photos, "--output", c.root / "o"], ["--model"]),
    ),
    (
        "index-usage-bad-choice",
        "index",
        lambda c: (
            ["index", "--model", c.lincir, "--images", c.photos, "--output", c.root / "o", "--faiss", "xyz"],
            ["--faiss"],
        ),
    ),
    (
        "index-usage-bad-integer",
        "index",
        lambda c: (
            ["index", "--model", c.lincir, "--images", c.photos, "--output", c.root / "o", "--batch-size", "many"],
            ["--batch-size"],
        ),
    ),
    (
        "index-webdataset-member-climbs-out",
        "index",
        lambda c: (
            [
                "index",
                "--model",
                c.lincir,
                "--webdataset",
                _tar(c, "a.png", "../../outside/secret.png"),
                "--output",
                c.root / "o",
                NO_PROGRESS,
            ],
            ["`webdataset`", "00000.tar", "../../outside/secret.png", "'..' component"],
        ),  # fmt: skip
    ),
    (
        "index-webdataset-absolute-member",
        "index",
        lambda c: (
            [
                "index",
                "--model",
                c.lincir,
                "--webdataset",
                _tar(c, "/etc/hostname.png"),
                "--output",
                c.root / "o",
                NO_PROGRESS,
            ],
            ["`webdataset`", "00000.tar", "/etc/hostname.png", "absolute"],
        ),  # fmt: skip
    ),
    (
        "index-webdataset-repeated-key",
        "index",
        lambda c: (
            [
                "index",
                "--model",
                c.lincir,
                "--webdataset",
                _tar(c, "a.png", "b.png", "a.png"),
                "--output",
                c.root / "o",
                NO_PROGRESS,
            ],
            ["`webdataset`", "00000.tar", "repeats the sample key 'a'"],
        ),  # fmt: skip
    ),
    (
        "index-dataset-zero-rows",
        "index",
        lambda c: (
            [
                "index",
                "--model",
                c.lincir,
                "--dataset",
                _parquet(c, "empty.parquet", rows=0),
                "--output",
                c.root / "o",
                NO_PROGRESS,
            ],
            ["`dataset`", "empty.parquet", "has no rows"],
        ),  # fmt: skip
    ),
    (
        "index-dataset-zero-rows-of-paths-streaming",
        "index",
        lambda c: (
            [
                "index",
                "--model",
                c.lincir,
                "--dataset",
                _file(c, "paths.parquet", _empty_paths_parquet()),
                "--streaming",
                "--output",
                c.root / "o",
                NO_PROGRESS,
            ],
            ["`dataset`", "paths.parquet", "has no rows"],
        ),  # fmt: skip
    ),
    (
        "index-memory-budget-with-flat",
        "index",
        lambda c: (
            [
                "index",
                "--model",
                c.lincir,
                "--images",
                c.photos,
                "--output",
                c.root / "o",
                "--faiss",
                "flat",
                "--memory-budget",
                "1GB",
            ],
            ["--memory-budget", "--faiss flat", "does not apply"],
        ),  # fmt: skip
    ),
    (
        "index-memory-budget-without-faiss",
        "index",
        lambda c: (
            ["index", "--model", c.lincir, "--images", c.photos, "--output", c.root / "o", "--memory-budget", "1GB"],
            ["--memory-budget", "exact search"],
        ),
    ),
    (
        "index-output-being-built",
        "index",
        lambda c: (
            ["index", "--model", c.lincir, "--images", c.photos, "--output", _locked(c, c.root / "o"), NO_PROGRESS],
            ["another hf-cir index build (process 4242) is writing", "o"],
        ),
    ),
    # -- search: format-2 index files, crafted or damaged -----------------------------------------------------------
    (
        "search-v2-int64-shard",
        "search",
        lambda c: (_v2_search(c, _v2_int64_shard), ["000002.npy", "int64", "float32"]),
    ),
    (
        "search-v2-integer-ids",
        "search",
        lambda c: (_v2_search(c, lambda f: _v2_integer_column(f, "id")), ["000001.parquet", "`id`", "int64"]),
    ),
    (
        "search-v2-integer-paths",
        "search",
        lambda c: (_v2_search(c, lambda f: _v2_integer_column(f, "path")), ["000001.parquet", "`path`", "int64"]),
    ),
    (
        "search-v2-symlinked-shard",
        "search",
        lambda c: (
            _v2_search(c, lambda f: _v2_linked_shard(f, c.root / "secret" / "sentinel.png")),
            ["000001.npy", "symbolic link"],
        ),
    ),
    (
        "search-v2-fifo-shard",
        "search",
        lambda c: (_v2_search(c, _v2_fifo_shard), ["000002.npy", "not a regular file"]),
    ),
    (
        "search-v2-truncated-shard",
        "search",
        lambda c: (_v2_search(c, _v2_truncated_shard), ["000001.npy", "truncated"]),
    ),
    (
        "search-v2-faiss-of-another-dimension",
        "search",
        lambda c: (
            _v2_search(c, _v2_other_dimension_faiss),
            ["faiss.index", "1000 vectors of 32 dimensions", "dimension"],
        ),
    ),
    # -- search: the index files ------------------------------------------------------------------------------------
    (
        "search-index-missing",
        "search",
        lambda c: (["search", "--index", c.root / "nope.index", "--text", "make it blue"], ["nope.index"]),
    ),
    (
        "search-index-is-not-an-index",
        "search",
        lambda c: (["search", "--index", c.photos, "--text", "make it blue"], ["photos", "index.json"]),
    ),
    (
        "search-index-json-corrupt",
        "search",
        lambda c: (
            ((c.index / "index.json").write_text("{"), _index_args(c, "--text", "make it blue"))[1:]
            + (["index.json"],)
        ),
    ),
    (
        "search-index-version-string",
        "search",
        lambda c: (
            (_crafted(c, version="2"), _index_args(c, "--text", "make it blue"))[1:] + (["index.json", "version"],)
        ),
    ),
    (
        "search-index-version-newer",
        "search",
        lambda c: (_crafted(c, version=99), _index_args(c, "--text", "make it blue"))[1:] + (["version 99", "newer"],),
    ),
    (
        "search-index-integer-paths",
        "search",
        lambda c: (
            (_crafted(c, paths=[1, 2, 3, 4]), _index_args(c, "--text", "make it blue"))[1:]
            + (["index.json entry 0 of 'paths'", "int"],)
        ),
    ),
    (
        "search-index-dotdot-path",
        "search",
        lambda c: (
            (
                _crafted(c, paths=["blue.png", "../secret/sentinel.png", "red.png", "yellow.png"]),
                _index_args(c, "--text", "make it blue"),
            )[1:]
            + (["entry 1 of 'paths'", "leaves the image root"],)
        ),
    ),
    (
        "search-index-absolute-path",
        "search",
        lambda c: (
            (
                _crafted(c, paths=["blue.png", "green.png", str(c.root / "secret" / "sentinel.png"), "yellow.png"]),
                _index_args(c, "--text", "make it blue"),
            )[1:]
            + (["entry 2 of 'paths'", "absolute"],)
        ),
    ),
    (
        "search-index-no-root",
        "search",
        lambda c: (_drop_key(c.index, "root"), _index_args(c, "--text", "make it blue"))[1:] + (["root"],),
    ),
    (
        "search-index-embeddings-garbage",
        "search",
        lambda c: (
            ((c.index / "embeddings.safetensors").write_bytes(b"garbage"), _index_args(c, "--text", "make it blue"))[
                1:
            ]
            + (["embeddings.safetensors"],)
        ),
    ),
    (
        "search-index-embeddings-nan",
        "search",
        lambda c: (
            (_embeddings(c, torch.full((4, 64), float("nan"))), _index_args(c, "--text", "make it blue"))[1:]
            + (["embeddings.safetensors", "non-finite"],)
        ),
    ),
    (
        "search-index-embeddings-integers",
        "search",
        lambda c: (
            (_embeddings(c, torch.ones(4, 64, dtype=torch.int64)), _index_args(c, "--text", "make it blue"))[1:]
            + (["floating"],)
        ),
    ),
    (
        "search-index-embeddings-rows",
        "search",
        lambda c: (
            (_embeddings(c, torch.ones(3, 64)), _index_args(c, "--text", "make it blue"))[1:]
            + (["3 embeddings for 4"],)
        ),
    ),
    (
        "search-index-other-gallery-encoder",
        "search",
        lambda c: (
            (
                _crafted(c, fingerprint="0" * 24),
                _index_args(c, "--image", c.photos / "red.png", "--text", "make it blue"),
            )[1:]
            + (["--allow-other-model"],)
        ),
    ),
    # -- search: the query ------------------------------------------------------------------------------------------
    (
        "search-image-missing",
        "search",
        lambda c: (_index_args(c, "--image", c.root / "nope.png", "--text", "make it blue"), ["--image", "nope.png"]),
    ),
    (
        "search-image-not-an-image",
        "search",
        lambda c: (
            (
                (c.root / "fake.png").write_text("not a png"),
                _index_args(c, "--image", c.root / "fake.png", "--text", "make it blue"),
            )[1:]
            + (["fake.png"],)
        ),
    ),
    (
        "search-image-decompression-bomb",
        "search",
        lambda c: (_index_args(c, "--image", _bomb(c), "--text", "make it blue"), ["bomb.png", "decompression bomb"]),
    ),
    (
        "search-mask-decompression-bomb",
        "search",
        lambda c: (
            _index_args(c, "--image", c.photos / "red.png", "--mask", _bomb(c), "--text", "make it blue"),
            ["--mask", "bomb.png"],
        ),
    ),
    (
        "search-text-empty",
        "search",
        lambda c: (_index_args(c, "--image", c.photos / "red.png", "--text", ""), ["--text", "empty"]),
    ),
    (
        "search-text-blank",
        "search",
        lambda c: (_index_args(c, "--image", c.photos / "red.png", "--text", "   "), ["--text", "empty"]),
    ),
    ("search-no-query", "search", lambda c: (_index_args(c), ["--image", "--text"])),
    ("search-top-k-zero", "search", lambda c: (_index_args(c, "--text", "make it blue", "--top-k", 0), ["--top-k"])),
    (
        "search-mask-without-image",
        "search",
        lambda c: (_index_args(c, "--text", "make it blue", "--mask", c.photos / "red.png"), ["--mask", "--image"]),
    ),
    (
        "search-mask-with-lincir",
        "search",
        lambda c: (
            _index_args(c, "--image", c.photos / "red.png", "--text", "make it blue", "--mask", c.photos / "red.png"),
            ["--mask", "does not apply", "lincir"],
        ),
    ),
    (
        "search-negative-text-with-lincir",
        "search",
        lambda c: (
            _index_args(c, "--image", c.photos / "red.png", "--text", "make it blue", "--negative-text", "red"),
            ["--negative-text", "does not apply"],
        ),
    ),
    (
        "search-method-of-another-model",
        "search",
        lambda c: (
            _index_args(c, "--image", c.photos / "red.png", "--text", "make it blue", "--method", "compodiff"),
            ["--method compodiff", "lincir"],
        ),
    ),
    (
        "search-text-with-image-method",
        "search",
        lambda c: (
            _index_args(c, "--image", c.photos / "red.png", "--text", "make it blue", "--method", "image"),
            ["--text does not apply"],
        ),
    ),
    (
        "search-include-query-without-image",
        "search",
        lambda c: (_index_args(c, "--text", "make it blue", "--include-query"), ["--include-query"]),
    ),
    (
        "search-sampling-option-with-lincir",
        "search",
        lambda c: (
            _index_args(c, "--image", c.photos / "red.png", "--text", "make it blue", "--guidance-scale", 2),
            ["sampling"],
        ),
    ),
    (
        "search-grid-into-a-folder",
        "search",
        lambda c: (
            _index_args(
                c, "--image", c.photos / "red.png", "--text", "make it blue", "--save-grid", c.root / "thesis"
            ),
            ["thesis"],
        ),
    ),
    ("search-usage-bad-top-k", "search", lambda c: (_index_args(c, "--text", "x", "--top-k", "ten"), ["--top-k"])),
    # -- evaluate ---------------------------------------------------------------------------------------------------
    (
        "evaluate-unknown-benchmark",
        "evaluate",
        lambda c: (["evaluate", "--model", c.lincir, "--benchmark", "imagenet"], ["imagenet"]),
    ),
    ("evaluate-model-required", "evaluate", lambda c: (["evaluate", "--benchmark", "cirr"], ["--model"])),
    (
        "evaluate-negative-workers",
        "evaluate",
        lambda c: (
            ["evaluate", "--model", c.lincir, "--benchmark", "toy", "--num-workers", -1],
            ["--num-workers", "-1"],
        ),
    ),
    (
        "evaluate-data-dir-required",
        "evaluate",
        lambda c: (["evaluate", "--model", c.lincir, "--benchmark", "cirr"], ["--data-dir"]),
    ),
    (
        "evaluate-data-dir-missing",
        "evaluate",
        lambda c: (["evaluate", "--model", c.lincir, "--benchmark", "cirr", "--data-dir", c.root / "nope"], ["nope"]),
    ),
    (
        "evaluate-wrong-layout",
        "evaluate",
        lambda c: (
            ["evaluate", "--model", c.lincir, "--benchmark", "cirr", "--data-dir", c.photos],
            ["cap.rc2.val.json"],
        ),
    ),
    (
        "evaluate-cirr-split-file-is-a-list",
        "evaluate",
        lambda c: (
            [
                "evaluate",
                "--model",
                c.lincir,
                "--benchmark",
                "cirr",
                "--data-dir",
                _benchmark(c, "cirr", ("cirr/image_splits/split.rc2.val.json", lambda d: list(d))),
            ],
            ["split.rc2.val.json", "expected a JSON object"],
        ),
    ),
    (
        "evaluate-cirr-missing-members",
        "evaluate",
        lambda c: (
            [
                "evaluate",
                "--model",
                c.lincir,
                "--benchmark",
                "cirr",
                "--data-dir",
                _benchmark(c, "cirr", ("cirr/captions/cap.rc2.val.json", lambda d: _drop(d, 1, "img_set", "members"))),
            ],
            ["cap.rc2.val.json entry 1: missing 'members' in 'img_set'"],
        ),
    ),
    (
        "evaluate-cirr-caption-not-text",
        "evaluate",
        lambda c: (
            [
                "evaluate",
                "--model",
                c.lincir,
                "--benchmark",
                "cirr",
                "--data-dir",
                _benchmark(c, "cirr", ("cirr/captions/cap.rc2.val.json", lambda d: _set(d, 2, "caption", 5))),
            ],
            ["cap.rc2.val.json entry 2", "'caption'"],
        ),
    ),
    (
        "evaluate-cirr-image-path-escapes",
        "evaluate",
        lambda c: (
            [
                "evaluate",
                "--model",
                c.lincir,
                "--benchmark",
                "cirr",
                "--data-dir",
                _benchmark(
                    c, "cirr", ("cirr/image_splits/split.rc2.val.json", lambda d: {**d, "dev-a": "../../x.png"})
                ),
            ],
            ["split.rc2.val.json entry 'dev-a'", "leaves"],
        ),
    ),
    (
        "evaluate-circo-empty-ground-truth",
        "evaluate",
        lambda c: (
            [
                "evaluate",
                "--model",
                c.lincir,
                "--benchmark",
                "circo",
                "--data-dir",
                _benchmark(c, "circo", ("annotations/val.json", lambda d: _set(d, 1, "gt_img_ids", []))),
            ],
            ["val.json entry 1", "'gt_img_ids' is empty"],
        ),
    ),
    (
        "evaluate-circo-image-without-id",
        "evaluate",
        lambda c: (
            [
                "evaluate",
                "--model",
                c.lincir,
                "--benchmark",
                "circo",
                "--data-dir",
                _benchmark(
                    c,
                    "circo",
                    (
                        "COCO2017_unlabeled/annotations/image_info_unlabeled2017.json",
                        lambda d: {"images": [{"file_name": "x.jpg"}]},
                    ),
                ),
            ],
            ["image_info_unlabeled2017.json entry 0", "missing 'id'"],
        ),
    ),
    (
        "evaluate-fashioniq-captions-string",
        "evaluate",
        lambda c: (
            [
                "evaluate",
                "--model",
                c.lincir,
                "--benchmark",
                "fashioniq",
                "--data-dir",
                _benchmark(c, "fashioniq", ("captions/cap.dress.val.json", lambda d: _set(d, 0, "captions", "aa"))),
            ],
            ["cap.dress.val.json entry 0", "'captions'"],
        ),
    ),
    (
        "evaluate-genecis-not-a-list",
        "evaluate",
        lambda c: (
            [
                "evaluate",
                "--model",
                c.lincir,
                "--benchmark",
                "genecis",
                "--split",
                "test",
                "--data-dir",
                _benchmark(c, "genecis", ("genecis/focus_object.json", lambda d: {"x": 1})),
            ],
            ["focus_object.json", "expected a JSON list"],
        ),
    ),
    (
        "evaluate-genecis-bad-box",
        "evaluate",
        lambda c: (
            [
                "evaluate",
                "--model",
                c.lincir,
                "--benchmark",
                "genecis",
                "--split",
                "test",
                "--data-dir",
                _benchmark(
                    c,
                    "genecis",
                    (
                        "genecis/focus_attribute.json",
                        lambda d: [{**d[0], "target": {"image_id": 2002, "instance_bbox": [1, 2]}}],
                    ),
                ),
            ],
            ["focus_attribute.json entry 0", "instance_bbox"],
        ),
    ),
    (
        "evaluate-benchmark-option-malformed",
        "evaluate",
        lambda c: (
            [
                "evaluate",
                "--model",
                c.lincir,
                "--benchmark",
                "cirr",
                "--data-dir",
                _benchmark(c, "cirr"),
                "--benchmark-option",
                "nonsense",
            ],
            ["--benchmark-option", "KEY=VALUE"],
        ),
    ),
    (
        "evaluate-benchmark-option-unknown",
        "evaluate",
        lambda c: (
            [
                "evaluate",
                "--model",
                c.lincir,
                "--benchmark",
                "cirr",
                "--data-dir",
                _benchmark(c, "cirr"),
                "--benchmark-option",
                "colour=red",
            ],
            ["--benchmark-option"],
        ),
    ),
    (
        "evaluate-split-unknown",
        "evaluate",
        lambda c: (
            [
                "evaluate",
                "--model",
                c.lincir,
                "--benchmark",
                "fashioniq",
                "--data-dir",
                _benchmark(c, "fashioniq"),
                "--split",
                "test",
            ],
            ["split 'test'"],
        ),
    ),
    (
        "evaluate-method-of-another-model",
        "evaluate",
        lambda c: (
            [
                "evaluate",
                "--model",
                c.lincir,
                "--benchmark",
                "cirr",
                "--data-dir",
                _benchmark(c, "cirr"),
                "--method",
                "compodiff",
                NO_PROGRESS,
            ],
            ["compodiff"],
        ),
    ),
    (
        "evaluate-sampling-option-with-lincir",
        "evaluate",
        lambda c: (
            [
                "evaluate",
                "--model",
                c.lincir,
                "--benchmark",
                "cirr",
                "--data-dir",
                _benchmark(c, "cirr"),
                "--num-inference-steps",
                3,
            ],
            ["sampling"],
        ),
    ),
    (
        "evaluate-model-card-of-a-hub-id",
        "evaluate",
        lambda c: (
            [
                "evaluate",
                "--model",
                "someone/some-model",
                "--benchmark",
                "cirr",
                "--data-dir",
                _benchmark(c, "cirr"),
                "--update-model-card",
            ],
            ["--update-model-card", "someone/some-model"],
        ),
    ),
    (
        "evaluate-toy-table-method",
        "evaluate",
        lambda c: (["evaluate", "--benchmark", "toy", "--method", "sum"], ["--method", "toy table"]),
    ),
    (
        "evaluate-toy-table-output-dir",
        "evaluate",
        lambda c: (["evaluate", "--benchmark", "toy", "--output-dir", c.root / "out"], ["--output-dir", "toy table"]),
    ),
    (
        "evaluate-toy-table-data-dir",
        "evaluate",
        lambda c: (["evaluate", "--benchmark", "toy", "--data-dir", c.photos], ["--data-dir"]),
    ),
    (
        "evaluate-usage-bad-batch-size",
        "evaluate",
        lambda c: (["evaluate", "--benchmark", "toy", "--batch-size", "x"], ["--batch-size"]),
    ),
    # -- convert ----------------------------------------------------------------------------------------------------
    (
        "convert-checkpoint-missing",
        "convert",
        lambda c: (
            [
                "convert",
                "lincir",
                "--phi-checkpoint",
                c.root / "nothere.pt",
                "--clip",
                c.clip,
                "--output-dir",
                c.root / "out",
            ],
            ["nothere.pt"],
        ),
    ),
    (
        "convert-checkpoint-garbage",
        "convert",
        lambda c: (
            (
                (c.root / "garbage.pt").write_bytes(b"garbage"),
                [
                    "convert",
                    "lincir",
                    "--phi-checkpoint",
                    c.root / "garbage.pt",
                    "--clip",
                    c.clip,
                    "--output-dir",
                    c.root / "out",
                ],
            )[1:]
            + (["garbage.pt"],)
        ),
    ),
    (
        "convert-malicious-pickle",
        "convert",
        lambda c: (
            [
                "convert",
                "lincir",
                "--phi-checkpoint",
                _malicious_pickle(c),
                "--clip",
                c.clip,
                "--output-dir",
                c.root / "out",
            ],
            ["phi.pt", "weights_only"],
        ),
    ),
    (
        "convert-not-a-phi",
        "convert",
        lambda c: (
            (
                torch.save({"Phi": {"foo": torch.ones(2)}}, c.root / "foo.pt"),
                [
                    "convert",
                    "lincir",
                    "--phi-checkpoint",
                    c.root / "foo.pt",
                    "--clip",
                    c.clip,
                    "--output-dir",
                    c.root / "out",
                ],
            )[1:]
            + (["foo"],)
        ),
    ),
    (
        "convert-output-dir-foreign",
        "convert",
        lambda c: (
            [
                "convert",
                "compodiff",
                "--checkpoint",
                c.root / "nothere.pt",
                "--text-encoder",
                c.clip,
                "--image-encoder",
                c.clip,
                "--output-dir",
                c.root / "thesis",
                "--overwrite",
            ],
            ["--output-dir", "thesis", "refusing"],
        ),
    ),
    (
        "convert-output-dir-exists",
        "convert",
        lambda c: (
            [
                "convert",
                "lincir",
                "--phi-checkpoint",
                c.root / "nothere.pt",
                "--clip",
                c.clip,
                "--output-dir",
                c.root / "thesis",
            ],
            ["--output-dir", "already exists"],
        ),
    ),
    (
        "convert-compodiff-output-dir-is-images",
        "convert",
        lambda c: (
            [
                "convert",
                "compodiff",
                "--checkpoint",
                c.root / "x.pt",
                "--text-encoder",
                c.clip,
                "--image-encoder",
                c.clip,
                "--output-dir",
                c.photos,
                "--overwrite",
            ],
            ["--output-dir", "photos"],
        ),
    ),
    (
        "convert-compodiff-checkpoint-garbage",
        "convert",
        lambda c: (
            (
                (c.root / "garbage.bin").write_bytes(b"garbage"),
                [
                    "convert",
                    "compodiff",
                    "--checkpoint",
                    c.root / "garbage.bin",
                    "--text-encoder",
                    c.clip,
                    "--image-encoder",
                    c.clip,
                    "--output-dir",
                    c.root / "out",
                ],
            )[1:]
            + (["garbage.bin"],)
        ),
    ),
    (
        "convert-compodiff-checkpoint-missing",
        "convert",
        lambda c: (
            [
                "convert",
                "compodiff",
                "--checkpoint",
                c.root / "none",
                "--text-encoder",
                c.clip,
                "--image-encoder",
                c.clip,
                "--output-dir",
                c.root / "out",
            ],
            ["none"],
        ),
    ),
    # The converters' one load path (hf_cir.conversion.loading): every method names the file and what was expected.
    (
        "convert-compodiff-safetensors-header-lies",
        "convert",
        lambda c: (
            _convert(c, "compodiff", "--checkpoint", _file(c, "prior.safetensors", LYING_SAFETENSORS)),
            [
                "`checkpoint`",
                "prior.safetensors",
                "not a readable safetensors file",
                "expected a CompoDiff state dict",
            ],
        ),
    ),
    (
        "convert-compodiff-checkpoint-zero-bytes",
        "convert",
        lambda c: (
            _convert(c, "compodiff", "--checkpoint", _file(c, "prior.safetensors", b"")),
            ["prior.safetensors", "empty (0 bytes)", "expected a CompoDiff state dict"],
        ),
    ),
    (
        "convert-compodiff-bin-zero-bytes",
        "convert",
        lambda c: (
            _convert(c, "compodiff", "--checkpoint", _file(c, "pytorch_model.bin", b"")),
            ["pytorch_model.bin", "empty (0 bytes)"],
        ),
    ),
    (
        "convert-compodiff-text-encoder-is-a-file",
        "convert",
        lambda c: (
            [
                "convert",
                "compodiff",
                "--checkpoint",
                REFERENCE_COMPODIFF,
                "--text-encoder",
                REFERENCE_COMPODIFF / "pytorch_model.bin",
                "--image-encoder",
                c.clip,
                "--output-dir",
                c.root / "out",
            ],  # fmt: skip
            ["`text_encoder`", "pytorch_model.bin", "is a file", "expected a CLIPTextModel"],
        ),
    ),
    (
        "convert-lincir-safetensors-header-lies",
        "convert",
        lambda c: (
            _convert(c, "lincir", "--phi-checkpoint", _file(c, "phi.safetensors", LYING_SAFETENSORS)),
            ["`phi_checkpoint`", "phi.safetensors", "not a readable safetensors file", "expected a released phi"],
        ),
    ),
    (
        "convert-searle-checkpoint-zero-bytes",
        "convert",
        lambda c: (
            _convert(c, "searle", "--phi-checkpoint", _file(c, "SEARLE.pt", b"")),
            ["`phi_checkpoint`", "SEARLE.pt", "empty (0 bytes)"],
        ),
    ),
    (
        "convert-pic2word-checkpoint-header-lies",
        "convert",
        lambda c: (
            _convert(c, "pic2word", "--checkpoint", _file(c, "pic2word.safetensors", LYING_SAFETENSORS)),
            ["`checkpoint`", "pic2word.safetensors", "not a readable safetensors file", "expected a Pic2Word"],
        ),
    ),
    (
        "convert-lincir-clip-is-a-file",
        "convert",
        lambda c: (
            (
                torch.save(
                    {"Phi": {f"layers.{i}.{k}": torch.ones(2, 2) for i in (0, 3, 6) for k in ("weight", "bias")}},
                    c.root / "phi.pt",
                ),
                [
                    "convert",
                    "lincir",
                    "--phi-checkpoint",
                    c.root / "phi.pt",
                    "--clip",
                    c.clip / "model.safetensors",
                    "--output-dir",
                    c.root / "out",
                ],  # fmt: skip
            )[1:]
            + (["`clip_name_or_path`", "model.safetensors", "is a file"],)
        ),
    ),
    ("convert-usage-no-model", "convert", lambda c: (["convert"], ["MODEL"])),
    (
        "convert-usage-missing-clip",
        "convert",
        lambda c: (["convert", "lincir", "--phi-checkpoint", "x.pt", "--output-dir", c.root / "o"], ["--clip"]),
    ),
    # -- export ---------------------------------------------------------------------------------------------------
    ("export-folder-missing", "export", lambda c: (["export", c.root / "nope"], ["nope"])),
    (
        "export-output-dir-exists",
        "export",
        lambda c: (["export", c.lincir, "--output-dir", c.root / "thesis"], ["--output-dir", "thesis"]),
    ),
    # -- demo -------------------------------------------------------------------------------------------------------
    ("demo-no-queries", "demo", lambda c: (["demo", "--num-queries", 0], ["--num-queries"])),
    ("demo-negative-recall", "demo", lambda c: (["demo", "--recall-queries", -1], ["--recall-queries"])),
    (
        "demo-checkpoints-missing",
        "demo",
        lambda c: (["demo", "--checkpoints", c.root / "nope", "--recall-queries", 0], ["nope"]),
    ),
    ("demo-usage-bad-top-k", "demo", lambda c: (["demo", "--top-k", "five"], ["--top-k"])),
    # -- app (refused before gradio starts a server) ----------------------------------------------------------------
    ("app-index-missing", "app", lambda c: (["app", "--index", c.root / "nope"], ["index", "nope"])),
    (
        "app-index-is-a-file",
        "app",
        lambda c: (["app", "--index", c.root / "secret" / "sentinel.png"], ["sentinel.png"]),
    ),
    ("app-not-an-index", "app", lambda c: (["app", "--index", c.photos], ["photos", "not an hf-cir index"])),
    ("app-port-out-of-range", "app", lambda c: (["app", "--port", 70000], ["--port", "70000"])),
    ("app-usage-bad-port", "app", lambda c: (["app", "--port", "abc"], ["--port", "abc"])),
]


def _empty_paths_parquet() -> bytes:
    """A Parquet file with a column of image paths and no rows."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.table({"image": pa.array([], pa.string())}), buffer)
    return buffer.getvalue()


def _drop_key(index: Path, key: str) -> Path:
    info = json.loads((index / "index.json").read_text())
    info.pop(key, None)
    (index / "index.json").write_text(json.dumps(info))
    return index


@pytest.fixture
def ctx(workspace, toy_lincir, toy_index):
    from hf_cir.toy.checkpoints import toy_checkpoint

    context = SimpleNamespace(
        root=workspace,
        photos=workspace / "photos",
        index=workspace / "photos.index",
        toy_index=toy_index,
        lincir=toy_lincir,
        clip=toy_checkpoint("clip"),
        lock=None,
    )
    yield context
    if context.lock is not None:
        context.lock.close()


@pytest.mark.parametrize("case_id, command, setup", CASES, ids=[case[0] for case in CASES])
def test_bad_input_is_one_error_line(capfd, ctx, case_id, command, setup):
    argv, fragments = setup(ctx)
    inputs = {name: snapshot(ctx.root / name) for name in ("photos", "thesis", "secret")}
    code, out, err = run_cli(capfd, *argv)
    assert_error_line(code, err, command, *fragments)
    # Nothing the user had is gone or changed, and refused code never ran.
    assert {name: snapshot(ctx.root / name) for name in inputs} == inputs
    assert not (ctx.root / "pwned.txt").exists()


def test_every_subcommand_is_covered():
    from hf_cir.cli import build_parser

    parser = build_parser()
    commands = {command for _, command, _ in CASES}
    subparsers = next(action for action in parser._actions if action.dest == "command")
    assert set(subparsers.choices) <= commands


def test_unknown_command_is_one_line(capfd):
    code, _, err = run_cli(capfd, "nosuch")
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines() == [err.strip()] and err.startswith("hf-cir: error: ")
