"""training/precompute_embeddings.py and training/train_compodiff.py on the tiny fixture CLIP and a tiny prior: the
embeddings match the encoders, both stages learn and write a loadable pipeline with its card, a run killed while
writing a checkpoint resumes bit-identically, 2 processes match 1, and bad input fails clearly."""

import json
import shutil
import signal

import pytest
import torch
from PIL import Image, ImageDraw
from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

from hf_cir import CompoDiffPipeline, CompoDiffPriorTransformer
from hf_cir.training.embeddings import CompoDiffBatchSampler, build_task_pools, load_embedding_dataset

from .helpers import (
    ROOT,
    card_arguments,
    load_script,
    run_arguments,
    run_in_process,
    run_subprocess,
    run_two_processes,
    weights,
)

PRECOMPUTE = load_script("precompute_embeddings")
TRAIN = load_script("train_compodiff")
COLORS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30), "yellow": (230, 230, 30)}
SHAPES = ("square", "circle")
PRIOR_SIZE = ["--num_layers", 1, "--num_attention_heads", 2, "--attention_head_dim", 16, "--mask_size", 8]


def _draw(color, shape):
    image = Image.new("RGB", (32, 32), (128, 128, 128))
    draw = ImageDraw.Draw(image)
    (draw.rectangle if shape == "square" else draw.ellipse)([6, 6, 26, 26], fill=COLORS[color])
    return image


@pytest.fixture(scope="module")
def embeddings(tiny_clip_dir, tmp_path_factory):
    """t2i, triplet and masked embedding folders made by precompute_embeddings.py from generated images."""
    root = tmp_path_factory.mktemp("compodiff-data")
    (root / "img").mkdir()
    pairs = []
    for color in COLORS:
        for shape in SHAPES:
            _draw(color, shape).save(root / "img" / f"{color}_{shape}.png")
            pairs.append({"image": f"{color}_{shape}.png", "text": f"a {color} {shape}"})
    mask = Image.new("L", (32, 32), 0)
    ImageDraw.Draw(mask).rectangle([0, 0, 15, 31], fill=255)
    mask.save(root / "img" / "mask.png")
    triplets = [
        {
            "reference": a["image"],
            "target": b["image"],
            "text": "make it " + b["text"][2:],
            "back": "make it " + a["text"][2:],
        }
        for a in pairs
        for b in pairs[:3]
        if a is not b
    ]
    masked = [{"image": p["image"], "mask": "mask.png", "text": p["text"]} for p in pairs]
    files = {}
    for name, rows in (("t2i", pairs), ("triplet", triplets), ("masked", masked)):
        files[name] = root / f"{name}.jsonl"
        files[name].write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    common = [
        "--text_encoder_name_or_path",
        tiny_clip_dir,
        "--image_encoder_name_or_path",
        tiny_clip_dir,
        "--image_root",
        root / "img",
    ]
    out = {name: root / f"emb-{name}" for name in files}
    run_in_process(
        PRECOMPUTE,
        [
            "--task",
            "t2i",
            "--train_file",
            files["t2i"],
            "--output_dir",
            out["t2i"],
            "--chunk_size",
            3,
            "--batch_size",
            2,
            *common,
        ],
    )
    run_in_process(PRECOMPUTE, [
        "--task", "triplet", "--train_file", files["triplet"], "--output_dir", out["triplet"], "--reference_image_column",
        "reference", "--target_image_column", "target", "--reverse_text_column", "back", *common,
    ])  # fmt: skip
    run_in_process(
        PRECOMPUTE,
        [
            "--task",
            "masked",
            "--train_file",
            files["masked"],
            "--output_dir",
            out["masked"],
            "--mask_size",
            8,
            *common,
        ],
    )
    return {"root": root, "files": files, "common": common, **out}


