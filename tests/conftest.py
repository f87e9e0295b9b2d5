"""Shared test set-up: no network, a private HF cache, and the paths of the stored reference fixtures."""

import os
import tempfile
from pathlib import Path

# Nothing in the suite may reach the Hub; remote-code loading writes modules under $HF_HOME.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="hf-cir-tests-hf-home-")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

pytest_plugins = ["compodiff_fixtures"]

FIXTURES = Path(__file__).parent / "fixtures"
REFERENCE = FIXTURES / "reference"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The reference implementations' tiny weights and recorded outputs (see fixtures/reference/README.md)."""
    return REFERENCE


@pytest.fixture(scope="session")
def tiny_clip_dir() -> Path:
    """A tiny CLIPModel folder (float16 on disk: load with `dtype=torch.float32`) with the real CLIP tokenizer."""
    return REFERENCE / "clip"


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models on a shared 2-core machine: one thread avoids oversubscription (50x slower under load).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
