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
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from providers.errors import Cancelled
from providers.manager import ProviderManager
from providers.structured import checked
from providers.types import Metrics, Progress, ProgressCallback

from .protocol.requests import (
    AvailableRequest,
    CopyRequest,
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
)
from .protocol.results import (
    AvailableResult,
    CopyResult,
    EmbedResult,
    GenerateResult,
    ImportResult,
    InfoResult,
    ListResult,
    LoadResult,
    ModelRow,
    PsResult,
    PullResult,
    RemoveResult,
    RequestRow,
    Result,
    StatusResult,
    UnloadResult,
)

# Read-only queries the kernel answers on the shell's thread instead of a worker thread: they
# never load, pull or generate, and publish nothing (see LLMSpellKernel.model_request).
INLINE_COMMANDS: frozenset[type[Request]] = frozenset({ListRequest, StatusRequest, PsRequest})

# Progress callbacks can fire for every few kilobytes; one IOPub message per tenth of a second
# is plenty for a progress bar.
PROGRESS_INTERVAL = 0.1


@dataclass
class Operation:
    """One running request: its cancel flag, its publishers, and what ``ps`` says of it."""

    publish_progress: Callable[[Progress], None] = lambda _: None
    publish_stream: Callable[[dict[str, Any]], None] = lambda _: None
    cancel: threading.Event = field(default_factory=threading.Event)
    request: str = ""
    """The ``msg_id`` of the request."""
    command: str = ""
    session: str = ""
    """The Jupyter session of the client that sent it."""
    model: str | None = None
    received: float = 0.0
    ahead: int | None = None
    """While a generation waits for its model: how many requests are ahead of it."""
    requests: Callable[[], list[RequestRow]] = list
    """The kernel's running requests (for ``ps``)."""
    _last_progress: float = 0.0
    _last_phase: str | None = None
    _last_ahead: int | None = None

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
            or event.ahead != self._last_ahead
            or finished
            or now - self._last_progress >= PROGRESS_INTERVAL
        ):
            self._last_phase = event.phase
            self._last_ahead = event.ahead
            self._last_progress = now
            self.publish_progress(event)


def run(manager: ProviderManager, request: Request, op: Operation) -> Result:
    """Execute ``request``; returns its result. Raises LLMSpellError on failure."""
    handler: Callable[[ProviderManager, Any, Operation], Result] = _HANDLERS[type(request)]
    return handler(manager, request, op)


def _list(manager: ProviderManager, request: ListRequest, op: Operation) -> ListResult:
    listing = manager.list_models(request.backend)
    return ListResult(models=[ModelRow.of(m) for m in listing.models], errors=listing.errors)


def _status(manager: ProviderManager, request: StatusRequest, op: Operation) -> StatusResult:
    return StatusResult(backends=manager.status(request.backend))


def _info(manager: ProviderManager, request: InfoRequest, op: Operation) -> InfoResult:
    return InfoResult(model=manager.info(request.model))


def _pull(manager: ProviderManager, request: PullRequest, op: Operation) -> PullResult:
    pulled = manager.pull(
        request.model,
        op.progress,
        force=request.force,
        quantization=request.quantization,
        cancel=op.cancel,
    )
    return PullResult(
        model=pulled.model,
        bytes=pulled.bytes,
        resumed_bytes=pulled.resumed_bytes,
        seconds=pulled.seconds,
    )


def _remove(manager: ProviderManager, request: RemoveRequest, op: Operation) -> RemoveResult:
    removed = manager.remove(request.model)
    return RemoveResult(removed=removed.id, unfinished_download_bytes=removed.unfinished_bytes)


def _available(
    manager: ProviderManager, request: AvailableRequest, op: Operation
) -> AvailableResult:
    models = manager.available(request.backend, recommended_only=request.recommended)
    return AvailableResult(models=models)


def _copy(manager: ProviderManager, request: CopyRequest, op: Operation) -> CopyResult:
    return CopyResult(model=manager.copy(request.model, request.name))


def _import(manager: ProviderManager, request: ImportRequest, op: Operation) -> ImportResult:
    path = Path(request.path).expanduser().absolute()
    return ImportResult(model=manager.import_model(path, request.name, link=request.link))


def _load(manager: ProviderManager, request: LoadRequest, op: Operation) -> LoadResult:
    return LoadResult(model=manager.load(request.model, op.progress))