def test_training_mask_equals_the_pipelines_mask_bitwise(embeddings, tiny_clip_dir):
    """The precomputed masked example and the pipeline's own preparation of the same image and mask agree: the
    prior-side mask bitwise, the masked reference image embedding to float32 rounding (one mask preparation)."""
    from hf_cir import CompoDiffScheduler

    encoder = CLIPVisionModelWithProjection.from_pretrained(tiny_clip_dir, dtype=torch.float32).eval()
    processor = CLIPImageProcessor.from_pretrained(tiny_clip_dir)
    prior = CompoDiffPriorTransformer(
        embedding_dim=64, num_layers=1, num_attention_heads=2, attention_head_dim=16, text_embed_dim=32, mask_size=8
    )
    pipe = CompoDiffPipeline(
        prior=prior, scheduler=CompoDiffScheduler(), text_encoder=None, tokenizer=None,
        image_encoder=encoder, image_processor=processor,
    )  # fmt: skip
    masked, _ = load_embedding_dataset(str(embeddings["masked"]))
    row = masked.with_format("torch")[0]
    image = Image.open(embeddings["root"] / "img" / "red_square.png").convert("RGB")
    mask = Image.open(embeddings["root"] / "img" / "mask.png")
    pixel_values, images = pipe._preprocess_images(image)
    pixel_mask, prior_mask = pipe._prepare_mask(mask, 1, images, tuple(pixel_values.shape[-2:]))
    assert torch.equal(prior_mask[0].to(torch.uint8), row["mask"])
    with torch.no_grad():
        reference = pipe.encode_image(pixel_values * (1 - pixel_mask))
    # The masks are bitwise equal; the embedding only differs by the batch it was computed in (precompute batches 8
    # images, float32 matrix products round differently by batch size).
    torch.testing.assert_close(reference[0], row["reference_image_embeds"].float(), rtol=0, atol=1e-6)


def test_precomputed_embeddings_match_the_encoders_and_resume(embeddings, tiny_clip_dir):
    dataset, info = load_embedding_dataset(str(embeddings["t2i"]))
    assert len(dataset) == 8 and info["num_chunks"] == 3 and info["embedding_dim"] == 64
    encoder = CLIPVisionModelWithProjection.from_pretrained(tiny_clip_dir, dtype=torch.float32)
    processor = CLIPImageProcessor.from_pretrained(tiny_clip_dir)
    image = Image.open(embeddings["root"] / "img" / "green_circle.png").convert("RGB")
    with torch.no_grad():
        expected = encoder(**processor(images=image, return_tensors="pt")).image_embeds[0]
    row = dataset.with_format("torch")[5]
    assert row["task"] == "t2i" and row["id"] == 5
    torch.testing.assert_close(row["target_image_embeds"], expected, rtol=0, atol=1e-6)
    assert tuple(row["text_embeds"].shape) == (77, 32)

    masked, _ = load_embedding_dataset(str(embeddings["masked"]))
    mask = masked.with_format("torch")[0]["mask"]
    assert mask.shape == (8, 8) and mask[:, :4].eq(1).all() and mask[:, 4:].eq(0).all()
    triplets, _ = load_embedding_dataset(str(embeddings["triplet"]))
    assert "reverse_text_embeds" in triplets.column_names

    # Resumable: an interrupted run (a missing chunk) recomputes only what is missing (in a copy: the other tests
    # share the fixture's folders).
    copy = embeddings["root"] / "emb-t2i-resume"
    shutil.copytree(embeddings["t2i"], copy)
    chunks = sorted((copy / "data").glob("*.parquet"))
    kept = {p: p.stat().st_mtime_ns for p in chunks[:2]}
    chunks[2].unlink()
    argv = [
        "--task",
        "t2i",
        "--train_file",
        embeddings["files"]["t2i"],
        "--output_dir",
        copy,
        "--chunk_size",
        3,
        "--batch_size",
        2,
        *embeddings["common"],
    ]
    run_in_process(PRECOMPUTE, argv)
    assert all(p.stat().st_mtime_ns == mtime for p, mtime in kept.items()) and chunks[2].is_file()
    again, _ = load_embedding_dataset(str(copy))
    torch.testing.assert_close(
        again.with_format("torch")["target_image_embeds"],
        dataset.with_format("torch")["target_image_embeds"],
        rtol=0,
        atol=1e-6,
    )
    other = list(argv)
    other[other.index("--chunk_size") + 1] = 4
    with pytest.raises(ValueError, match=r"embedding chunk\(s\) of a run with other settings"):
        run_in_process(PRECOMPUTE, other)
    with pytest.raises(ValueError, match=r"--image_column 'picture' is not a column"):
        run_in_process(
            PRECOMPUTE,
            [*argv[:8], "--output_dir", embeddings["root"] / "x", "--image_column", "picture", *embeddings["common"]],
        )


