"""What killed processes leave behind (unfinished imports in the store's ``.tmp``, embedded
kernels' folders with their connection files) is removed; what live processes use stays."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from providers import Config
from providers.leftovers import is_orphan, owned_name, remove_orphans
from providers.llamacpp import LlamaCppBackend

PREFIX = "llmspell-embedded-"


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=60)
    return child.pid


def test_unfinished_imports_of_killed_processes_are_removed(tmp_path: Path) -> None:
    tmp = tmp_path / "models" / ".tmp"
    tmp.mkdir(parents=True)
    killed = tmp / f"{dead_pid()}-{'a' * 32}.partial"
    killed.write_bytes(b"x" * 1000)
    mine = tmp / owned_name(suffix=".partial")  # this process: an import in progress
    mine.write_bytes(b"y" * 10)
    untagged = tmp / f"{'b' * 32}.partial"  # written before owners were named
    untagged.write_bytes(b"z" * 100)
    old = time.time() - 2 * 24 * 3600
    os.utime(untagged, (old, old))
    options = {"model_directory": str(tmp_path / "models")}
    backend = LlamaCppBackend(Config.from_dict({"providers": {"llamacpp": {"options": options}}}))
    try:
        assert sorted(p.name for p in tmp.iterdir()) == [mine.name]
        assert backend.health().details["unfinished_import_bytes"] == 10
    finally:
        backend.close()


def test_embedded_kernel_folders_of_killed_processes_are_removed(tmp_path: Path) -> None:
    gone = tmp_path / f"{PREFIX}{dead_pid()}-{'c' * 32}"
    gone.mkdir()
    (gone / "llmspell-embedded.json").write_text("{}", encoding="utf-8")
    live = tmp_path / owned_name(PREFIX)
    live.mkdir()
    recent_untagged = tmp_path / f"{PREFIX}x8k2_j1q"  # mkdtemp's names: kept while recent
    recent_untagged.mkdir()
    assert is_orphan(gone, PREFIX) and not is_orphan(live, PREFIX)
    assert remove_orphans(tmp_path, f"{PREFIX}*", PREFIX) == 2  # the bytes of its "{}"
    left = sorted(p.name for p in tmp_path.glob(f"{PREFIX}*"))
    assert left == sorted([live.name, recent_untagged.name])
