"""Running validated model requests against a :class:`ProviderManager`.

Everything here is synchronous and runs on a worker thread of the kernel, never on its event
loop. An :class:`Operation` carries what a running request may need: its cancel flag, and the
functions that publish progress and generated text (on IOPub, in the kernel).

Cancellation is cooperative: a generation checks the flag between chunks and closes the chunk
iterator; a pull gets the flag itself (a stalled download stops at once) and, like a load, is
also stopped by its progress callback raising :class:`Cancelled`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from providers.errors import Cancelled
from providers.manager import ProviderManager
from providers.types import Metrics, Progress

from .protocol import Request

# Read-only queries the kernel answers on the shell's thread instead of a worker thread: they
# never load, pull or generate, and publish nothing (see LLMSpellKernel.model_request).
INLINE_COMMANDS = frozenset({"list", "status", "ps"})

# Progress callbacks can fire for every few kilobytes; one IOPub message per tenth of a second
# is plenty for a progress bar.
PROGRESS_INTERVAL = 0.1


@dataclass
class Operation:
    """One running request: its cancel flag and its publishers."""

    publish_progress: Callable[[dict[str, Any]], None] = lambda _: None
    publish_stream: Callable[[dict[str, Any]], None] = lambda _: None
    cancel: threading.Event = field(default_factory=threading.Event)
    _last_progress: float = 0.0
    _last_phase: str | None = None

    def check_cancelled(self, what: str) -> None:
        if self.cancel.is_set():
            raise Cancelled(f"{what} interrupted")

    def progress(self, event: Progress) -> None:
        """A backend progress callback: publishes (throttled) and raises when cancelled."""
        self.check_cancelled(f"{event.phase} of {event.model}")
        now = time.monotonic()
        finished = event.total is not None and event.completed == event.total
        if (
            event.phase != self._last_phase
            or finished
            or now - self._last_progress >= PROGRESS_INTERVAL
        ):
            self._last_phase = event.phase
            self._last_progress = now
            self.publish_progress(event.to_dict())


def run(manager: ProviderManager, request: Request, op: Operation) -> dict[str, Any]:
    """Execute ``request``; returns the reply's result fields. Raises LLMSpellError on failure."""
    handler = _HANDLERS[request.command]
    return handler(manager, request, op)


def _list(manager: ProviderManager, request: Request, op: Operation) -> dict[str, Any]:
    listing = manager.list_models(request.get("backend"))
    return {"models": [m.list_row() for m in listing.models], "errors": listing.errors}


def _status(manager: ProviderManager, request: Request, op: Operation) -> dict[str, Any]:
    health = manager.status(request.get("backend"))
    return {"backends": {name: h.to_dict() for name, h in health.items()}}


def _info(manager: ProviderManager, request: Request, op: Operation) -> dict[str, Any]:
    return {"model": manager.info(request.fields["model"]).to_dict()}


def _pull(manager: ProviderManager, request: Request, op: Operation) -> dict[str, Any]:
    result = manager.pull(
        request.fields["model"],
        op.progress,
        force=request.get("force", False),
        quantization=request.get("quantization"),
        cancel=op.cancel,
    )
    return result.to_dict()


def _remove(manager: ProviderManager, request: Request, op: Operation) -> dict[str, Any]:
    removed = manager.remove(request.fields["model"])
    result: dict[str, Any] = {"removed": str(removed)}
    # A backend that deleted only what an unfinished pull left says so (llamacpp's RemovedId).
    unfinished = getattr(removed, "unfinished_bytes", None)
    if isinstance(unfinished, int):
        result["unfinished_download_bytes"] = unfinished
    return result


def _available(manager: ProviderManager, request: Request, op: Operation) -> dict[str, Any]:
    models = manager.available(
        request.get("backend"), recommended_only=request.get("recommended", False)
    )
    return {"models": [m.to_dict() for m in models]}


def _import(manager: ProviderManager, request: Request, op: Operation) -> dict[str, Any]:
    path = Path(request.fields["path"]).expanduser().absolute()
    return {"model": manager.import_model(path, request.get("name")).to_dict()}


def _load(manager: ProviderManager, request: Request, op: Operation) -> dict[str, Any]:
    return {"model": manager.load(request.fields["model"], op.progress).to_dict()}


def _unload(manager: ProviderManager, request: Request, op: Operation) -> dict[str, Any]:
    return {"unloaded": manager.unload(request.fields["model"])}


def _ps(manager: ProviderManager, request: Request, op: Operation) -> dict[str, Any]:
    return {"models": [m.to_dict() for m in manager.ps()]}


def _generate(manager: ProviderManager, request: Request, op: Operation) -> dict[str, Any]:
    backend, spec = manager.resolve(request.fields["model"])
    model = str(spec)
    options = request.fields["options"]
    stream = request.get("stream", False)
    op.check_cancelled(f"generation with {model}")
    if "messages" in request.fields:
        chunks = backend.chat(spec, request.fields["messages"], options, cancel=op.cancel)
    else:
        chunks = backend.complete(spec, request.fields["prompt"], options, cancel=op.cancel)
    parts: list[str] = []
    metrics: Metrics | None = None
    try:
        for chunk in chunks:
            if op.cancel.is_set():
                raise Cancelled(
                    f"generation with {model} interrupted after {len(parts)} chunks",
                    model=model,
                    backend=spec.backend,
                )
            if chunk.text:
                parts.append(chunk.text)
                if stream:
                    op.publish_stream({"model": model, "text": chunk.text})
            if chunk.done:
                metrics = chunk.metrics
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    return {
        "model": model,
        "text": "".join(parts),
        "metrics": (metrics or Metrics()).to_dict(),
    }


_HANDLERS: dict[str, Callable[[ProviderManager, Request, Operation], dict[str, Any]]] = {
    "list": _list,
    "status": _status,
    "info": _info,
    "pull": _pull,
    "remove": _remove,
    "available": _available,
    "import": _import,
    "load": _load,
    "unload": _unload,
    "ps": _ps,
    "generate": _generate,
}
