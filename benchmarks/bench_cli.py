"""Wall time of ``llmspell`` commands, run as the installed program (like hyperfine: one
warm-up run, then repeated runs, median and p95).

- ``llmspell --help``;
- ``llmspell --connect FILE model list`` against a daemon kernel (``kernel start --daemon``);
- ``llmspell model list`` without ``--connect``: answered by the kernel's handlers in the
  command's own process, without starting a kernel (read-only commands need none).

Runs of the three commands are interleaved. Also recorded: ``python -c pass`` (the floor any
Python program pays here) and, for the slowest command, where its import time goes.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .common import PYTHON, Report, fmt, parse_args, rounds, summarize, workspace

NAME = "cli"
LLMSPELL = str(Path(PYTHON).with_name("llmspell"))
LIMITS = {"help": 0.3, "connect_list": 0.6, "embedded_list": 0.6}


def wall(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr}")
    return seconds


def import_profile(module: str, env: dict[str, str], top: int = 8) -> list[dict[str, Any]]:
    """The modules with the largest cumulative import time (``python -X importtime``)."""
    result = subprocess.run(
        [PYTHON, "-X", "importtime", "-c", f"import {module}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    rows: list[dict[str, Any]] = []
    for line in result.stderr.splitlines():
        parts = line.split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        name = parts[2].rstrip()
        depth = (len(name) - len(name.lstrip())) // 2
        if depth <= 1:
            rows.append({"module": name.strip(), "cumulative_ms": int(parts[1]) / 1000})
    rows.sort(key=lambda row: -float(row["cumulative_ms"]))
    return rows[:top]


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(__doc__ or NAME, argv)
    n = rounds(args, 15)
    report = Report(NAME, args.quick)
    report.parameters = {"runs": n, "program": LLMSPELL}

    with workspace() as ws:
        env = ws.env
        started = subprocess.run(
            [LLMSPELL, "--output", "json", "kernel", "start", "--daemon"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        import json

        record = json.loads(started.stdout)
        connection = str(record["connection_file"])
        commands = {
            "python": [PYTHON, "-c", "pass"],
            "help": [LLMSPELL, "--help"],
            "connect_list": [LLMSPELL, "--connect", connection, "model", "list"],
            "embedded_list": [LLMSPELL, "model", "list"],
        }
        samples: dict[str, list[float]] = {name: [] for name in commands}
        try:
            for argv_ in commands.values():  # warm-up: page cache, .pyc files
                wall(argv_, env)
            for _ in range(n):
                for name, argv_ in commands.items():
                    samples[name].append(wall(argv_, env))
            profile = import_profile("llmspell_cli.app", env)
        finally:
            subprocess.run(
                [LLMSPELL, "kernel", "stop", str(record["id"])], env=env, timeout=60, check=False
            )

    report.results = {f"{name}_s": summarize(values, 3) for name, values in samples.items()}
    report.results["import_llmspell_cli_app_top_ms"] = profile
    labels = {
        "help": "llmspell --help",
        "connect_list": "llmspell --connect F model list",
        "embedded_list": "llmspell model list (no --connect, no kernel)",
    }
    floor = report.results["python_s"]["median"]
    for name, label in labels.items():
        median = report.results[f"{name}_s"]["median"]
        report.target(
            f"{label} wall time",
            f"{fmt(median, 's', 3)} (p95 {report.results[f'{name}_s']['p95']:.3f} s)",
            f"{fmt(floor, 's', 3)} python -c pass",
            f"≤ {LIMITS[name]} s",
            median <= LIMITS[name],
        )
    report.finish(args.output)


if __name__ == "__main__":
    main()
