"""Every benchmark script runs once in ``--quick`` mode (tiny sizes, one round) and writes a
well-formed results file. Nothing here judges speed: the scripts only must not rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.common import REQUIRED_KEYS, ROOT
from benchmarks.run_all import SCRIPTS

MACHINE_KEYS = ("cpu", "logical_cores", "ram_gb", "os", "python", "llama_cpp_python",
                "git_commit", "load_average_start", "load_average_end")  # fmt: skip


@pytest.mark.model
@pytest.mark.slow
@pytest.mark.parametrize("name", SCRIPTS)
def test_benchmark_runs_in_quick_mode(name: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", f"benchmarks.bench_{name}", "--quick", "--output", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    document = json.loads((tmp_path / f"{name}.json").read_text(encoding="utf-8"))
    assert all(key in document for key in REQUIRED_KEYS), sorted(document)
    assert document["benchmark"] == name
    assert document["quick"] is True
    assert all(key in document["machine"] for key in MACHINE_KEYS), sorted(document["machine"])
    assert document["results"]
    assert document["targets"]
    for row in document["targets"]:
        assert set(row) == {"what", "llmspell", "baseline", "target", "met"}
        assert row["met"] is None  # quick runs are too small to judge
    assert "wrote" in result.stdout


def test_run_all_rejects_an_unknown_benchmark() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.run_all", "--only", "nonsense"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "unknown benchmark(s) nonsense" in result.stderr
