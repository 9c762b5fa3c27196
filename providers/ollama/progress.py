"""Ollama pull status lines turned into llmspell's pull progress events.

Ollama reports each layer separately (``pulling <digest>`` with that layer's ``total`` and
``completed``, either of which may be missing). llmspell reports one download, like the
llamacpp backend: phases ``resolving`` → ``downloading`` (bytes over all layers) →
``verifying`` → ``done``.
"""

from __future__ import annotations

from typing import Any

from ..types import Progress

SUCCESS = "success"


class PullTracker:
    """Folds Ollama's per-layer status lines into whole-pull :class:`Progress` events."""

    def __init__(self, model: str) -> None:
        self.model = model
        self._totals: dict[str, int] = {}
        self._completed: dict[str, int] = {}
        self._downloaded = False

    @property
    def total_bytes(self) -> int:
        return sum(self._totals.values())

    @property
    def completed_bytes(self) -> int:
        return sum(self._completed.values())

    def update(self, line: dict[str, Any]) -> Progress:
        status = str(line.get("status") or "")
        digest = line.get("digest")
        if status == SUCCESS:
            total = self.total_bytes
            return Progress(self.model, "done", total, total)
        if isinstance(digest, str) and digest:
            self._downloaded = True
            layer_total, layer_completed = line.get("total"), line.get("completed")
            if isinstance(layer_total, int):
                self._totals[digest] = layer_total
            if isinstance(layer_completed, int):
                self._completed[digest] = layer_completed
            return Progress(
                self.model, "downloading", self.completed_bytes, self.total_bytes or None
            )
        if not self._downloaded:
            return Progress(self.model, "resolving")
        # "verifying sha256 digest", "writing manifest", "removing any unused layers", ...
        return Progress(self.model, "verifying", self.completed_bytes, self.total_bytes)
