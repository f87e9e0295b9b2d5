"""`hf-cir app` through its API (gradio_client): the same rankings as `hf-cir search`, clear errors, a queue."""

import contextlib
import io
import json
import struct
import subprocess
import sys
import urllib.error
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

from hf_cir.cli import main as cli_main
from hf_cir.toy import ToyWorld
from hf_cir.toy.demo import select_demo_queries

TOY_SAMPLING = []  # the app and `hf-cir search` both sample with the toy CompoDiff checkpoint's own defaults


@pytest.fixture(scope="module")
def queries(tmp_path_factory):
    """Held-out toy queries whose reference pictures are not gallery images (another rendering), as PNG files."""
    folder = tmp_path_factory.mktemp("queries")
    world = ToyWorld()
    result = []
    for number, triplet in enumerate(select_demo_queries(world, 4, seed=3)):
        path = folder / f"reference-{number}.png"
        world.render(triplet.reference, 1, stream="eval").save(path)
        result.append((path, triplet.text))
    return result


@pytest.fixture(scope="module")
def left_half_mask(queries):
    path = queries[0][0].with_name("mask.png")
    size = Image.open(queries[0][0]).size
    mask = Image.new("L", size, 0)
    mask.paste(255, (0, 0, size[0] // 2, size[1]))
    mask.save(path)
    return path


def editor(path=None, layers=()):
    from gradio_client import handle_file

    return {
        "background": handle_file(str(path)) if path else None,
        "layers": [handle_file(str(layer)) for layer in layers],
        "composite": None,
    }


def ids(answer, column):
    return [hit["id"] for hit in answer["columns"][column]["hits"]]


def cli_search(index, image, text, *extra, subprocess_run=False, with_scores=False):
    """`hf-cir search --json` top-10 ids (in a subprocess, or in this process)."""
    argv = ["search", "--index", str(index), "--image", str(image), "--text", text, "--top-k", "10", "--json", *extra]
    if subprocess_run:
        done = subprocess.run([sys.executable, "-m", "hf_cir", *argv], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        output = done.stdout
    else:
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            assert cli_main(argv) == 0
        output = buffer.getvalue()
    results = json.loads(output)["results"]
    return [(hit["path"], hit["score"]) for hit in results] if with_scores else [hit["path"] for hit in results]


def test_serves_the_toy_default_with_stable_endpoints(app_server, client):
    assert app_server.startup_seconds < 300
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert {"/search", "/imagine"} <= set(endpoints)
    names = [parameter["parameter_name"] for parameter in endpoints["/search"]["parameters"]]
    assert names[:6] == ["gallery", "reference", "reference_id", "text", "negative_text", "methods"]
    assert "mask" in names and "top_k" in names


def test_lincir_ranking_equals_hf_cir_search(app_server, client, queries):
    image, text = queries[0]
    answer = client.predict(reference=editor(image), text=text, methods=["lincir"], top_k=10, api_name="/search")
    expected = cli_search(app_server.cache_dir / "lincir.index", image, text, subprocess_run=True)
    assert ids(answer, "lincir") == expected
    column = answer["columns"]["lincir"]
    assert column["timings"]["encode_source"] == "image encoder"
    assert all(hit["image_path"].startswith(str(app_server.cache_dir / "images")) for hit in column["hits"])
    assert [hit["rank"] for hit in column["hits"]] == list(range(1, 11))


def test_compodiff_with_a_mask_equals_hf_cir_search(app_server, client, queries, left_half_mask, tmp_path):
    image, text = queries[0]
    expected = cli_search(
        app_server.cache_dir / "compodiff.index", image, text, "--mask", str(left_half_mask), *TOY_SAMPLING,
        subprocess_run=True,
    )  # fmt: skip
    uploaded = client.predict(
        reference=editor(image), text=text, mask=_file(left_half_mask), methods=["compodiff"], api_name="/search"
    )
    assert uploaded["query"]["mask"] and uploaded["columns"]["compodiff"]["mask"]
    assert ids(uploaded, "compodiff") == expected
    # The same mask painted on the reference (a transparent layer with opaque strokes) is the same query.
    layer = Image.new("RGBA", Image.open(image).size, (0, 0, 0, 0))
    layer.paste((255, 0, 255, 255), (0, 0, layer.size[0] // 2, layer.size[1]))
    layer_path = tmp_path / "strokes.png"
    layer.save(layer_path)
    painted = client.predict(
        reference=editor(image, [layer_path]), text=text, methods=["compodiff"], api_name="/search"
    )
    assert ids(painted, "compodiff") == expected
    unmasked = client.predict(reference=editor(image), text=text, methods=["compodiff"], api_name="/search")
    assert unmasked["query"]["mask"] is False
    assert unmasked["columns"]["compodiff"]["hits"] != uploaded["columns"]["compodiff"]["hits"]


def _file(path):
    from gradio_client import handle_file

    return handle_file(str(path))


def test_all_methods_side_by_side(client, queries):
    image, text = queries[1]
    answer = client.predict(reference=editor(image), text=text, top_k=5, api_name="/search")
    assert list(answer["columns"]) == ["lincir", "compodiff", "image", "text", "sum"]
    for column in answer["columns"].values():
        assert len(column["hits"]) == 5
        assert set(column["timings"]) == {"encode", "compose", "search", "encode_source"}
    # The reference is encoded once per model: the LinCIR model's baselines reuse LinCIR's encoding.
    assert answer["columns"]["image"]["timings"]["encode_source"] == "image encoder, shared"
    assert answer["columns"]["text"]["timings"]["encode_source"] == "none"


def test_a_gallery_reference_reuses_its_stored_embedding(app_server, client):
    image_id = "small-red-circle-left-plain.png"
    answer = client.predict(
        reference_id=image_id, text="make it blue", methods=["lincir", "image"], api_name="/search"
    )
    assert answer["columns"]["lincir"]["timings"]["encode_source"] == "stored"
    assert answer["query"]["excluded"] == image_id and image_id not in ids(answer, "image")
    # `hf-cir search` encodes the same picture again (one image instead of the index's batches): the same ranking
    # up to float rounding, which may swap near-ties.
    expected = cli_search(
        app_server.cache_dir / "lincir.index",
        app_server.cache_dir / "images" / image_id,
        "make it blue",
        with_scores=True,
    )
    scores = [hit["score"] for hit in answer["columns"]["lincir"]["hits"]]
    assert scores == pytest.approx([score for _, score in expected], abs=1e-4)
    for hit in answer["columns"]["lincir"]["hits"]:
        assert hit["score"] == pytest.approx(dict(expected).get(hit["id"], hit["score"]), abs=1e-4)


def test_bad_uploads_get_a_clear_message_and_the_server_keeps_serving(app_server, client, queries, tmp_path):
    from gradio_client.exceptions import AppError

    not_an_image = tmp_path / "holiday.png"
    not_an_image.write_text("this is text, not a picture")
    with pytest.raises(AppError, match=r"`reference image`: holiday.png is not a readable image"):
        client.predict(reference=editor(not_an_image), text="make it blue", api_name="/search")
    # The CLI says the same of the same file.
    buffer = io.StringIO()
    with contextlib.redirect_stderr(buffer):
        index = str(app_server.cache_dir / "lincir.index")
        assert cli_main(["search", "--index", index, "--image", str(not_an_image), "--text", "make it blue"]) == 2
    assert "holiday.png is not a readable image (cannot identify image file" in buffer.getvalue()

    bomb = tmp_path / "bomb.png"
    _write_png_header(bomb, 100_000, 100_000)
    with pytest.raises(AppError, match=r"`reference image`: bomb.png is refused as a possible decompression bomb"):
        client.predict(reference=editor(bomb), text="make it blue", api_name="/search")
    with pytest.raises(AppError, match=r"LinCIR needs a modification text \(`text`\)"):
        client.predict(reference=editor(queries[0][0]), text="   ", api_name="/search")
    with pytest.raises(AppError, match=r"LinCIR needs a reference image \(`reference`"):
        client.predict(text="make it blue", methods=["lincir"], api_name="/search")
    with pytest.raises(AppError, match=r"`methods`: unknown method\(s\) 'pic2vec'"):
        client.predict(reference=editor(queries[0][0]), text="make it blue", methods=["pic2vec"], api_name="/search")
    image, text = queries[0]
    answer = client.predict(reference=editor(image), text=text, methods=["lincir"], api_name="/search")
    assert len(ids(answer, "lincir")) == 10


def _write_png_header(path, width, height):
    """A PNG that claims `width` x `height` pixels (a decompression bomb) in a few bytes."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )


def test_twenty_concurrent_queries_are_all_answered_correctly(app_server, client, queries):
    inputs = [(image, text, method) for image, text in queries[:2] for method in ("lincir", "compodiff")]
    expected = {
        (image, text, method): cli_search(
            app_server.cache_dir / f"{method}.index", image, text, *(TOY_SAMPLING if method == "compodiff" else [])
        )
        for image, text, method in inputs
    }
    jobs = [inputs[number % len(inputs)] for number in range(20)]

    def ask(job):
        image, text, method = job
        return job, client.predict(reference=editor(image), text=text, methods=[method], api_name="/search")

    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(ask, jobs))
    assert len(answers) == 20
    for (image, text, method), answer in answers:
        assert answer["query"]["text"] == text
        assert ids(answer, method) == expected[(image, text, method)]


def test_only_the_gallery_images_are_readable(app_server, client):
    from gradio_client.exceptions import AppError

    def status(path):
        try:
            with urllib.request.urlopen(f"{app_server.url}gradio_api/file={path}", timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    # Not even the image folder is served as a folder: the page shows copies of indexed images only.
    assert status(app_server.cache_dir / "images" / "small-red-circle-left-plain.png") in (403, 404)
    assert status(app_server.cache_dir / "lincir.index" / "index.json") in (403, 404)
    assert status("/etc/passwd") in (403, 404)
    assert status(__file__) in (403, 404)
    with pytest.raises(AppError, match="is not an image of the gallery"):
        client.predict(reference_id="../lincir.index/index.json", text="make it blue", api_name="/search")


def test_imagine_decodes_the_compodiff_query(client):
    picture = client.predict(reference_id="small-red-circle-left-plain.png", text="make it blue", api_name="/imagine")
    with Image.open(picture) as opened:
        assert opened.size == (16, 16)  # the tiny decoder's resolution


def test_defaults_are_local_and_private():
    from hf_cir.cli import build_parser

    args = build_parser().parse_args(["app"])
    assert args.host == "127.0.0.1" and args.share is False and args.index is None
    args = build_parser().parse_args(["app", "--index", "a.index", "b.index", "--model", "m1", "--model", "m2"])
    assert args.index == ["a.index", "b.index"] and args.model == ["m1", "m2"]


def test_without_gradio_the_command_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` now raises ImportError
    assert cli_main(["app"]) == 2
    assert "hf-cir app: error: the app needs gradio: pip install 'hf-cir[app]'." in capsys.readouterr().err
