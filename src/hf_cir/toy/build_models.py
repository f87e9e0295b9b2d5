"""Rebuild every toy checkpoint from scratch: `make toy-models` = `python -m hf_cir.toy.build_models`.

1. The tiny CLIP, trained contrastively on toy images and captions (`hf_cir.toy.clip`).
2. LinCIR's phi, trained on the toy captions alone with `training/train_lincir.py` (random subsets of the
   attribute words masked, noise relative to the embedding's norm).
3. CompoDiff's prior, stage 1 (text -> image embedding) then stage 2 (triplets, text-to-image and masked
   examples) with `training/train_compodiff.py` on precomputed toy embeddings.
4. The finished folders are copied into `hf_cir/toy/checkpoints/` (or `--output-dir`) and the toy benchmark
   table (held-out queries, two seeds) is printed and written to `toy_results.json`.

Runs on a CPU. The training scripts live in the repository's `training/` folder, so run this from a checkout.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ..hub import make_remote_code_folder, portable_path
from .checkpoints import default_checkpoints_dir

logger = logging.getLogger("hf_cir.toy.build_models")

REPO_ROOT = Path(__file__).resolve().parents[3]

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
    path = REPO_ROOT / "training" / name
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: `make toy-models` runs the repository's training scripts; run it from a checkout."
        )
    return path


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
        "text-to-image and masked examples) with the toy CLIP (`../clip`) as its text and image encoders. Sample it "
        "with `guidance_scale=1.5, image_guidance_scale=2.0` (`hf-cir evaluate ... --guidance-scale 1.5 "
        "--image-guidance-scale 2.0`), chosen on validation queries with training targets: the reference's "
        "7.5 / 1.5 over-steer this small prior (held-out Recall@10 43-48 instead of 89-91). It knows only the toy "
        "world; it is not a general-purpose model. License: Apache-2.0 (weights trained by hf-cir on synthetic data)."
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
        from .benchmark import format_toy_table

        section = "\n## Toy benchmark (held-out queries, `hf-cir evaluate --benchmark toy`)\n\n"
        body = body.split(section)[0].rstrip("\n") + "\n" + section + format_toy_table(results) + "\n"
    body = body.replace(
        "- **License:** cc-by-nc-4.0 (the license of the released LinCIR weights: non-commercial use only).",
        "- **License:** apache-2.0 (toy weights trained by hf-cir on synthetic data).",
    )
    card.text = body
    card.save(path)


# Usage-snippet examples in the toy world's vocabulary (the toy tokenizer knows no other word), with the guidance
# scales the toy CompoDiff is sampled with.
TOY_LINCIR_EXAMPLE_TEXT = "is blue and on the left"
TOY_COMPODIFF_EXAMPLE = {
    "prompt": "make it blue and move it to the left",
    "negative_prompt": "striped",
    "guidance_scale": 1.5,
    "image_guidance_scale": 2.0,
}


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
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"hf_cir_toy_{name}", _script(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_parser()


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
            card = create_compodiff_model_card(
                pipe, training_details=details, license="apache-2.0", example=TOY_COMPODIFF_EXAMPLE
            )
        finally:
            os.chdir(cwd)
    card.save(str(folder / "README.md"))
    annotate_toy_card(folder, kind, results)


def build_clip(work_dir: Path, device: str = "cpu") -> Path:
    from .clip import ToyCLIPTrainingArguments, train_toy_clip

    output = work_dir / "clip"
    metrics = train_toy_clip(output, args=ToyCLIPTrainingArguments(), log_every=100, overwrite=True, device=device)
    logger.info("toy CLIP: %s", metrics)
    return output


def build_lincir(work_dir: Path, clip_dir: Path) -> Path:
    from .world import ToyWorld

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


def build_compodiff(work_dir: Path, clip_dir: Path) -> Path:
    from .compodiff_data import build_compodiff_pipeline

    return build_compodiff_pipeline(work_dir, clip_dir, run_script=_run_script, script=_script)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hf_cir.toy.build_models",
        description="Retrain the toy CLIP, LinCIR and CompoDiff checkpoints and print the toy benchmark table.",
    )
    parser.add_argument("--output-dir", default=str(default_checkpoints_dir()), help="where the finished folders go")
    parser.add_argument("--work-dir", default="toy_runs", help="training runs, logs and data (default: ./toy_runs)")
    parser.add_argument(
        "--only", nargs="+", choices=["clip", "lincir", "compodiff"], default=None, help="rebuild only these"
    )
    parser.add_argument("--device", default="cpu", help="device of the CLIP training (the scripts run with --cpu)")
    parser.add_argument("--skip-evaluation", action="store_true", help="do not compute the benchmark table")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

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
        from .benchmark import evaluate_toy_models, format_toy_table

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
