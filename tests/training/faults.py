"""Run a training script with a fault injected from the outside: SIGKILL at a chosen point.

    python tests/training/faults.py step:3 training/train_lincir.py ARGS...        # killed right after step 3
    python tests/training/faults.py checkpoint:4 training/train_compodiff.py ARGS... # killed with checkpoint 4 half written

The library has no hook for this: the wrapper patches `hf_cir.training.log_training_step` (which the scripts import
by name) and `accelerate.Accelerator.save_state` before the script is run as `__main__`.
"""

from __future__ import annotations

import functools
import os
import runpy
import signal
import sys
from pathlib import Path


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def install(event: str, step: int) -> None:
    import accelerate

    import hf_cir.training
    import hf_cir.training.run

    if event == "step":
        original = hf_cir.training.log_training_step

        @functools.wraps(original)
        def log_then_kill(accelerator, args, global_step, *rest, **kwargs):
            result = original(accelerator, args, global_step, *rest, **kwargs)
            if global_step == step:
                _kill()
            return result

        hf_cir.training.log_training_step = log_then_kill
        hf_cir.training.run.log_training_step = log_then_kill
    elif event == "checkpoint":
        original_save_state = accelerate.Accelerator.save_state

        @functools.wraps(original_save_state)
        def save_then_kill(self, output_dir=None, *args, **kwargs):
            result = original_save_state(self, output_dir, *args, **kwargs)
            if output_dir is not None and Path(output_dir).name == f".checkpoint-{step}.tmp" and self.is_main_process:
                _kill()
            return result

        accelerate.Accelerator.save_state = save_then_kill
    else:
        raise SystemExit(f"unknown fault {event!r}: expected step:N or checkpoint:N")


def main() -> None:
    spec, script, *argv = sys.argv[1:]
    event, step = spec.split(":")
    install(event, int(step))
    sys.argv = [script, *argv]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
