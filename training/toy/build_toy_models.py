"""Rebuild every toy checkpoint from scratch: `make toy-models` = `python training/toy/build_toy_models.py`.

1. The tiny CLIP, trained contrastively on toy images and captions (`training/toy/train_toy_clip.py`).
2. LinCIR's phi, trained on the toy captions alone with `training/train_lincir.py` (random subsets of the
   attribute words masked, noise relative to the embedding's norm).
3. CompoDiff's prior, stage 1 (text -> image embedding) then stage 2 (triplets, text-to-image and masked
   examples) with `training/train_compodiff.py` on precomputed toy embeddings; its sampling defaults (guidance
   scales) are chosen on validation queries whose targets are training combinations and written into the saved
   pipeline's `model_index.json`, so every caller of the folder samples the same way.
4. The finished folders are copied into `hf_cir/toy/checkpoints/` (or `--output-dir`) and the toy benchmark
   table (held-out queries, two seeds) is printed and written to `toy_results.json`.

Held-out combinations never enter any training set. Runs on a CPU, from a checkout (these are build tools, not
part of the installed package, which ships the world, the benchmark and the trained checkpoints).
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hf_cir.hub import make_remote_code_folder, portable_path
from hf_cir.toy.checkpoints import default_checkpoints_dir
from hf_cir.toy.world import _CENTRES, _RADII, CAPTION_TEMPLATES, ToyWorld
from hf_cir.utils import atomic_file

logger = logging.getLogger("build_toy_models")

# The training scripts this build runs: `training/`, next to this folder.
TRAINING_DIR = Path(__file__).resolve().parent.parent

# The LinCIR recipe of the toy checkpoint. Masking a random subset of the attribute words and noise relative to
# the text embedding's norm beat the paper's defaults (all keywords, u * N(0, I)) on this world; see the card.
LINCIR_ARGS: dict[str, str | None] = {
    "--keyword_extractor": "hf_cir.toy.world:toy_keyword_spans",
    "--masking_policy": "random",
    "--noise_std": "1.0",
    "--train_batch_size": "128",
    "--max_train_steps": "600",
    "--learning_rate": "1e-3",
    "--seed": "0",
    "--logging_steps": "50",
    "--checkpointing_steps": "100000",
    "--cpu": None,
}

# Files of a training run's output folder that are not part of the model.
_RUN_LEFTOVERS = ("checkpoint-", "logs", "best", "training_state", ".")


def _script(name: str) -> Path:
    path = TRAINING_DIR / name
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: `make toy-models` runs the repository's training scripts; run it from a checkout."
        )
    return path


def _load_module(path: Path, name: str):
    """Import a build tool or training script by its path (they are scripts, not an installed package)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _run_script(script: Path, arguments: list[str], log_path: Path) -> None:
    """Run a training script in a fresh Python process, its output written to `log_path`."""
    logger.info("Running %s %s (log: %s)", script.name, " ".join(arguments), log_path)
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.run(
            [sys.executable, str(script), *arguments], stdout=log, stderr=subprocess.STDOUT, check=False
        )
    if process.returncode != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(f"{script.name} failed (exit {process.returncode}); end of {log_path}:\n{tail}")


def _flags(arguments: dict[str, str | None]) -> list[str]:
    flags = []
    for key, value in arguments.items():
        flags.append(key)
        if value is not None:
            flags.append(value)
    return flags


def _copy_model_folder(source: Path, target: Path) -> None:
    """Copy a trained folder without its training leftovers (checkpoints, logs) and without remote code.

    The shipped checkpoints load through the installed package; copies of its model files (written by
    `save_pretrained` for `trust_remote_code` users) would only be a second version of the code that can drift.
    """
    if target.exists():
        shutil.rmtree(target)

    def ignore(folder, names):
        if Path(folder) != source:
            return []
        return [n for n in names if n.startswith(_RUN_LEFTOVERS) or n.endswith(".py")]

    shutil.copytree(source, target, ignore=ignore)
    _drop_auto_map(target)


