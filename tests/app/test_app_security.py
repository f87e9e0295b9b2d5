"""`hf-cir app` against hostile clients and hostile galleries, over HTTP (gradio_client and raw requests).

Ids and paths are data, never addresses: nothing outside the galleries and Gradio's own uploads is read or served
(checked with sentinel files outside the gallery); every refusal is one clear line that names no server path and says
the same of existing and missing files; the machine is protected (pixel budget before decoding, bounded texts, top_k
and steps); concurrent clients all get their answer.
"""

import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

TOY_IMAGE = "small-red-circle-left-plain.png"


def app_error():
    from gradio_client.exceptions import AppError

    return AppError


def refusal(client, **inputs) -> str:
    """The message of the error `/search` answers `inputs` with (the test fails if it answers with results)."""
    with pytest.raises(app_error()) as caught:
        client.predict(api_name="/search", **inputs)
    return str(caught.value)


def upload(path):
    from gradio_client import handle_file

    return handle_file(str(path))


def editor(background=None, layers=()):
    return {"background": background, "layers": list(layers), "composite": None}


def random_png(path, size=(24, 24), seed=0):
    """A picture no other file has (random pixels), so its bytes identify it wherever it is copied."""
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="PNG")
    return path


def files_with_bytes(folder, data: bytes) -> list[Path]:
    digest = hashlib.sha256(data).digest()
    return [p for p in Path(folder).rglob("*") if p.is_file() and hashlib.sha256(p.read_bytes()).digest() == digest]


class AccessWatch:
    """Whether a file is read: its access time is set to 2001, and any read moves it (relatime updates an access time
    older than a day). `works` says whether this file system records reads at all (checked on a control file)."""

    def __init__(self, folder: Path):
        control = folder / "control.bin"
        control.write_bytes(b"control")
        os.utime(control, (1e9, 1e9))
        control.read_bytes()
        self.works = os.stat(control).st_atime > 1e9

    @staticmethod
    def arm(path: Path):
        os.utime(path, (1e9, os.stat(path).st_mtime))

    @staticmethod
    def was_read(path: Path) -> bool:
        return os.stat(path).st_atime > 1e9


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory):
    """A readable picture outside every gallery, and a path next to it that does not exist."""
    folder = tmp_path_factory.mktemp("outside")
    return random_png(folder / "secret.png", seed=11), folder / "missing.png"


def assert_one_clear_line(message: str, *server_paths):
    assert "\n" not in message.strip() and len(message) < 400, message
    assert "Traceback" not in message
    for path in server_paths:
        assert str(path) not in message, message


# -- client-named paths ----------------------------------------------------------------------------------------------


def raw_search(server, **inputs) -> tuple[str, dict]:
    """`/search` over plain HTTP (as any client may call it, without gradio_client's own upload of local files):
    `("complete", answer)` or `("error", {"error": message or None})`."""
    names = ["gallery", "reference", "reference_id", "text", "negative_text", "methods", "top_k", "steps",
             "guidance_scale", "image_guidance_scale", "source_weight", "seed", "mask"]  # fmt: skip
    body = json.dumps({"data": [inputs.get(name) for name in names]}).encode()
    request = urllib.request.Request(
        f"{server.url}gradio_api/call/search", data=body, headers={"Content-Type": "application/json"}
    )
    event = json.loads(urllib.request.urlopen(request, timeout=30).read())["event_id"]
    stream = urllib.request.urlopen(f"{server.url}gradio_api/call/search/{event}", timeout=120).read().decode()
    kind = re.findall(r"^event: (\w+)", stream, re.M)[-1]
    data = json.loads(re.findall(r"^data: (.*)$", stream, re.M)[-1])
    return kind, (data[0] if kind == "complete" else data)


