"""The provider protocol every backend implements.

Backends are synchronous and thread-safe: the kernel calls them from worker threads, never on
its event loop. Generation returns a :class:`ChunkStream`; the consumer may stop early by
calling its ``close()`` (that is how a generation is cancelled), and the backend must then free
what it holds. The last chunk of a completed stream has ``done=True`` and ``metrics``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from .spec import ModelSpec
from .types import (
    AvailableModel,
    BackendHealth,
    ChunkStream,
    Embeddings,
    GenerationOptions,
    LoadedModel,
    Message,
    ModelInfo,
    ProgressCallback,
    PullResult,
    Removed,
)


@runtime_checkable
class Backend(Protocol):
    """One backend (``ollama``, ``llamacpp``)."""

    name: str

    def health(self) -> BackendHealth:
        """Whether the backend works, with its version and model counts; never raises."""
        ...

    def list_models(self) -> list[ModelInfo]:
        """Installed models. Raises :class:`BackendUnavailable` when the backend is down."""
        ...

    def has_model(self, spec: ModelSpec) -> bool:
        """Whether ``spec`` is installed here (used for backend resolution); never raises."""
        ...

    def available(self, *, recommended_only: bool = False) -> list[AvailableModel]:
        """Models this backend can pull."""
        ...

    def pull(
        self,
        spec: ModelSpec,
        progress: ProgressCallback | None = None,
        *,
        force: bool = False,
        quantization: str | None = None,
        cancel: threading.Event | None = None,
    ) -> PullResult:
        """Download ``spec``. Setting ``cancel`` stops the pull promptly with
        :class:`Cancelled` (what was downloaded is kept for the next pull to resume); ``force``
        downloads again, keeping the installed model usable until the new one is verified."""
        ...

    def import_model(self, path: Path, name: str | None = None) -> ModelInfo:
        """Register a model file already on disk. Backends that cannot, raise
        :class:`UnsupportedOperation`."""
        ...

    def info(self, spec: ModelSpec) -> ModelInfo: ...

    def remove(self, spec: ModelSpec) -> Removed:
        """Delete the model; a backend that keeps what unfinished pulls leave deletes that
        for a model that is not installed (then ``unfinished_bytes`` says how much)."""
        ...

    def load(self, spec: ModelSpec, progress: ProgressCallback | None = None) -> LoadedModel:
        """Bring the model into memory (once, however many ask at the same time)."""
        ...

    def unload(self, spec: ModelSpec) -> str:
        """Free the model's memory; returns its id."""
        ...

    def loaded(self) -> list[LoadedModel]: ...

    def chat(
        self,
        spec: ModelSpec,
        messages: Sequence[Message],
        options: GenerationOptions,
        *,
        cancel: threading.Event | None = None,
    ) -> ChunkStream:
        """Generate the answer to ``messages`` (with the model's chat template), streamed.
        Setting ``cancel`` stops the generation promptly with :class:`Cancelled`, even before
        its first token."""
        ...

    def complete(
        self,
        spec: ModelSpec,
        prompt: str,
        options: GenerationOptions,
        *,
        cancel: threading.Event | None = None,
    ) -> ChunkStream:
        """Continue ``prompt`` (no template), streamed; ``cancel`` as for :meth:`chat`."""
        ...

    def embed(
        self,
        spec: ModelSpec,
        texts: Sequence[str],
        *,
        truncate: bool = True,
        normalize: bool = True,
        cancel: threading.Event | None = None,
    ) -> Embeddings:
        """One embedding vector per text, in order (see :mod:`providers.embedding` for
        ``truncate`` and ``normalize``). Empty input is :class:`InvalidRequest`."""
        ...

    def close(self) -> None:
        """Release connections and models."""
        ...