def _drop_auto_map(folder: Path) -> None:
    """Remove the `auto_map` entries (which point at remote-code files) from a folder's JSON configs."""

    def strip(value):
        if isinstance(value, dict):
            return {key: strip(item) for key, item in value.items() if key != "auto_map"}
        return value

    for path in folder.glob("*.json"):
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and "auto_map" in json.dumps(data):
            path.write_text(json.dumps(strip(data), indent=2, sort_keys=True) + "\n", encoding="utf-8")


_TOY_NOTES = {
    "lincir": (
        "**This is the hf-cir toy LinCIR**, the embedded default of `hf-cir demo`: phi trained by "
        "`training/train_lincir.py` on the captions of the toy world (`hf_cir.toy`) around the toy CLIP "
        "(`../clip`). Recipe: keywords are the attribute words (`hf_cir.toy.world:toy_keyword_spans`), a random "
        "subset of them is masked (`--masking_policy random`), and the noise is relative to the embedding's norm "
        "(`--noise_std 1.0`); on this world both beat the paper's defaults. It knows only the toy world; it is "
        "not a general-purpose model. License: Apache-2.0 (weights trained by hf-cir on synthetic data). It loads "
        "through the installed hf-cir package (`import hf_cir.models`, then `LinCIRModel.from_pretrained` or the Auto "
        "classes): the shipped folder carries no remote-code files, so leave out `trust_remote_code`."
    ),
    "compodiff": (
        "**This is the hf-cir toy CompoDiff**, the embedded default of `hf-cir demo`: a small prior trained by "
        "`training/train_compodiff.py` (stage 1 on toy image-caption embeddings, stage 2 on toy triplets, "
        "text-to-image and masked examples) with the toy CLIP (`../clip`) as its text and image encoders. Its "
        "sampling defaults (guidance scales, steps, samples) are stored in `model_index.json` and used by every "
        "caller that leaves them unset; the guidance pair was chosen on validation queries whose targets are "
        "training combinations (`guidance_sweep.json`). It knows only the toy world; it is not a general-purpose "
        "model. License: Apache-2.0 (weights trained by hf-cir on synthetic data)."
    ),
}


def annotate_toy_card(folder: Path, kind: str, results: dict | None = None) -> None:
    """Mark a trained folder's model card as the toy checkpoint: license, tags, what it is, and its toy results."""
    from huggingface_hub import ModelCard

    path = folder / "README.md"
    card = ModelCard.load(path) if path.is_file() else ModelCard("---\n---\n")
    card.data.license = "apache-2.0"
    card.data.tags = sorted(set(card.data.tags or []) | {"hf-cir-toy", "toy"})
    body = card.text
    marker = "**This is the hf-cir toy"
    if marker in body:  # refresh the note
        body = "\n".join(_TOY_NOTES[kind] if line.startswith(marker) else line for line in body.split("\n"))
    else:
        lines = body.lstrip("\n").split("\n", 1)
        heading, rest = (lines[0], lines[1] if len(lines) > 1 else "") if lines[0].startswith("#") else ("", body)
        body = f"{heading}\n\n{_TOY_NOTES[kind]}\n{rest}" if heading else f"{_TOY_NOTES[kind]}\n\n{rest}"
    if results:
        from hf_cir.toy.benchmark import format_toy_table

        section = "\n## Toy benchmark (held-out queries, `hf-cir evaluate --benchmark toy`)\n\n"
        body = body.split(section)[0].rstrip("\n") + "\n" + section + format_toy_table(results) + "\n"
    body = body.replace(
        "- **License:** cc-by-nc-4.0 (the license of the released LinCIR weights: non-commercial use only).",
        "- **License:** apache-2.0 (toy weights trained by hf-cir on synthetic data).",
    )
    card.text = body
    card.save(path)


# Usage-snippet examples in the toy world's vocabulary (the toy tokenizer knows no other word); the CompoDiff
# snippet shows the checkpoint's own guidance scales (read from the folder when the card is rendered).
TOY_LINCIR_EXAMPLE_TEXT = "is blue and on the left"
TOY_COMPODIFF_EXAMPLE = {"prompt": "make it blue and move it to the left", "negative_prompt": "striped"}


