"""A CompoDiffScheduler config survives a round trip through each of its `compatibles` unchanged (diffusers'
`SchedulerCommonTest.test_compatibles`), whatever the process's string hashing: diffusers records the settings left
at their defaults as `list(set(...))`, in an order that changes with `PYTHONHASHSEED`."""

import os
import subprocess
import sys

ROUND_TRIP = """
from hf_cir import CompoDiffScheduler
scheduler = CompoDiffScheduler(num_train_timesteps=1000)
for compatible in scheduler.compatibles:
    back = CompoDiffScheduler.from_config(compatible.from_config(scheduler.config).config)
    kept = {key: value for key, value in back.config.items() if key in scheduler.config}
    assert kept == dict(scheduler.config), (compatible.__name__, kept, dict(scheduler.config))
print("ok")
"""


def test_round_trip_through_every_compatible_under_several_hash_seeds():
    # Seeds 4 and 6 gave a different order before the fix; 1 is one that happened to agree.
    for seed in ("1", "4", "6"):
        env = dict(os.environ, PYTHONHASHSEED=seed, OMP_NUM_THREADS="1")
        result = subprocess.run(
            [sys.executable, "-c", ROUND_TRIP], capture_output=True, text=True, timeout=300, env=env
        )
        assert result.returncode == 0 and result.stdout.strip() == "ok", (seed, result.stderr[-2000:])
