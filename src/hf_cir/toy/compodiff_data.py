"""CompoDiff on the toy world: training files for `training/precompute_embeddings.py`, then the two stages of
`training/train_compodiff.py`.

Three example kinds, all from the training combinations only (held-out combinations never appear):

- text-to-image (`t2i`): a rendered image and one of its captions;
- triplets: a reference image, a modification text, the target image, and the reverse text (target -> reference)
  so that the training script may swap the pair;
- masked: an image, a mask over its object's bounding square, and its caption: the prior learns to restore the
  masked object from the text (the paper's masked examples; the pipeline zeroes the masked region before encoding).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from PIL import Image

from .world import _CENTRES, _RADII, CAPTION_TEMPLATES, ToyWorld

logger = logging.getLogger(__name__)

__all__ = [
    "COMPODIFF_STAGE1_ARGS",
    "COMPODIFF_STAGE2_ARGS",
    "build_compodiff_pipeline",
    "write_compodiff_training_files",
]

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
    >>> from hf_cir.toy.compodiff_data import write_compodiff_training_files
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


def _flags(arguments: dict[str, str | None]) -> list[str]:
    flags = []
    for key, value in arguments.items():
        flags.append(key)
        if value is not None:
            flags.append(value)
    return flags


def build_compodiff_pipeline(work_dir: Path, clip_dir: Path, run_script, script) -> Path:
    """Precompute the toy embeddings with the toy CLIP and train both CompoDiff stages; returns the stage-2 folder.

    `run_script(path, arguments, log_path)` runs a training script; `script(name)` finds it (see `build_models`).
    """
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
        run_script(script("precompute_embeddings.py"), arguments, work_dir / f"precompute_{task}.log")
        embeddings[task] = output

    stage1 = work_dir / "compodiff_stage1"
    run_script(
        script("train_compodiff.py"),
        ["--stage", "1", "--train_data", str(embeddings["t2i"]), "--output_dir", str(stage1), "--overwrite_output_dir"]
        + _flags(COMPODIFF_STAGE1_ARGS),
        work_dir / "train_compodiff_stage1.log",
    )
    stage2 = work_dir / "compodiff"
    run_script(
        script("train_compodiff.py"),
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
    return stage2
