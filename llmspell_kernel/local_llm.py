"""``LocalLLM``: model management from notebook cells and scripts run in the llmspell kernel.

It runs the kernel's own command handlers in-process (the code runs inside the kernel, with its
:class:`~providers.ProviderManager`), validating its arguments with the protocol's request
models, and returns plain dicts and lists, the JSON shapes of the protocol replies, so results
display well and can be indexed without importing anything.
"""

from __future__ import annotations

import builtins
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO, TypeVar

from providers import InvalidRequest, Message, Progress, ProviderManager, parse_spec
from providers.options import generation_options
from providers.types import ProgressCallback

from .commands import run_local
from .protocol.requests import (
    AvailableRequest,
    EmbedRequest,
    GenerateRequest,
    ImportRequest,
    InfoRequest,
    ListRequest,
    LoadRequest,
    PsRequest,
    PullRequest,
    RemoveRequest,
    Request,
    StatusRequest,
    UnloadRequest,
    validate,
)
from .protocol.results import Result
from .schemas import output_format, read_answer

R = TypeVar("R", bound=Request)

PROGRESS_INTERVAL = 0.25
"""Seconds between two progress updates of the same phase (a few per second, not thousands)."""

_FINAL_PHASES = ("verifying", "done")

NO_MODEL_HINT = "pass model=... or LocalLLM.set_default_model(...)"

Row = dict[str, Any]
Rows = list[Row]


class LocalLLM:
    """Local models: ``status()``, ``list()``, ``available()``, ``pull(spec)``, ``info(spec)``,
    ``remove(spec)``, ``load(spec)``, ``unload(spec)``, ``ps()``, ``import_model(path)`` and the
    default model used by ``Agent()`` and ``%llm`` (``set_default_model`` or ``$LLMSPELL_MODEL``).
    """

    def __init__(self, manager: ProviderManager) -> None:
        self._manager = manager
        self._default: str | None = None

    def __repr__(self) -> str:
        backends = ", ".join(self._manager.enabled()) or "none enabled"
        return (
            f"<LocalLLM: local models through llmspell (backends: {backends}; default model: "
            f"{self.default_model or 'not set'}). Try LocalLLM.status(), LocalLLM.list(), "
            "LocalLLM.pull(spec)>"
        )

    @property
    def manager(self) -> ProviderManager:
        """The kernel's provider manager (for what this object does not wrap)."""
        return self._manager

    # The default model ------------------------------------------------------------------------

    @property
    def default_model(self) -> str | None:
        """The model ``Agent()`` and ``%llm`` use when none is named: the one set with
        :meth:`set_default_model`, else ``$LLMSPELL_MODEL``, else the config's
        ``default_model``, else None."""
        if self._default is not None:
            return self._default
        return self._manager.config.model_default()

    def set_default_model(self, spec: str | None) -> None:
        """Use ``spec`` when no model is named; ``None`` goes back to ``$LLMSPELL_MODEL`` or
        the config's ``default_model``."""
        if spec is None:
            self._default = None
            return
        self._default = str(parse_spec(spec))

    def require_model(self, spec: str | None, hint: str) -> str:
        """``spec`` if given, else the default model, else :class:`InvalidRequest` with ``hint``."""
        chosen = spec if spec is not None else self.default_model
        if chosen is None:
            raise InvalidRequest(f"no model: {hint}")
        return str(parse_spec(chosen))

    # Commands: the kernel's own handlers, run in this process --------------------------------

    def run(
        self, model: type[R], fields: dict[str, Any], progress: ProgressCallback | None = None
    ) -> Result:
        """Validate ``fields`` as a ``model`` request and run it as the kernel would."""
        return run_local(self._manager, validate(model, fields), progress)

    # Queries ----------------------------------------------------------------------------------

    def status(self, backend: str | None = None) -> dict[str, Row]:
        """Each backend's health: ``{name: {available, version, models, loaded, reason}}``."""
        content = self.run(StatusRequest, {"backend": backend}).content()
        backends: dict[str, Row] = content["backends"]
        return backends

    def list(self, backend: str | None = None) -> Rows:
        """Installed models. A backend that cannot be reached is named on stderr, not hidden."""
        content = self.run(ListRequest, {"backend": backend}).content()
        for name, reason in content["errors"].items():
            print(f"note: backend {name} is unavailable: {reason}", file=sys.stderr)
        models: Rows = content["models"]
        return models

    def available(self, backend: str | None = None, *, recommended: bool = False) -> Rows:
        """Models that can be pulled."""
        fields = {"backend": backend, "recommended": recommended}
        models: Rows = self.run(AvailableRequest, fields).content()["models"]
        return models

    def info(self, spec: str) -> Row:
        model: Row = self.run(InfoRequest, {"model": spec}).content()["model"]
        return model

    def ps(self) -> Rows:
        """Models held in memory."""
        models: Rows = self.run(PsRequest, {}).content()["models"]
        return models

    # Structured output ------------------------------------------------------------------------

    def extract(self, text: str, schema: Any, model: str | None = None, **options: Any) -> Any:
        """What ``text`` asks of the model (e.g. "The people in this text: ..."), answered as
        JSON that satisfies ``schema`` (a JSON Schema dict, ``"json"``, or a pydantic model
        class) and returned parsed (an instance of the class for a pydantic model). ``options``
        are generation options (``temperature=0``, ``max_tokens``...)."""
        output, reader = output_format(schema, "LocalLLM.extract")
        checked = generation_options(options, what="LocalLLM.extract")
        fields = {
            "model": self.require_model(model, NO_MODEL_HINT),
            "messages": [Message("user", text)],
            "options": replace(checked, format=output),
        }
        result = self.run(GenerateRequest, fields)
        return read_answer(result.content()["text"], reader)

    # Changes ----------------------------------------------------------------------------------

    def pull(self, spec: str, force: bool = False, *, quantization: str | None = None) -> Row:
        """Download a model, showing its progress on one updating line of the cell output."""
        line = ProgressLine(sys.stdout)
        fields = {"model": spec, "force": force, "quantization": quantization}
        try:
            return self.run(PullRequest, fields, line).content()
        finally:
            line.finish()

    def import_model(self, path: str | Path, name: str | None = None, *, link: bool = False) -> Row:
        """Register a GGUF file that is already on disk (llamacpp): copied, or linked in
        place with ``link``."""
        fields = {"path": str(path), "name": name, "link": link}
        model: Row = self.run(ImportRequest, fields).content()["model"]
        return model

    def remove(self, spec: str) -> Row:
        content = self.run(RemoveRequest, {"model": spec}).content()
        return {key: value for key, value in content.items() if value is not None}

    def load(self, spec: str) -> Row:
        model: Row = self.run(LoadRequest, {"model": spec}).content()["model"]
        return model

    def unload(self, spec: str) -> Row:
        return self.run(UnloadRequest, {"model": spec}).content()

    # Embeddings -------------------------------------------------------------------------------

    def embed(
        self,
        texts: str | builtins.list[str],
        model: str | None = None,
        *,
        truncate: bool = True,
        normalize: bool = True,
    ) -> builtins.list[builtins.list[float]]:
        """Embedding vectors of ``texts``: one list of floats per text, in order (a single
        string gives a list holding one vector). ``model`` defaults to the default model;
        vectors have length 1 unless ``normalize=False``; ``truncate=False`` refuses a text
        longer than the model's embedding context instead of cutting it."""
        spec = self.require_model(model, "pass model=..., or LocalLLM.set_default_model(...)")
        fields = {"model": spec, "input": texts, "truncate": truncate, "normalize": normalize}
        result = self.run(EmbedRequest, fields).content()
        vectors: builtins.list[builtins.list[float]] = result["embeddings"]
        return vectors