def _unload(manager: ProviderManager, request: UnloadRequest, op: Operation) -> UnloadResult:
    backend, spec = manager.resolve(request.model)
    before = {model.id for model in backend.loaded()}
    unloaded = backend.unload(spec)
    return UnloadResult(unloaded=unloaded, was_loaded=unloaded in before)


def _ps(manager: ProviderManager, request: PsRequest, op: Operation) -> PsResult:
    return PsResult(models=manager.ps(), requests=op.requests())


def generation(
    manager: ProviderManager,
    request: GenerateRequest,
    cancel: threading.Event | None = None,
    on_queued: Callable[[int | None], None] | None = None,
) -> tuple[str, Generator[str, None, GenerateResult]]:
    """The resolved model spec, and the text pieces of the generation as the model produces
    them (the generator returns the result).

    The kernel's ``generate`` publishes each piece; ``Agent`` yields them to its reader. The
    backend's stream is closed however the generator ends (finished, closed early by its
    reader, interrupted, cancelled), which stops the generation and frees the model. While
    the model is busy with other requests, ``on_queued`` is told how many are ahead, then
    ``None`` once this one runs.
    """
    backend, spec = manager.resolve(request.model)
    model = str(spec)
    flag = cancel or threading.Event()
    options = manager.generation_options(request.options)  # the config's [generation] defaults

    def pieces() -> Generator[str, None, GenerateResult]:
        if flag.is_set():
            raise Cancelled(
                f"generation with {model} interrupted", model=model, backend=spec.backend
            )
        if request.messages is not None:
            chunks = backend.chat(spec, request.messages, options, cancel=flag)
        else:
            assert request.prompt is not None  # the request's validator saw to it
            chunks = backend.complete(spec, request.prompt, options, cancel=flag)
        chunks = checked(chunks, options, model)  # a format answer is checked before the end
        parts: list[str] = []
        metrics: Metrics | None = None
        waiting = False
        try:
            for chunk in chunks:
                if chunk.queued is not None or waiting:
                    waiting = chunk.queued is not None
                    if on_queued is not None:
                        on_queued(chunk.queued)
                if flag.is_set():
                    raise Cancelled(
                        f"generation with {model} interrupted after {len(parts)} chunks",
                        model=model,
                        backend=spec.backend,
                    )
                if chunk.text:
                    parts.append(chunk.text)
                    yield chunk.text
                if chunk.done:
                    metrics = chunk.metrics
        finally:
            chunks.close()
        return GenerateResult(model=model, text="".join(parts), metrics=metrics or Metrics())

    return model, pieces()


def _generate(manager: ProviderManager, request: GenerateRequest, op: Operation) -> GenerateResult:
    def queued(ahead: int | None) -> None:
        op.ahead = ahead
        if ahead is not None:
            op.progress(Progress(model=model, phase="queued", ahead=ahead))

    model, pieces = generation(manager, request, op.cancel, queued)
    op.model = model
    while True:
        try:
            text = next(pieces)
        except StopIteration as finished:
            result: GenerateResult = finished.value
            return result
        if request.stream:
            op.publish_stream({"model": model, "text": text})


def _embed(manager: ProviderManager, request: EmbedRequest, op: Operation) -> EmbedResult:
    backend, spec = manager.resolve(request.model)
    op.model = str(spec)
    done = backend.embed(
        spec,
        request.input,
        truncate=request.truncate,
        normalize=request.normalize,
        cancel=op.cancel,
    )
    return EmbedResult(
        model=str(spec),
        embeddings=done.vectors,
        dimensions=done.dimensions,
        metrics=done.metrics,
    )


def run_local(
    manager: ProviderManager, request: Request, progress: ProgressCallback | None = None
) -> Result:
    """Run ``request`` in this process, as the kernel would (for ``LocalLLM`` in the kernel's
    own namespace): the same handler, with ``progress`` called for each progress event."""
    op = Operation() if progress is None else Operation(publish_progress=progress)
    return run(manager, request, op)


_HANDLERS: dict[type[Request], Callable[[ProviderManager, Any, Operation], Result]] = {
    ListRequest: _list,
    StatusRequest: _status,
    InfoRequest: _info,
    PullRequest: _pull,
    RemoveRequest: _remove,
    AvailableRequest: _available,
    ImportRequest: _import,
    CopyRequest: _copy,
    LoadRequest: _load,
    UnloadRequest: _unload,
    PsRequest: _ps,
    GenerateRequest: _generate,
    EmbedRequest: _embed,
}