def test_server_paths_in_payloads_are_refused_without_reading(app_server, sentinel, tmp_path):
    """Paths a client names, with and without Gradio's FileData marker, in every file input: refused, nothing read
    or copied, and where the app answers (Gradio passes some payloads through untouched) the same words for an
    existing and a missing file."""
    secret, missing = sentinel
    watch = AccessWatch(tmp_path)
    meta = {"_type": "gradio.FileData"}
    payloads = {
        "mask": lambda path: {"reference_id": TOY_IMAGE, "mask": {"path": str(path)}, "methods": ["compodiff"]},
        "mask (string)": lambda path: {"reference_id": TOY_IMAGE, "mask": str(path), "methods": ["compodiff"]},
        "mask (FileData)": lambda path: {"reference_id": TOY_IMAGE, "mask": {"path": str(path), "meta": meta}},
        "reference": lambda path: {"reference": editor({"path": str(path)}), "methods": ["lincir"]},
        "reference (FileData)": lambda path: {"reference": editor({"path": str(path), "meta": meta})},
        "reference (string)": lambda path: {"reference": str(path)},
        "layer": lambda path: {"reference_id": TOY_IMAGE, "reference": editor(None, [{"path": str(path)}])},
        "layer (FileData)": lambda path: {
            "reference_id": TOY_IMAGE,
            "reference": editor(None, [{"path": str(path), "meta": meta}]),
        },
        "traversal": lambda path: {
            "reference_id": TOY_IMAGE,
            "mask": {"path": f"{app_server.upload_folder}/../../{path.parent.name}/{path.name}"},
        },
    }
    answered_by_the_app = []
    for name, payload in payloads.items():
        AccessWatch.arm(secret)
        errors = {}
        for label, path in (("existing", secret), ("missing", missing), ("system", Path("/etc/passwd"))):
            kind, data = raw_search(app_server, text="make it blue", **payload(path))
            assert kind == "error", (name, label, data)
            errors[label] = data["error"]
        if watch.works:
            assert not AccessWatch.was_read(secret), f"{name}: the server read a file a client named"
        if errors["existing"] is not None:  # the app's own refusal (Gradio's own ones carry no message)
            answered_by_the_app.append(name)
            assert "not a file uploaded to this app" in errors["existing"], (name, errors)
            assert_one_clear_line(errors["existing"], secret, app_server.cache_dir, app_server.upload_folder)
        # No existence oracle: the same answer for an existing, a missing and a system file.
        assert errors["existing"] == errors["missing"] == errors["system"], (name, errors)
    # Gradio refuses FileData outside its cache and malformed editor values itself; a plain `{"path": ...}` for the
    # mask reaches the app (this was the hole: the app read and embedded the file), which refuses it.
    assert {"mask", "traversal"} <= set(answered_by_the_app), answered_by_the_app
    assert not files_with_bytes(app_server.upload_folder, secret.read_bytes()), "the file was copied for serving"


def test_a_real_upload_is_answered(client, sentinel):
    secret, _ = sentinel  # the refusals above were about the path a client named, not the picture
    answer = client.predict(reference=editor(upload(secret)), text="make it blue", methods=["lincir"], top_k=3,
                            api_name="/search")  # fmt: skip
    assert len(answer["columns"]["lincir"]["hits"]) == 3


