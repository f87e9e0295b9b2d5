"""One toy query, one seed: the same top-10 through the pipeline (`pipe(text, image=ref)` with the checkpoint's own
defaults, ranked against the gallery by hand), `hf-cir search` on the toy index and the app's engine."""

import json

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from hf_cir import CompoDiffPipeline
from hf_cir.app.engine import Query, load_toy_engine
from hf_cir.cli import main
from hf_cir.toy import ToyWorld, toy_checkpoint

TEXT = "make the object blue"


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    folder = tmp_path_factory.mktemp("parity")
    engine = load_toy_engine(folder / "toy", device="cpu")
    world = ToyWorld()
    reference = world.render(world.held_out_combinations[0].replace(color="red"), 1, stream="eval")
    reference.save(folder / "reference.png")
    return engine, folder


def test_pipe_cli_and_app_give_the_same_top_10(toy, capsys):
    engine, folder = toy
    reference = Image.open(folder / "reference.png").convert("RGB")

    app = engine.search(None, Query(text=TEXT, image=reference, methods=["compodiff"], top_k=10))
    app_ids = [hit["id"] for hit in app["columns"]["compodiff"]["hits"]]

    index = folder / "toy" / "compodiff.index"
    argv = ["search", "--index", str(index), "--image", str(folder / "reference.png"), "--text", TEXT, "--json"]
    assert main([*argv, "--no-progress"]) == 0
    cli_ids = [hit["path"] for hit in json.loads(capsys.readouterr().out)["results"]]

    pipe = CompoDiffPipeline.from_pretrained(toy_checkpoint("compodiff"))
    pipe.set_progress_bar_config(disable=True)
    query = pipe(TEXT, image=reference, generator=torch.Generator().manual_seed(0)).image_embeds
    names = sorted(p.name for p in (folder / "toy" / "images").glob("*.png"))
    with torch.no_grad():
        gallery = torch.cat(
            [
                pipe.encode_image(
                    [Image.open(folder / "toy" / "images" / n).convert("RGB") for n in names[i : i + 256]]
                )
                for i in range(0, len(names), 256)
            ]
        )
    scores = F.normalize(query, dim=-1) @ F.normalize(gallery, dim=-1).T
    pipe_ids = [names[i] for i in scores[0].topk(10).indices.tolist()]

    assert len(app_ids) == 10 and app_ids == cli_ids == pipe_ids, (app_ids, cli_ids, pipe_ids)