class ProgressLine:
    """A progress callback drawing one self-overwriting line (``\\r``) on ``stream``.

    Updates within one phase are throttled to one per ``interval`` seconds; a new phase is
    always shown. Safe to call from any thread. :meth:`finish` ends the line.
    """

    def __init__(
        self,
        stream: TextIO,
        interval: float = PROGRESS_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._phase: str | None = None
        self._last_draw = 0.0
        self._width = 0
        self._rate_start: tuple[float, int] | None = None
        self.updates = 0

    def __call__(self, progress: Progress) -> None:
        with self._lock:
            now = self._clock()
            if progress.completed is not None and self._rate_start is None:
                self._rate_start = (now, progress.completed)
            new_phase = progress.phase != self._phase
            if not new_phase and now - self._last_draw < self._interval:
                return
            self._phase = progress.phase
            self._last_draw = now
            self._draw(describe_progress(progress, self._rate(now, progress)))

    def finish(self) -> None:
        with self._lock:
            if self._width:
                self._stream.write("\n")
                self._stream.flush()
                self._width = 0

    def _rate(self, now: float, progress: Progress) -> float | None:
        if self._rate_start is None or progress.completed is None:
            return None
        if progress.phase in _FINAL_PHASES or progress.completed == progress.total:
            return None  # a speed is only worth showing while bytes are still coming
        start_time, start_bytes = self._rate_start
        elapsed = now - start_time
        return (progress.completed - start_bytes) / elapsed if elapsed >= 1.0 else None

    def _draw(self, text: str) -> None:
        padding = " " * max(0, self._width - len(text))
        self._stream.write(f"\r{text}{padding}")
        self._stream.flush()
        self._width = len(text)
        self.updates += 1


def describe_progress(progress: Progress, rate: float | None = None) -> str:
    """``gemma3-270m: downloading 45.2 MB / 253.1 MB (17%), 12.0 MB/s``."""
    text = f"{progress.model}: {progress.phase}"
    if progress.completed is not None and progress.total:
        percent = 100 * progress.completed / progress.total
        text += (
            f" {format_bytes(progress.completed)} / {format_bytes(progress.total)} ({percent:.0f}%)"
        )
    elif progress.completed is not None:
        text += f" {format_bytes(progress.completed)}"
    if rate is not None and rate > 0:
        text += f", {format_bytes(int(rate))}/s"
    return text


def format_bytes(count: int) -> str:
    value, unit = float(count), "B"
    for larger in ("kB", "MB", "GB", "TB"):
        if value < 1000:
            break
        value, unit = value / 1000, larger
    return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