def test_only_copies_of_indexed_images_are_served(app_server, client):
    def status(path):
        try:
            with urllib.request.urlopen(f"{app_server.url}gradio_api/file={path}", timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    images = app_server.cache_dir / "images"
    # The image folder itself is not served (a file there that the index does not list would be downloadable).
    assert status(images / TOY_IMAGE) in (403, 404)
    assert status(app_server.cache_dir / "lincir.index" / "index.json") in (403, 404)
    assert status("/etc/passwd") in (403, 404)
    # The page shows the gallery through copies the app made of indexed images.
    config = json.loads(urllib.request.urlopen(f"{app_server.url}config", timeout=10).read())
    shown = [item["image"] for component in config["components"] if component.get("type") == "gallery"
             for item in (component.get("props", {}).get("value") or [])]  # fmt: skip
    assert len(shown) == 96
    with urllib.request.urlopen(f"{app_server.url}gradio_api/file={shown[0]['path']}", timeout=10) as response:
        assert Image.open(io.BytesIO(response.read())).size == (32, 32)


# -- hostile values ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        ({"reference_id": "../lincir.index/index.json"}, r"`reference_id`: .* is not an image of the gallery"),
        ({"reference_id": "/etc/passwd"}, r"`reference_id`: '/etc/passwd' is not an image of the gallery"),
        ({"reference_id": "x" * 100_000}, r"`reference_id`: 'x+… is not an image of the gallery"),
        ({"reference_id": 7}, r"`reference_id` must be a string, got int"),
        ({"reference_id": TOY_IMAGE, "text": "x" * 100_000}, r"`text`: 100,000 characters, more than the 1,000"),
        ({"reference_id": TOY_IMAGE, "negative_text": "x" * 5000}, r"`negative_text`: 5,000 characters"),
        ({"reference_id": TOY_IMAGE, "text": ["make", "it"]}, r"`text` must be a string, got list"),
        ({"reference_id": TOY_IMAGE, "top_k": 0}, r"`top_k` must be an integer in \[1, 100\], got 0"),
        ({"reference_id": TOY_IMAGE, "top_k": 101}, r"`top_k` must be an integer in \[1, 100\], got 101"),
        ({"reference_id": TOY_IMAGE, "top_k": 10**12}, r"`top_k` must be an integer in \[1, 100\]"),
        ({"reference_id": TOY_IMAGE, "top_k": 2.5}, r"`top_k` must be a whole number, got 2.5"),
        ({"reference_id": TOY_IMAGE, "top_k": "ten"}, r"`top_k` must be a number, got 'ten'"),
        ({"reference_id": TOY_IMAGE, "top_k": True}, r"`top_k` must be a number, got bool"),
        ({"reference_id": TOY_IMAGE, "top_k": "nan"}, r"`top_k` must be a finite number"),
        ({"reference_id": TOY_IMAGE, "top_k": [5]}, r"`top_k` must be a number, got list"),
        ({"reference_id": TOY_IMAGE, "steps": 10**9}, r"`num_inference_steps` must be an integer in \[1, 100\]"),
        ({"reference_id": TOY_IMAGE, "guidance_scale": "inf"}, r"`guidance_scale` must be a finite number"),
        ({"reference_id": TOY_IMAGE, "seed": -1}, r"`seed` must be an integer in \[0, 2\*\*63\)"),
        ({"reference_id": TOY_IMAGE, "methods": "lincir"}, r"`methods` must be a list of method names"),
        ({"reference_id": TOY_IMAGE, "methods": ["lincir"] * 500}, r"`methods`: 'lincir' listed more than once"),
        ({"reference_id": TOY_IMAGE, "methods": ["y" * 10_000]}, r"`methods`: unknown method\(s\) 'y+… for"),
        ({"reference_id": TOY_IMAGE, "gallery": {"a": 1}}, r"`gallery` must be a gallery name, got dict"),
        ({"reference_id": TOY_IMAGE, "gallery": "../images"}, r"`gallery`: unknown gallery '../images'"),
    ],
)
def test_hostile_values_get_one_clear_line(app_server, client, inputs, expected):
    message = refusal(client, **{"text": "make it blue", **inputs})
    assert re.search(expected, message), message
    assert_one_clear_line(message, app_server.cache_dir, app_server.upload_folder)


def test_oversize_uploads_are_refused_before_decoding(app_server, client, tmp_path):
    """A 12000x12000 1-bit PNG (about 20 KB) claims 144 Mpixel: refused from its header, server memory unmoved."""
    bomb = tmp_path / "bomb.png"
    Image.new("1", (12000, 12000)).save(bomb, optimize=True)
    assert bomb.stat().st_size < 100_000
    pid = app_server.process.pid
    idle = _rss(pid)
    peak_is_exact = _reset_peak(pid)
    sampler = _PeakSampler(pid)
    answers = []
    with sampler:
        for inputs in (
            {"reference": editor(upload(bomb))},
            {"reference_id": TOY_IMAGE, "mask": upload(bomb), "methods": ["compodiff"]},
            {"reference_id": TOY_IMAGE, "reference": editor(None, [upload(bomb)])},
        ):
            try:
                answers.append(client.predict(api_name="/search", text="make it blue", **inputs))
            except app_error() as error:
                answers.append(str(error))
    peak = max(sampler.peak, _peak(pid) if peak_is_exact else 0)
    assert peak - idle < 300 * 2**20, f"server memory rose {(peak - idle) / 2**20:.0f} MB above idle"
    for message in answers:
        assert isinstance(message, str), "an answer instead of a refusal"
        assert re.search(r"\(bomb.png\) is 12000x12000 = 144,000,000 pixels, more than the 50,000,000", message)
        assert_one_clear_line(message, app_server.upload_folder)