def _recorded_training(card_text: str) -> dict[str, dict]:
    """The Data, Results and Arguments tables that a training run wrote into its card's Training section."""
    section = card_text.split("\n## Training\n", 1)[1].split("\n## ", 1)[0]
    tables: dict[str, dict] = {"Data": {}, "Results": {}, "Arguments": {}}
    current = None
    for line in section.splitlines():
        if line.startswith("### "):
            current = line[4:].strip()
        elif current in tables and line.startswith("| ") and not line.startswith(("| --- ", "| | ", "| argument |")):
            key, value = (cell.strip() for cell in line.strip().strip("|").split("|", 1))
            if line.startswith("| metric |"):
                continue
            if current == "Arguments":
                tables[current][key.strip("`")] = json.loads(value.strip("`"))
            elif current == "Data":
                tables[current][key] = ", ".join(portable_path(part) for part in value.strip("`").split(", "))
            else:
                tables[current][key] = value
    return tables


def _script_parser(name: str):
    return _load_module(_script(f"{name}.py"), f"hf_cir_toy_{name}").build_parser()


def render_toy_card(folder: Path, kind: str, results: dict | None = None) -> None:
    """Re-render a toy checkpoint's card with the current templates from what its training run recorded (arguments,
    data, results): the usage snippet in the toy world's words, the encoders named relative to the folder, then the
    toy annotations (`annotate_toy_card`). Weights and configs are not touched.
    """
    from hf_cir.hub import create_compodiff_model_card, create_lincir_model_card
    from hf_cir.training import training_details_markdown

    recorded = _recorded_training((folder / "README.md").read_text(encoding="utf-8"))
    script = f"train_{kind}.py"
    details = training_details_markdown(
        script, recorded["Arguments"], recorded["Data"], recorded["Results"], parser=_script_parser(f"train_{kind}")
    )
    if kind == "lincir":
        from hf_cir import LinCIRModel

        clip = portable_path(recorded["Arguments"]["clip_model_name_or_path"])
        card = create_lincir_model_card(
            LinCIRModel.from_pretrained(folder),
            license="apache-2.0",
            tags=["hf-cir"],
            training_details=details,
            source=f"trained with hf-cir's `training/{script}` from `{clip}`.",
            remote_code=(folder / "modeling_lincir.py").is_file(),
            example_text=TOY_LINCIR_EXAMPLE_TEXT,
        )
    else:
        from hf_cir import CompoDiffPipeline

        cwd = os.getcwd()
        os.chdir(folder)  # the encoders are then named by their subfolders
        try:
            pipe = CompoDiffPipeline.from_pretrained(".")
            example = {
                **TOY_COMPODIFF_EXAMPLE,
                "guidance_scale": pipe.default_guidance_scale,
                "image_guidance_scale": pipe.default_image_guidance_scale,
            }
            card = create_compodiff_model_card(pipe, training_details=details, license="apache-2.0", example=example)
        finally:
            os.chdir(cwd)
    card.save(str(folder / "README.md"))
    annotate_toy_card(folder, kind, results)


def build_clip(work_dir: Path, device: str = "cpu") -> Path:
    trainer = _load_module(Path(__file__).with_name("train_toy_clip.py"), "train_toy_clip")
    output = work_dir / "clip"
    metrics = trainer.train_toy_clip(
        output, args=trainer.ToyCLIPTrainingArguments(), log_every=100, overwrite=True, device=device
    )
    logger.info("toy CLIP: %s", metrics)
    return output


def build_lincir(work_dir: Path, clip_dir: Path) -> Path:
    captions = work_dir / "lincir_captions.txt"
    captions.write_text("\n".join(ToyWorld().captions("train")) + "\n", encoding="utf-8")
    output = work_dir / "lincir"
    arguments = [
        "--clip_model_name_or_path",
        str(clip_dir),
        "--train_file",
        str(captions),
        "--text_column",
        "text",
        "--output_dir",
        str(output),
        "--overwrite_output_dir",
        *_flags(LINCIR_ARGS),
    ]
    _run_script(_script("train_lincir.py"), arguments, work_dir / "train_lincir.log")
    return output


