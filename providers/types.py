"""Value objects shared by every backend: what the provider protocol takes and returns.

All of them but :class:`ChunkStream` (what a generation returns) are plain frozen dataclasses
with a ``to_dict()`` giving the JSON-ready form used in protocol replies; ``None`` values stay
in the dict so that clients see every field.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from .options import GenerationOptions, Message, Role

__all__ = ["GenerationOptions", "Message", "Role"]  # defined in .options, used with these types


def _as_dict(obj: Any) -> dict[str, Any]:
    """A dataclass's fields, with dicts, lists and tuples in them copied: what
    ``dataclasses.asdict`` gives for JSON-like values, at a fraction of its cost (its deep copy
    of every leaf was a third of a ``status`` request)."""
    return {name: _copied(value) for name, value in vars(obj).items()}


def _copied(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _copied(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copied(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_copied(item) for item in value)
    return value


@dataclass(frozen=True)
class Metrics:
    """Final numbers of one generation. Durations in seconds."""

    prompt_tokens: int = 0
    generated_tokens: int = 0
    load_seconds: float = 0.0
    prompt_seconds: float = 0.0
    generation_seconds: float = 0.0
    total_seconds: float = 0.0
    time_to_first_token: float | None = None
    tokens_per_second: float | None = None
    stop_reason: str | None = None
    """``stop`` (end of text or a stop string), ``length`` (max_tokens), ``repetition`` (the
    text had started repeating itself), ``cancelled``."""
    queue_seconds: float = 0.0
    """How long the request waited for the model (busy with other requests) before it ran;
    included in ``time_to_first_token`` and ``total_seconds``, which count from the request."""
    dropped_messages: int = 0
    """Messages of the conversation left out to fit the context (``overflow: truncate``)."""

    def to_dict(self) -> dict[str, Any]:
        return _as_dict(self)


@dataclass(frozen=True)
class Chunk:
    """A piece of generated text; the last chunk of a stream has ``done`` and ``metrics``."""

    text: str
    done: bool = False
    metrics: Metrics | None = None
    queued: int | None = None
    """Set on the text-less chunks a stream yields while it waits for a model that is busy:
    how many requests are ahead of it."""


@dataclass(frozen=True)
class Progress:
    """Progress of a pull or a load.

    ``phase`` is one of ``resolving``, ``downloading``, ``verifying``, ``loading``, ``done``,
    ``queued`` (a generation waiting for its model, ``ahead`` requests before it), or a
    backend's own status text (Ollama's ``pulling manifest``...). ``completed`` and ``total``
    are bytes for downloads; either may be ``None`` when unknown.
    """

    model: str
    phase: str
    completed: int | None = None
    total: int | None = None
    ahead: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return _as_dict(self)


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class ModelInfo:
    """A model as a backend knows it: one row of ``list`` and the body of ``info``."""

    id: str
    backend: str
    size_bytes: int | None = None
    quantization: str | None = None
    modified_at: str | None = None
    """ISO 8601, UTC."""
    loaded: bool = False
    format: str = "gguf"
    family: str | None = None
    architecture: str | None = None
    parameter_size: str | None = None
    context_length: int | None = None
    chat_template: str | None = None
    """Where the chat template comes from: ``gguf``, ``family:<name>``, ``ollama``, or None."""
    details: dict[str, Any] = field(default_factory=dict)
    """Backend-specific extras (manifest, Ollama parameters, capabilities...)."""

    def to_dict(self) -> dict[str, Any]:
        return _as_dict(self)

    def list_row(self) -> dict[str, Any]:
        """The short form used in ``list`` replies."""
        return {
            "id": self.id,
            "backend": self.backend,
            "size_bytes": self.size_bytes,
            "quantization": self.quantization,
            "modified_at": self.modified_at,
            "loaded": self.loaded,
            "family": self.family,
            "parameter_size": self.parameter_size,
        }


@dataclass(frozen=True)
class LoadedModel:
    """A model held in memory (``ps``)."""

    id: str
    backend: str
    size_bytes: int | None = None
    expires_at: str | None = None
    """ISO 8601, UTC; None when it never expires."""
    conversation_cache_bytes: int | None = None
    """Memory held by the saved states of its recent conversations (llamacpp)."""

    def to_dict(self) -> dict[str, Any]:
        return _as_dict(self)


@dataclass(frozen=True)
class AvailableModel:
    """A model that can be pulled (``available``)."""

    name: str
    backend: str
    description: str
    variants: tuple[str, ...] = ()
    size_bytes: int | None = None
    recommended: bool = False
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = _as_dict(self)
        data["variants"] = list(self.variants)
        return data


@dataclass(frozen=True)
class BackendHealth:
    """One backend's ``status``."""

    name: str
    available: bool
    version: str | None = None
    models: int = 0
    loaded: int = 0
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _as_dict(self)


@dataclass(frozen=True)
class PullResult:
    """What a pull did: ``bytes`` transferred by this pull, ``resumed_bytes`` kept from an
    interrupted earlier one (their sum is the file's size after a download; both are 0 when
    the model was installed already)."""

    model: ModelInfo
    bytes: int
    seconds: float
    resumed_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.to_dict(),
            "bytes": self.bytes,
            "resumed_bytes": self.resumed_bytes,
            "seconds": self.seconds,
        }


@dataclass(frozen=True)
class Removed:
    """What ``remove`` deleted: the model ``id``.

    ``unfinished_bytes`` is set when the model was not installed and the remove deleted only what
    an unfinished pull of it left (that many bytes); it is None when an installed model went.
    """

    id: str
    unfinished_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return _as_dict(self)


@runtime_checkable
class ChunkStream(Protocol):
    """What ``chat`` and ``complete`` return: the generated :class:`Chunk` objects, streamed
    (the last chunk of a finished stream has ``done`` and ``metrics``).

    ``close()`` stops the generation where it is and frees what it holds (the model's lock, the
    connection); closing a finished or closed stream does nothing. A generator is one.
    """

    def __iter__(self) -> Iterator[Chunk]: ...

    def __next__(self) -> Chunk: ...

    def close(self) -> None: ...


# Embeddings ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class EmbedMetrics:
    """Final numbers of one ``embed``. Durations in seconds."""

    prompt_tokens: int = 0
    """Tokens of every input together (after truncation)."""
    load_seconds: float = 0.0
    total_seconds: float = 0.0
    queue_seconds: float = 0.0
    """How long the request waited for the model (busy with other requests); included in
    ``total_seconds``."""
    truncated_inputs: int = 0
    """Inputs cut to the embedding context (``truncate``); None of them with ``truncate``
    false, which refuses a long input instead."""

    def to_dict(self) -> dict[str, Any]:
        return _as_dict(self)


@dataclass(frozen=True)
class Embeddings:
    """What a backend's ``embed`` returns: one vector per input, in the inputs' order."""

    model: str
    vectors: list[list[float]]
    metrics: EmbedMetrics = field(default_factory=EmbedMetrics)

    @property
    def dimensions(self) -> int:
        return len(self.vectors[0]) if self.vectors else 0