def _rss(pid) -> int:
    return _status_kb(pid, "VmRSS") * 1024


def _peak(pid) -> int:
    return _status_kb(pid, "VmHWM") * 1024


def _status_kb(pid, field) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def _reset_peak(pid) -> bool:
    """Reset the kernel's peak-RSS mark of `pid` to its current RSS (Linux `clear_refs` 5); False if not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class _PeakSampler:
    """The highest RSS of `pid` seen every 5 ms while the block runs (a second measure beside the kernel's mark)."""

    def __init__(self, pid):
        self.pid, self.peak, self._stop = pid, 0, threading.Event()

    def __enter__(self):
        def sample():
            while not self._stop.is_set():
                self.peak = max(self.peak, _rss(self.pid))
                time.sleep(0.005)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


# -- the reference-exclusion rule ------------------------------------------------------------------------------------


def test_an_upload_identical_to_a_gallery_image_is_left_out_like_the_cli(app_server, client, tmp_path):
    from test_app_api import cli_search

    copy = tmp_path / "my-photo.png"  # the same picture under another name, as a user would upload it
    shutil.copyfile(app_server.cache_dir / "images" / TOY_IMAGE, copy)
    answer = client.predict(reference=editor(upload(copy)), text="make it blue", methods=["lincir", "image"],
                            api_name="/search")  # fmt: skip
    assert answer["query"]["excluded"] == TOY_IMAGE
    assert TOY_IMAGE not in [hit["id"] for column in answer["columns"].values() for hit in column["hits"]]
    # `hf-cir search --image` on the gallery's own file leaves it out and ranks the rest the same way.
    expected = cli_search(app_server.cache_dir / "lincir.index", app_server.cache_dir / "images" / TOY_IMAGE,
                          "make it blue")  # fmt: skip
    assert [hit["id"] for hit in answer["columns"]["lincir"]["hits"]] == expected
    # Another picture is not left out of anything.
    other = random_png(tmp_path / "other.png", size=(32, 32), seed=5)
    answer = client.predict(reference=editor(upload(other)), text="make it blue", methods=["lincir"],
                            api_name="/search")  # fmt: skip
    assert answer["query"]["excluded"] is None


# -- concurrency -----------------------------------------------------------------------------------------------------


def test_twenty_concurrent_clients_get_the_sequential_answers(app_server, tmp_path):
    from gradio_client import Client

    upload_a = random_png(tmp_path / "a.png", size=(32, 32), seed=1)
    jobs = [
        {"reference_id": TOY_IMAGE, "text": "make it blue", "methods": ["lincir", "image", "text", "sum"]},
        {"reference": editor(upload(upload_a)), "text": "make it large", "methods": ["lincir"], "top_k": 7},
        {"reference_id": "large-green-star-top-dotted.png", "text": "in red", "methods": ["compodiff"], "seed": 3},
        {"reference_id": TOY_IMAGE, "text": "x" * 2000},  # refused: its error is its answer
        {"reference_id": "../secret", "text": "make it blue"},  # refused
    ]

    def ask(job):
        client = Client(app_server.url, verbose=False)  # one client (one session) per caller
        try:
            answer = client.predict(api_name="/search", **job)
            return {key: [hit["id"] for hit in column["hits"]] for key, column in answer["columns"].items()}
        except app_error() as error:
            return str(error)

    for job in jobs:  # warm up: the CompoDiff text cache holds the texts from here on, as it does under load
        ask(job)
    sequential = [ask(job) for job in jobs]
    assert isinstance(sequential[0], dict) and isinstance(sequential[3], str) and isinstance(sequential[4], str)
    work = [jobs[number % len(jobs)] for number in range(20)]
    with ThreadPoolExecutor(max_workers=20) as pool:
        concurrent = list(pool.map(ask, work))
    for number, answer in enumerate(concurrent):
        assert answer == sequential[number % len(jobs)], number


# -- what the command prints -----------------------------------------------------------------------------------------


def test_the_command_names_only_its_own_options(app_server):
    log = app_server.log()
    assert f"hf-cir app: open {app_server.url}" in log
    assert "hf-cir app --share" in log
    assert "share=True" not in log and "launch()" not in log, log


# -- a webdataset gallery built before ids were checked --------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile_webdataset(tmp_path_factory):
    """A webdataset index with a tar member named `../../outside/secret.png`, built as before ids were checked (the
    source's id check switched off), and a sentinel file where that id would point if it were a path."""
    from hf_cir.retrieval import GalleryIndex, load_retrieval_model, sources
    from hf_cir.toy import toy_checkpoint

    work = tmp_path_factory.mktemp("webdataset")
    shards = work / "gallery" / "shards"
    shards.mkdir(parents=True)
    pictures = {
        f"a{number}": random_png(work / "pictures" / f"a{number}.png", seed=100 + number) for number in range(5)
    }
    pictures["../../outside/secret"] = random_png(work / "pictures" / "hostile.png", seed=200)
    with tarfile.open(shards / "00000.tar", "w") as archive:
        for key, path in pictures.items():
            archive.add(path, arcname=f"{key}.png")
    model = load_retrieval_model(toy_checkpoint("lincir"), device="cpu")
    output = work / "gallery.index"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sources, "check_gallery_id", lambda value, where: value, raising=False)
        GalleryIndex.build(model, sources.WebDatasetSource(str(shards / "00000.tar")), output, show_progress=False)
    assert "../../outside/secret" in GalleryIndex.load(output).paths
    secret = random_png(work / "outside" / "secret.png", seed=300)
    secret.rename(work / "outside" / "secret")  # no dot in its name: the id, joined to the root, names it
    return output, pictures, work / "outside" / "secret"