# Prior size and recipe of the toy CompoDiff. The prior predicts 64-d image embeddings from the toy CLIP's
# 128-d text hidden states.
COMPODIFF_STAGE1_ARGS: dict[str, str | None] = {
    "--num_layers": "2",
    "--num_attention_heads": "4",
    "--attention_head_dim": "32",
    "--num_cross_attention_heads": "4",
    "--mask_size": "16",
    "--train_batch_size": "96",
    "--max_train_steps": "250",
    "--learning_rate": "1e-3",
    "--lr_warmup_steps": "100",
    "--ema_decay": "0.995",
    "--seed": "0",
    "--logging_steps": "25",
    "--checkpointing_steps": "100000",
    "--cpu": None,
}
COMPODIFF_STAGE2_ARGS: dict[str, str | None] = {
    "--train_batch_size": "96",
    "--max_train_steps": "900",
    "--learning_rate": "5e-4",
    "--lr_warmup_steps": "100",
    "--ema_decay": "0.995",
    "--seed": "0",
    "--logging_steps": "25",
    "--checkpointing_steps": "100000",
    "--cpu": None,
}


def _object_mask(world: ToyWorld, attributes, margin: float = 1.25) -> Image.Image:
    """A single-channel mask (255 inside) over the object's bounding square, with a margin for the jitter."""
    side = world.image_size
    cx, cy = _CENTRES[attributes.position]
    radius = _RADII[attributes.size] * side * margin
    mask = np.zeros((side, side), dtype=np.uint8)
    x0, x1 = int(max(0, np.floor(cx * side - radius))), int(min(side, np.ceil(cx * side + radius)))
    y0, y1 = int(max(0, np.floor(cy * side - radius))), int(min(side, np.ceil(cy * side + radius)))
    mask[y0:y1, x0:x1] = 255
    return Image.fromarray(mask, mode="L")


def write_compodiff_training_files(
    folder: str | Path,
    world: ToyWorld | None = None,
    variants: int = 2,
    num_triplets: int = 6000,
    seed: int = 0,
    max_combinations: int | None = None,
) -> dict[str, Path]:
    """Render the training images and write `t2i.jsonl`, `triplets.jsonl` and `masked.jsonl` (paths relative to
    `folder`) in the input format of `training/precompute_embeddings.py`. `max_combinations` keeps only the first
    training combinations for the text-to-image and masked rows (for quick tests).

    Example:

    ```python
    >>> import tempfile
    >>> from build_toy_models import write_compodiff_training_files
    >>> files = write_compodiff_training_files(tempfile.mkdtemp(), variants=1, num_triplets=10)  # doctest: +SKIP
    >>> sorted(files)  # doctest: +SKIP
    ['masked', 't2i', 'triplet']
    ```
    """
    world = world or ToyWorld()
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    def image_path(attributes, variant: int) -> str:
        relative = f"images/{attributes.index:04d}_{variant}.png"
        if not (folder / relative).is_file():
            world.render(attributes, variant, stream="train").save(folder / relative)
        return relative

    rows: dict[str, list[dict]] = {"t2i": [], "triplet": [], "masked": []}
    for attributes in world.train_combinations[:max_combinations]:
        for variant in range(variants):
            template = int(rng.integers(len(CAPTION_TEMPLATES)))
            rows["t2i"].append({"image": image_path(attributes, variant), "text": world.caption(attributes, template)})
        mask_path = f"masks/{attributes.index:04d}.png"
        _object_mask(world, attributes).save(folder / mask_path)
        template = int(rng.integers(len(CAPTION_TEMPLATES)))
        rows["masked"].append(
            {
                "image": image_path(attributes, int(rng.integers(variants))),
                "mask": mask_path,
                "text": world.caption(attributes, template),
            }
        )
    for triplet in world.triplets("train", num_triplets=num_triplets, seed=seed):
        rows["triplet"].append(
            {
                "reference_image": image_path(triplet.reference, int(rng.integers(variants))),
                "target_image": image_path(triplet.target, int(rng.integers(variants))),
                "text": triplet.text,
                "reverse_text": world.modification_text(triplet.target, triplet.reference, rng),
            }
        )
    files = {}
    for task, task_rows in rows.items():
        path = folder / f"{task}.jsonl"
        with open(path, "w", encoding="utf-8") as handle:
            for row in task_rows:
                handle.write(json.dumps(row) + "\n")
        files[task] = path
    logger.info("CompoDiff training files: %s", {task: len(task_rows) for task, task_rows in rows.items()})
    return files


