# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""How long `hf-cir --help` and `hf-cir <command> --help` take, beside `python -c "import torch"` in the same run.

Each command runs in a fresh process (as a user types it), `--repeats` times; the table gives the median and the
best wall-clock seconds. The target is a median of at most 1.5 s: help must not import torch, transformers or
diffusers. The baseline row, `import torch` alone, shows what any command that imported torch would at least cost
on this machine at this moment (the machine is shared: compare rows of the same run, not across runs).

    python benchmarks/bench_cli_startup.py --repeats 7
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

from benchutils import format_table, write_json

TARGET_SECONDS = 1.5
COMMANDS = ["convert", "index", "search", "evaluate", "demo", "app", "export"]


def _time(argv: list[str], repeats: int) -> tuple[float, float, int]:
    seconds, code = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        completed = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
        seconds.append(time.perf_counter() - start)
        code = code or completed.returncode
    return statistics.median(seconds), min(seconds), code


def _heavy_modules_imported(argv: list[str]) -> list[str]:
    """Which of torch / transformers / diffusers a command imports (from `python -X importtime`)."""
    completed = subprocess.run(
        [sys.executable, "-X", "importtime", *argv[1:]], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    names = {line.rsplit("|", 1)[-1].strip() for line in completed.stderr.splitlines() if "|" in line}
    return sorted(name for name in ("torch", "transformers", "diffusers") if name in names)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="runs of each command (default 5)")
    parser.add_argument("--commands", nargs="*", default=COMMANDS, help="subcommands whose --help is timed")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    hf_cir = [sys.executable, "-m", "hf_cir"]
    rows = []
    cases = [("python -c 'import torch' (baseline)", [sys.executable, "-c", "import torch"], False)]
    cases.append(("hf-cir --help", [*hf_cir, "--help"], True))
    cases += [(f"hf-cir {name} --help", [*hf_cir, name, "--help"], True) for name in args.commands]
    for label, command, has_target in cases:
        median, best, code = _time(command, args.repeats)
        row = {"command": label, "median s": median, "best s": best, "exit": code}
        if has_target:
            row["imports"] = ", ".join(_heavy_modules_imported(command)) or "none of torch/transformers/diffusers"
            row[f"median <= {TARGET_SECONDS} s"] = "yes" if median <= TARGET_SECONDS and code == 0 else "no"
        rows.append(row)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"{args.repeats} runs each, fresh processes; load average at the end: {load:.2f}; hf-cir: {shutil.which('hf-cir')}"
    )
    print(format_table(rows))
    write_json(args.json, {"rows": rows, "repeats": args.repeats, "load_average": load})
    return 0


if __name__ == "__main__":
    sys.exit(main())