def test_a_webdataset_gallery_serves_its_tar_members_and_nothing_outside(start_app, app_work, hostile_webdataset):
    from gradio_client import Client

    index, pictures, secret = hostile_webdataset
    with start_app(app_work, "--index", str(index)) as server:
        client = Client(server.url, verbose=False)
        # The page shows the gallery's real pictures: the tar members' pixels, the hostile id's too (its data).
        config = json.loads(urllib.request.urlopen(f"{server.url}config", timeout=10).read())
        shown = [item["image"] for component in config["components"] if component.get("type") == "gallery"
                 for item in (component.get("props", {}).get("value") or [])]  # fmt: skip
        expected = sorted(np.asarray(Image.open(path).convert("RGB")).tobytes() for path in pictures.values())
        served = []
        for item in shown:
            with urllib.request.urlopen(f"{server.url}gradio_api/file={item['path']}", timeout=10) as response:
                served.append(np.asarray(Image.open(io.BytesIO(response.read())).convert("RGB")).tobytes())
        assert sorted(served) == expected
        # Searching, picking the hostile id as the reference, and an upload of a tar member's picture.
        answer = client.predict(reference_id="a0", text="make it blue", methods=["lincir"], api_name="/search")
        ids = [hit["id"] for hit in answer["columns"]["lincir"]["hits"]]
        assert "a0" not in ids and len(ids) == 5
        assert all(hit["image_path"] is None for hit in answer["columns"]["lincir"]["hits"])
        answer = client.predict(reference_id="../../outside/secret", text="make it blue", methods=["lincir"],
                                api_name="/search")  # fmt: skip
        assert "../../outside/secret" not in [hit["id"] for hit in answer["columns"]["lincir"]["hits"]]
        answer = client.predict(reference=editor(upload(pictures["a1"])), text="make it blue", methods=["lincir"],
                                api_name="/search")  # fmt: skip
        assert answer["query"]["excluded"] == "a1"
        assert not files_with_bytes(server.upload_folder, secret.read_bytes()), "the outside file was served"
