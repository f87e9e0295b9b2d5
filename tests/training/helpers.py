"""Running the training scripts in tests: in-process (fast), as a subprocess (to SIGKILL it), or as a real 2-process
gloo run on CPU (forked workers, like `accelerate.debug_launcher`, on a free port)."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"hf_cir_training_script_{name}", ROOT / "training" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _reset_accelerate() -> None:
    from accelerate.state import AcceleratorState, GradientState, PartialState

    AcceleratorState._reset_state(True)
    PartialState._reset_state()
    GradientState._reset_state()


def run_in_process(script, argv: list[str]) -> None:
    _reset_accelerate()
    try:
        script.main(script.parse_args([str(a) for a in argv]))
    finally:
        _reset_accelerate()


def run_subprocess(
    name: str, argv: list[str], env: dict | None = None, timeout: int = 300, kill_at: str | None = None
) -> subprocess.CompletedProcess:
    """Run `training/{name}.py` in a fresh process; `kill_at="step:3"` or `"checkpoint:4"` SIGKILLs it there (the
    fault is injected by `faults.py`, a wrapper around the script, never by the library)."""
    script = str(ROOT / "training" / f"{name}.py")
    wrapper = [str(Path(__file__).with_name("faults.py")), kill_at] if kill_at else []
    return subprocess.run(
        [sys.executable, *wrapper, script, *map(str, argv)],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_two_processes(name: str, argv: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    """A real 2-process (gloo, CPU) run: `accelerate launch --multi_gpu --num_processes 2` with the script's `--cpu`
    flag (on CPU-only machines `accelerate launch --cpu --num_processes 2` starts a single process)."""
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
        str(ROOT / "training" / f"{name}.py"), *map(str, argv), "--cpu",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if result.returncode != 0:
        raise AssertionError(f"2-process run failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result


def weights(path: Path, prefix: str = "") -> dict:
    return {k: v for k, v in load_file(str(path)).items() if k.startswith(prefix)}


# Arguments a card leaves out of its command: secrets, and resuming (which does not change the result).
_NOT_IN_CARDS = ("hub_token", "resume_from_checkpoint")


def card_command(card_text: str) -> list[str]:
    """The words of a model card's "Command (equivalent)" block, as bash splits them."""
    block = card_text.split("```bash\n", 1)[1].split("\n```", 1)[0]
    split = subprocess.run(
        ["bash", "-c", f'set -- {block}\nprintf "%s\\0" "$@"'], capture_output=True, text=True, check=True
    )
    return split.stdout.split("\0")[:-1]


def _comparable(arguments: dict) -> dict:
    from hf_cir.hub import portable_path

    def portable(value):
        if isinstance(value, str):
            return portable_path(value)
        if isinstance(value, list):
            return [portable(item) for item in value]
        return value

    return {key: portable(value) for key, value in arguments.items() if key not in _NOT_IN_CARDS}


def card_arguments(script, card_text: str) -> dict:
    """The arguments the card's command gives to `script`'s own parser."""
    words = card_command(card_text)
    assert words[:2] == ["accelerate", "launch"] and words[2] == f"training/{Path(script.__file__).name}", words[:3]
    return _comparable(vars(script.parse_args(words[3:])))


def run_arguments(script, argv: list) -> dict:
    """The arguments of a run with `argv`, local paths as a card shows them (`hf_cir.hub.portable_path`)."""
    return _comparable(vars(script.parse_args([str(a) for a in argv])))


def run_cli(script, argv: list, prog: str) -> int:
    """Run a training script in this process through its command-line boundary (`run_training_script`, as
    `__main__` does); returns the exit status."""
    from hf_cir.training import run_training_script

    _reset_accelerate()
    try:
        return run_training_script(script.main, script.parse_args, [str(a) for a in argv], prog=prog)
    finally:
        _reset_accelerate()