def build_compodiff(work_dir: Path, clip_dir: Path) -> Path:
    """Precompute the toy embeddings with the toy CLIP, train both CompoDiff stages and choose the sampling
    defaults (`choose_compodiff_guidance`); returns the stage-2 folder."""
    data_dir = work_dir / "compodiff_data"
    files = write_compodiff_training_files(data_dir)
    embeddings = {}
    mask_size = COMPODIFF_STAGE1_ARGS["--mask_size"]
    for task, path in files.items():
        output = work_dir / "compodiff_embeddings" / task
        arguments = [
            "--task",
            task,
            "--train_file",
            str(path),
            "--image_root",
            str(data_dir),
            "--text_encoder_name_or_path",
            str(clip_dir),
            "--image_encoder_name_or_path",
            str(clip_dir),
            "--output_dir",
            str(output),
            "--mask_size",
            mask_size,
            "--batch_size",
            "256",
            "--cpu",
        ]
        if task == "triplet":
            arguments += ["--reverse_text_column", "reverse_text"]
        _run_script(_script("precompute_embeddings.py"), arguments, work_dir / f"precompute_{task}.log")
        embeddings[task] = output

    stage1 = work_dir / "compodiff_stage1"
    _run_script(
        _script("train_compodiff.py"),
        ["--stage", "1", "--train_data", str(embeddings["t2i"]), "--output_dir", str(stage1), "--overwrite_output_dir"]
        + _flags(COMPODIFF_STAGE1_ARGS),
        work_dir / "train_compodiff_stage1.log",
    )
    stage2 = work_dir / "compodiff"
    _run_script(
        _script("train_compodiff.py"),
        [
            "--stage",
            "2",
            "--stage1_model_name_or_path",
            str(stage1),
            "--train_data",
            str(embeddings["triplet"]),
            str(embeddings["t2i"]),
            str(embeddings["masked"]),
            "--output_dir",
            str(stage2),
            "--overwrite_output_dir",
        ]
        + _flags(COMPODIFF_STAGE2_ARGS),
        work_dir / "train_compodiff_stage2.log",
    )
    choose_compodiff_guidance(stage2)
    return stage2


# Sampling defaults of the toy CompoDiff: the guidance pair with the best Recall@1 (then @5, @10) on validation
# queries whose targets are training combinations (`ToyBenchmark(split="train", seed=7)`), never on held-out ones.
COMPODIFF_GUIDANCE_GRID: tuple[tuple[float, float], ...] = tuple(
    itertools.product((1.0, 1.5, 2.0, 3.0, 5.0, 7.5), (1.0, 1.5, 2.0, 3.0))
)
COMPODIFF_VALIDATION = {"split": "train", "seed": 7, "num_queries": 300}


