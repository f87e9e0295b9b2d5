"""The peers' common test suites, run on hf-cir's classes: opt-in (`make peer-test`), never part of `make test`.

With `HF_CIR_PEER_TESTS=1` the suites are materialised into a temporary folder before the test modules here are
imported (see materialise.py); without it nothing in this folder is collected.
"""

import atexit
import os
import shutil

from .materialise import (
    make_root,
    marker_names_used,
    materialise_diffusers_tests,
    materialise_transformers_tests,
)

# Markers the materialised suites use (transformers registers them in its own conftest.py, which the sdist omits).
PEER_MARKERS = (
    "accelerate_tests",
    "flash_attn_test",
    "flash_attn_3_test",
    "flash_attn_4_test",
    "torch_compile_test",
    "torch_export_test",
    "is_agent_test",
    "is_expert_parallel_test",
    "is_fsdp_test",
    "is_pipeline_test",
    "is_staging_test",
    "is_tensor_parallel_test",
    "is_training_test",
    "order",
)


def pytest_configure(config):
    markers = set(PEER_MARKERS)
    if _diffusers_tests is not None:
        markers |= marker_names_used(_diffusers_tests)
    for marker in sorted(markers):
        config.addinivalue_line("markers", f"{marker}: used by the peers' materialised test suites")


_diffusers_tests = None
if os.environ.get("HF_CIR_PEER_TESTS") != "1":
    collect_ignore_glob = ["*"]
else:
    _root = make_root()
    atexit.register(shutil.rmtree, _root, ignore_errors=True)
    materialise_transformers_tests(_root)
    # diffusers' suites need a source checkout (`$DIFFUSERS_SRC`); without one test_diffusers_compodiff.py skips.
    _diffusers_tests = materialise_diffusers_tests(_root)
