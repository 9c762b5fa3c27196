"""Helpers for the fault tests (tests/test_hardening_{pull,ollama,interrupt}.py).

- :func:`tiny_gguf` writes a small but real GGUF (llama.cpp reads its header and vocabulary),
  for pull faults where the real 253 MB model is not needed;
- :func:`store_problems` says what in a llamacpp model store is not either an installed model
  or a resumable partial download (what a fault must never leave behind);
- :class:`Ledger` counts what a fault test tried and what was recovered or lost, and records
  the figures (``tests.hardening_kernel_fixtures.record_figures``: printed, and written to
  ``$LLMSPELL_FIGURES_DIR/<name>.json`` when set);
- :func:`tiny_filesystem` mounts a small tmpfs (a real "disk full"), when this process may.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from providers.llamacpp.store import BLOBS_DIR_NAME, INCOMING_SUFFIX, MANIFEST_NAME, TMP_DIR_NAME
from tests.gguf_files import TOKENS, tiny_writer, write_out
from tests.hardening_kernel_fixtures import record_figures

PARTIAL_SUFFIX = ".partial"


def tiny_gguf(path: Path, *, seed: int = 0, filler_floats: int = 64 * 1024) -> Path:
    """A small GGUF (llama architecture, 29-token vocabulary, Q4_K_M file type) of about
    ``4 * filler_floats`` bytes; ``seed`` changes its bytes (another "upload")."""
    import numpy as np

    writer = tiny_writer(path, f"tiny-test-{seed}")
    rng = np.random.default_rng(seed)
    writer.add_tensor("token_embd.weight", rng.standard_normal((len(TOKENS), 8)).astype("f4"))
    writer.add_tensor("filler.weight", rng.standard_normal((filler_floats,)).astype("f4"))
    write_out(writer)
    return path


def store_problems(root: Path) -> list[str]:
    """Everything under the store ``root`` that is neither part of an installed model (its
    manifest, its blob in ``blobs/`` or, in a store written before blobs, its model file) nor a
    resumable partial download (``*.partial`` + its ``.json``). An empty ``blobs/`` is fine; a
    blob that no manifest names is not."""
    problems: list[str] = []
    if not root.exists():
        return problems
    named_blobs: set[str] = set()
    blobs: set[str] = set()
    for entry in sorted(root.iterdir()):
        if entry.name == TMP_DIR_NAME:
            problems += [f"{p.relative_to(root)} (in the import temp dir)" for p in entry.iterdir()]
            continue
        if entry.name == BLOBS_DIR_NAME and entry.is_dir():
            blobs = {p.name for p in entry.iterdir()}
            continue
        if not entry.is_dir():
            problems.append(f"{entry.name} (a file at the store root)")
            continue
        names = {p.name for p in entry.iterdir()}
        if not names:
            problems.append(f"{entry.name}/ (an empty folder)")
            continue
        model_file = None
        if MANIFEST_NAME in names:
            try:
                manifest = json.loads((entry / MANIFEST_NAME).read_text())
                model_file = manifest["file"]
                if manifest.get("blob"):
                    named_blobs.add(manifest["blob"])
            except (OSError, ValueError, KeyError) as exc:
                problems.append(f"{entry.name}/{MANIFEST_NAME} (unreadable: {exc})")
        for name in sorted(names - {MANIFEST_NAME, model_file}):
            partial = name.endswith(PARTIAL_SUFFIX) and INCOMING_SUFFIX in name
            meta = name.endswith(PARTIAL_SUFFIX + ".json") and name[:-5] in names
            if not (partial or meta):
                problems.append(f"{entry.name}/{name}")
    problems += [
        f"{BLOBS_DIR_NAME}/{blob} (no manifest names it)" for blob in sorted(blobs - named_blobs)
    ]
    return problems


def partials(root: Path) -> dict[str, int]:
    """Resumable partial downloads under ``root``: relative path → bytes."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): p.stat().st_size
        for p in root.glob(f"*/*{PARTIAL_SUFFIX}")
        if p.is_file()
    }


@dataclass
class Ledger:
    """What a fault test tried, and what came of it.

    ``tried`` counts faults injected; ``recovered`` those after which everything checked out
    (clear error, nothing corrupt listed, the next operation worked); every other one is
    ``lost``, with what went wrong in ``problems``.
    """

    name: str
    tried: int = 0
    recovered: int = 0
    problems: list[str] = field(default_factory=list)
    timings: dict[str, list[float]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def case(self, label: str, problems: list[str]) -> None:
        """One fault tried; ``problems`` empty when nothing was lost."""
        self.tried += 1
        if problems:
            self.problems += [f"{label}: {p}" for p in problems]
        else:
            self.recovered += 1

    def time(self, key: str, seconds: float) -> None:
        self.timings.setdefault(key, []).append(seconds)

    @property
    def lost(self) -> int:
        return self.tried - self.recovered

    def record(self) -> dict[str, Any]:
        timings = {
            key: {
                "count": len(values),
                "max_s": round(max(values), 4),
                "mean_s": round(sum(values) / len(values), 4),
            }
            for key, values in self.timings.items()
            if values
        }
        return record_figures(
            self.name,
            {
                "tried": self.tried,
                "recovered": self.recovered,
                "lost": self.lost,
                "problems": self.problems,
                "timings": timings,
                "seconds": round(time.perf_counter() - self.started, 3),
                **self.extra,
            },
        )

    def assert_nothing_lost(self) -> None:
        self.record()
        assert self.tried > 0, f"{self.name}: nothing was tried"
        assert self.problems == [], f"{self.name}: {self.lost} of {self.tried} lost"
        assert self.lost == 0


@contextlib.contextmanager
def tiny_filesystem(path: Path, size: str) -> Iterator[bool]:
    """Mount a tmpfs of ``size`` (e.g. ``"1m"``) at ``path``; yields False (nothing mounted)
    when this process may not mount. Always unmounted afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
            capture_output=True,
            check=False,
            timeout=10,
        ).returncode
        == 0
    )
    try:
        yield mounted
    finally:
        if mounted:
            done = subprocess.run(["umount", str(path)], capture_output=True, check=False)
            if done.returncode != 0:
                subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)