def choose_compodiff_guidance(folder: Path, grid=COMPODIFF_GUIDANCE_GRID) -> dict:
    """Evaluate each `(guidance_scale, image_guidance_scale)` of `grid` on the validation queries and write the best
    into the pipeline's `model_index.json` (`CompoDiffPipeline.set_sampling_defaults`); returns the sweep."""
    import tempfile

    from hf_cir.evaluation.evaluate import evaluate
    from hf_cir.pipelines.compodiff import CompoDiffPipeline
    from hf_cir.retrieval import CompoDiffRetrievalModel
    from hf_cir.toy.benchmark import TOY_TEXT_CACHE_SIZE, ToyBenchmark

    pipe = CompoDiffPipeline.from_pretrained(folder)
    benchmark = ToyBenchmark(**COMPODIFF_VALIDATION)
    sweep = []
    with tempfile.TemporaryDirectory(prefix="hf-cir-toy-guidance-") as cache_dir:
        for guidance, image_guidance in grid:
            model = CompoDiffRetrievalModel(
                pipe,
                "toy compodiff",
                device="cpu",
                text_cache_size=TOY_TEXT_CACHE_SIZE,
                guidance_scale=guidance,
                image_guidance_scale=image_guidance,
            )
            result = evaluate(
                model, benchmark, method="compodiff", batch_size=256, cache_dir=cache_dir, show_progress=False
            )
            metrics = {k: result.metrics[k] for k in ToyBenchmark.metric_names}
            sweep.append({"guidance_scale": guidance, "image_guidance_scale": image_guidance, **metrics})
            logger.info("CompoDiff guidance %s / %s on validation queries: %s", guidance, image_guidance, metrics)
    best = max(sweep, key=lambda row: tuple(row[k] for k in ToyBenchmark.metric_names))
    pipe.set_sampling_defaults(
        guidance_scale=best["guidance_scale"], image_guidance_scale=best["image_guidance_scale"]
    )
    # Only the sampling entries change: `save_config` would also rewrite the component entries and record the path.
    index_path = folder / "model_index.json"
    model_index = json.loads(index_path.read_text(encoding="utf-8"))
    model_index.update({key: value for key, value in pipe.config.items() if key.startswith("default_")})
    with atomic_file(index_path, "w") as handle:
        json.dump(model_index, handle, indent=2, sort_keys=True)
        handle.write("\n")
    (folder / "guidance_sweep.json").write_text(
        json.dumps({"validation": COMPODIFF_VALIDATION, "chosen": best, "sweep": sweep}, indent=1) + "\n"
    )
    logger.info("CompoDiff sampling defaults: %s", best)
    return {"chosen": best, "sweep": sweep}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python training/toy/build_toy_models.py",
        description="Retrain the toy CLIP, LinCIR and CompoDiff checkpoints and print the toy benchmark table.",
    )
    parser.add_argument("--output-dir", default=str(default_checkpoints_dir()), help="where the finished folders go")
    parser.add_argument("--work-dir", default="toy_runs", help="training runs, logs and data (default: ./toy_runs)")
    parser.add_argument(
        "--only", nargs="+", choices=["clip", "lincir", "compodiff"], default=None, help="rebuild only these"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of this process and the scripts it runs (default 1: on a CPU shared with other work, "
        "2 threads waiting on each other ran the toy CLIP several times slower than 1)",
    )
    parser.add_argument("--device", default="cpu", help="device of the CLIP training (the scripts run with --cpu)")
    parser.add_argument("--skip-evaluation", action="store_true", help="do not compute the benchmark table")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.threads < 1:
        parser.error(f"--threads must be at least 1; got {args.threads}.")
    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the training scripts' processes

    work_dir = Path(args.work_dir).resolve()
    output_dir = Path(args.output_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    only = set(args.only or ["clip", "lincir", "compodiff"])
    timings = {}
    started = time.perf_counter()

    clip_dir = output_dir / "clip"
    if "clip" in only:
        begin = time.perf_counter()
        _copy_model_folder(build_clip(work_dir, args.device), clip_dir)
        timings["clip"] = time.perf_counter() - begin
    if not (clip_dir / "config.json").is_file():
        raise FileNotFoundError(f"No toy CLIP in {clip_dir}: build it first (--only clip).")
    if "lincir" in only:
        begin = time.perf_counter()
        _copy_model_folder(build_lincir(work_dir, clip_dir), output_dir / "lincir")
        timings["lincir"] = time.perf_counter() - begin
    if "compodiff" in only:
        begin = time.perf_counter()
        _copy_model_folder(build_compodiff(work_dir, clip_dir), output_dir / "compodiff")
        # Generic loading (`DiffusionPipeline.from_pretrained(..., trust_remote_code=True)`) needs the module files:
        # links to the package's own files, so the shipped folder holds no second version of the code.
        make_remote_code_folder(output_dir / "compodiff", link=True)
        timings["compodiff"] = time.perf_counter() - begin
    timings["total"] = time.perf_counter() - started
    logger.info("Training times (s): %s", {k: round(v) for k, v in timings.items()})

    if not args.skip_evaluation:
        from hf_cir.toy.benchmark import evaluate_toy_models, format_toy_table

        results = evaluate_toy_models(output_dir)
        table = format_toy_table(results)
        print(table)
        record = {"results": results, "training_seconds": {k: round(v, 1) for k, v in timings.items()}}
        with open(output_dir / "toy_results.json", "w", encoding="utf-8") as handle:
            json.dump(record, handle, indent=1)
    for kind in ("lincir", "compodiff"):
        if kind in only and (output_dir / kind).is_dir():
            render_toy_card(output_dir / kind, kind, None if args.skip_evaluation else results)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
