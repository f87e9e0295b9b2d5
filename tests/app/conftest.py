"""One `hf-cir app` server for the app tests: the toy default (plus a tiny unCLIP decoder) in a subprocess."""

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

pytest.importorskip("gradio", reason="the app extra is not installed: pip install 'hf-cir[app]'")

# First start renders and indexes the toy gallery; a loaded CI machine may need a few minutes.
STARTUP_TIMEOUT = 300


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class AppServer:
    def __init__(self, url: str, cache_dir, process: subprocess.Popen, log_path, startup_seconds: float):
        self.url, self.cache_dir, self.process, self.log_path = url, cache_dir, process, log_path
        self.startup_seconds = startup_seconds

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def running_app(work, *arguments):
    """`python -m hf_cir app --cache-dir WORK/toy --port FREE ARGUMENTS...` until the block ends."""
    port = free_port()
    log_path = work / f"server-{port}.log"
    # Each server keeps Gradio's upload cache in its own folder: the tests look inside it for what was copied.
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", GRADIO_TEMP_DIR=str(work / f"gradio-{port}"))
    command = [
        sys.executable,
        "-m",
        "hf_cir",
        "app",
        "--cache-dir",
        str(work / "toy"),
        "--port",
        str(port),
        *arguments,
    ]
    started = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"hf-cir app exited with {process.returncode}:\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(url + "gradio_api/info", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.perf_counter() - started > STARTUP_TIMEOUT:
                pytest.fail(f"hf-cir app did not answer within {STARTUP_TIMEOUT} s:\n{log_path.read_text()}")
            time.sleep(1)
        server = AppServer(url, work / "toy", process, log_path, time.perf_counter() - started)
        server.upload_folder = work / f"gradio-{port}"
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="session")
def app_work(tmp_path_factory):
    """The folder of the app tests' servers: one toy gallery (written by the first server) and a tiny decoder."""
    return tmp_path_factory.mktemp("app")


@pytest.fixture(scope="session")
def start_app():
    """`running_app` for tests that need a server of their own."""
    return running_app


@pytest.fixture(scope="session")
def app_server(app_work):
    """`hf-cir app` on the toy default with a tiny random unCLIP decoder (for /imagine)."""
    from tiny_unclip import make_tiny_stable_unclip

    decoder = app_work / "decoder"
    make_tiny_stable_unclip(64).save_pretrained(decoder)  # the toy CLIP's embedding size
    with running_app(app_work, "--decoder", str(decoder)) as server:
        yield server


@pytest.fixture(scope="session")
def client(app_server):
    from gradio_client import Client

    return Client(app_server.url, verbose=False)