def stage_args(output_dir, *extra):
    return [
        "--output_dir", output_dir, "--train_batch_size", 8, "--learning_rate", 2e-3, "--lr_warmup_steps", 0,
        "--seed", 0, "--ema_decay", 0.9, *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def stage1(embeddings, tiny_clip_dir, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("stage1") / "s1"
    run_in_process(
        TRAIN,
        [
            "--stage",
            1,
            "--train_data",
            embeddings["t2i"],
            *PRIOR_SIZE,
            "--max_train_steps",
            8,
            "--license",
            "apache-2.0",  # stage 2 (no --license) takes it from stage 1's card
            *stage_args(output_dir),
        ],
    )
    return output_dir


def stage2_args(embeddings, stage1, output_dir, *extra):
    data = [embeddings["triplet"], embeddings["t2i"], embeddings["masked"]]
    return [
        "--stage",
        2,
        "--stage1_model_name_or_path",
        stage1,
        "--train_data",
        *data,
        "--max_train_steps",
        6,
        "--checkpointing_steps",
        2,
        *stage_args(output_dir, *extra),
    ]


@pytest.fixture(scope="module")
def stage2(embeddings, stage1, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("stage2") / "s2"
    run_in_process(TRAIN, stage2_args(embeddings, stage1, output_dir))
    return output_dir


def test_stages_learn_and_write_a_complete_documented_pipeline(embeddings, stage1, stage2):
    losses = [h["train/loss"] for h in json.loads((stage1 / "training_log.json").read_text())]
    assert len(losses) == 8 and sum(losses[-2:]) / 2 < 0.7 * losses[0], losses
    for folder, stage in ((stage1, 1), (stage2, 2)):
        pipeline = CompoDiffPipeline.from_pretrained(folder)
        assert pipeline.text_encoder is not None and pipeline.image_encoder is not None
        assert pipeline.prior.config.num_layers == 1 and pipeline.prior.config.mask_size == 8
        out = pipeline("a red square", num_inference_steps=3, generator=torch.Generator().manual_seed(0)).image_embeds
        assert out.shape == (1, 64) and torch.isfinite(out).all()
        card = (folder / "README.md").read_text()
        assert "license: apache-2.0" in card and f"| `stage` | `{stage}` |" in card
        assert "| `adam_weight_decay` | `0.06` |" in card and "| `ema_decay` | `0.9` |" in card
        assert not list(folder.rglob("*.bin")) or all("checkpoint-" in str(p) for p in folder.rglob("*.bin"))
    # The card's command reads back as the run's arguments; no local absolute path is in the card.
    card_text = (stage2 / "README.md").read_text()
    assert card_arguments(TRAIN, card_text) == run_arguments(TRAIN, stage2_args(embeddings, stage1, stage2))
    assert str(stage2.parent.parent) not in card_text and str(ROOT) not in card_text
    # Stage 2 starts from stage 1's prior.
    assert '"triplet": 0.4' in card_text
    prior1 = CompoDiffPriorTransformer.from_pretrained(stage1, subfolder="prior")
    start = weights(stage2 / "checkpoint-2" / "prior.safetensors")
    drift = max((start[k] - v).abs().max().item() for k, v in prior1.state_dict().items())
    assert 0 < drift < 0.1  # two small steps away from stage 1, not from a fresh initialisation


def test_trained_pipeline_loads_without_hf_cir(stage2, tmp_path):
    # The training output opens with `DiffusionPipeline.from_pretrained(..., trust_remote_code=True)` where hf-cir
    # is absent (the module files it carries), and gives what CompoDiffPipeline gives.
    from remote_code_helpers import assert_loaded_generically, load_in_fresh_process, run_query

    index = json.loads((stage2 / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline_compodiff", "CompoDiffPipeline"]
    embeds, metadata = load_in_fresh_process(tmp_path, {"stage2": {"folder": stage2, "loader": "diffusers"}}, False)
    assert metadata["hf_cir_imported"] is False
    expected = run_query(CompoDiffPipeline.from_pretrained(stage2))
    assert_loaded_generically(embeds["stage2"], metadata["stage2"], expected)


def test_killed_while_checkpointing_resumes_bit_identically(embeddings, stage1, stage2, tmp_path):
    output_dir = tmp_path / "killed"
    killed = run_subprocess("train_compodiff", stage2_args(embeddings, stage1, output_dir), kill_at="checkpoint:4")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    # checkpoint-4 was half written: only its temporary folder exists, and `latest` is checkpoint-2.
    assert (output_dir / ".checkpoint-4.tmp").is_dir()
    assert sorted(p.name for p in output_dir.glob("checkpoint-*")) == ["checkpoint-2"]
    run_in_process(TRAIN, stage2_args(embeddings, stage1, output_dir, "--resume_from_checkpoint", "latest"))
    resumed = weights(output_dir / "prior" / "diffusion_pytorch_model.safetensors")
    reference = weights(stage2 / "prior" / "diffusion_pytorch_model.safetensors")
    assert resumed.keys() == reference.keys() and all(torch.equal(resumed[k], reference[k]) for k in reference)
    # The EMA is saved by EMAModel.save_pretrained: a prior folder of its own, with its counters in the config.
    ema_resumed, ema_reference = (
        weights(output_dir / "checkpoint-4" / "prior_ema" / "diffusion_pytorch_model.safetensors"),
        weights(stage2 / "checkpoint-4" / "prior_ema" / "diffusion_pytorch_model.safetensors"),
    )
    assert ema_resumed.keys() == ema_reference.keys()
    assert all(torch.equal(ema_resumed[k], ema_reference[k]) for k in ema_reference)
    ema_config = json.loads((output_dir / "checkpoint-4" / "prior_ema" / "config.json").read_text())
    assert ema_config["optimization_step"] == 4 and ema_config["decay"] == 0.9


def test_two_process_run_matches_one_process_run(embeddings, stage1, tmp_path):
    data = [embeddings["triplet"], embeddings["t2i"], embeddings["masked"]]
    common = [
        "--stage", 2, "--stage1_model_name_or_path", stage1, "--train_data", *data, "--max_train_steps", 3,
        "--learning_rate", 2e-3, "--lr_warmup_steps", 0, "--seed", 0, "--ema_decay", 0.5, "--adam_epsilon", 1e-4,
    ]  # fmt: skip
    run_in_process(TRAIN, [*common, "--train_batch_size", 8, "--output_dir", tmp_path / "one", "--cpu"])
    run_two_processes("train_compodiff", [*common, "--train_batch_size", 4, "--output_dir", tmp_path / "two"])
    one = weights(tmp_path / "one" / "prior" / "diffusion_pytorch_model.safetensors")
    two = weights(tmp_path / "two" / "prior" / "diffusion_pytorch_model.safetensors")
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=0, atol=1e-5)
    losses = [
        [h["train/loss"] for h in json.loads((tmp_path / run / "training_log.json").read_text())]
        for run in ("one", "two")
    ]
    torch.testing.assert_close(torch.tensor(losses[1]), torch.tensor(losses[0]), rtol=1e-5, atol=1e-7)


def test_batches_follow_the_task_mix_swaps_and_guidance_drops(embeddings):
    sources = [load_embedding_dataset(str(embeddings[name]))[0] for name in ("triplet", "t2i", "masked")]
    pools = build_task_pools(sources)
    null_text = torch.full((77, 32), 7.0)
    sampler = CompoDiffBatchSampler(
        pools, {"triplet": 0.4, "t2i": 0.3, "masked": 0.3}, embedding_dim=64, mask_size=8, num_train_timesteps=1000,
        null_text_embeds=null_text, seed=1, swap_probability=0.5,
    )  # fmt: skip
    batches = [sampler.batch(step, 64, 0, 1) for step in range(4)]
    tasks = torch.cat([b["task_index"] for b in batches])
    shares = torch.bincount(tasks, minlength=3).float() / len(tasks)  # (triplet, t2i, masked)
    assert (shares - torch.tensor([0.4, 0.3, 0.3])).abs().max() < 0.1
    batch = batches[0]
    t2i = batch["task_index"] == 1
    assert batch["reference_image_embeds"][t2i].eq(0).all() and batch["mask"][t2i].eq(0).all()
    masked = (batch["task_index"] == 2) & ~batch["image_dropped"]
    assert batch["mask"][masked].sum() > 0 and batch["reference_image_embeds"][masked].abs().sum() > 0
    assert batch["text_embeds"][batch["text_dropped"]].eq(7.0).all()
    assert not batch["text_embeds"][~batch["text_dropped"]].eq(7.0).all()
    assert batch["reference_image_embeds"][batch["image_dropped"]].eq(0).all()
    assert 0 < torch.cat([b["swapped"] for b in batches]).sum() < (tasks == 0).sum()
    # Two processes together get exactly the one-process batch.
    mix = {"triplet": 0.4, "t2i": 0.3, "masked": 0.3}
    halves = [
        CompoDiffBatchSampler(pools, mix, 64, 8, 1000, null_text, seed=1).batch(0, 64, rank, 2) for rank in (0, 1)
    ]
    for key in ("target_image_embeds", "text_embeds", "noise", "timesteps", "mask"):
        assert torch.equal(torch.cat([h[key] for h in halves]), batch[key])
    with pytest.raises(ValueError, match="no 'masked' rows"):
        CompoDiffBatchSampler(
            build_task_pools(sources[:2]), {"triplet": 0.4, "t2i": 0.3, "masked": 0.3}, 64, 8, 1000, null_text
        )


def test_bad_input_fails_clearly(embeddings, stage1, stage2, tmp_path, capsys):
    with pytest.raises(SystemExit):
        TRAIN.parse_args(["--stage", "2", "--train_data", str(embeddings["t2i"]), "--output_dir", str(tmp_path)])
    assert "--stage1_model_name_or_path" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="holds no stage-1 prior|does not exist"):
        run_in_process(TRAIN, stage2_args(embeddings, tmp_path / "nothing", tmp_path / "a"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run_in_process(
            TRAIN,
            stage2_args(
                embeddings, stage1, tmp_path / "b", "--resume_from_checkpoint", tmp_path / "no-such-checkpoint"
            ),
        )
    with pytest.raises(ValueError, match="already holds checkpoints"):
        run_in_process(TRAIN, stage2_args(embeddings, stage1, stage2))
    with pytest.raises(ValueError, match="holds checkpoints of another run"):
        run_in_process(
            TRAIN,
            [*stage2_args(embeddings, stage1, stage2, "--resume_from_checkpoint", "latest"), "--masked_ratio", 0],
        )
    with pytest.raises(ValueError, match=r"8 usable rows .* fewer than one batch"):
        run_in_process(
            TRAIN,
            [
                "--stage",
                1,
                "--train_data",
                embeddings["t2i"],
                *PRIOR_SIZE,
                "--max_train_steps",
                1,
                *stage_args(tmp_path / "c"),
                "--train_batch_size",
                16,
            ],
        )
    with pytest.raises(ValueError, match="no 'triplet' rows"):
        run_in_process(
            TRAIN,
            [
                "--stage",
                2,
                "--stage1_model_name_or_path",
                stage1,
                "--train_data",
                embeddings["t2i"],
                "--max_train_steps",
                1,
                *stage_args(tmp_path / "d"),
            ],
        )


def test_precompute_splits_chunks_across_two_processes(embeddings, tmp_path):
    output_dir = tmp_path / "two"
    argv = [
        "--task",
        "t2i",
        "--train_file",
        embeddings["files"]["t2i"],
        "--output_dir",
        output_dir,
        "--chunk_size",
        3,
        *embeddings["common"],
    ]
    result = run_two_processes("precompute_embeddings", argv)
    assert (
        "[RANK 1] process 1: 1 chunks written" in result.stderr
        and "[RANK 0] process 0: 2 chunks written" in result.stderr
    )
    two, info = load_embedding_dataset(str(output_dir))
    one, _ = load_embedding_dataset(str(embeddings["t2i"]))
    assert list(two["id"]) == list(range(8)) and info["num_rows"] == 8
    for column in ("target_image_embeds", "text_embeds"):
        torch.testing.assert_close(
            two.with_format("torch")[column], one.with_format("torch")[column], rtol=0, atol=1e-5
        )
