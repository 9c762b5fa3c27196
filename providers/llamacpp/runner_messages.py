"""What the kernel and a model runner (:mod:`.runner_process`) say to each other: one class per
message, pickled over a local socket pair that only the two processes hold.

Kernel → runner: :class:`Load` (once, first), then :class:`Generate`, :class:`Credit`,
:class:`Cancel` and :class:`Stop`. Runner → kernel: :class:`Loaded` or :class:`Failed` for the
load; for each generation :class:`Prompted`, :class:`Piece` s, then :class:`Finished` or
:class:`Failed`. A runner runs one generation at a time: a :class:`Generate` that arrives while
another runs ends the other (its stream was preempted or abandoned on the kernel's side), and
messages about a generation that has ended are ignored by both sides.

Embeddings: :class:`Embed` → :class:`Embedded` or :class:`Failed`, under the same id rules (a
:class:`Cancel` stops it between two batches).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import LLMSpellError
from ..types import Chunk, GenerationOptions, Message
from .templates import ChatTemplate

WINDOW = 16
"""How many pieces a runner may send ahead of what the kernel's reader has taken: a stream
that nobody reads stops the runner (as an unread generator stops the token loop), at the cost
of one :class:`Credit` per ``WINDOW // 2`` pieces."""


# Kernel → runner --------------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    model_id: str
    path: Path
    n_ctx: int
    n_threads: int
    n_gpu_layers: int
    conversation_cache_bytes: int
    reproducible: bool
    stored: bool = True
    """The file is in the store (else: an import's probe of the user's file)."""


@dataclass(frozen=True)
class ChatRequest:
    """Messages, through the model's chat template."""

    template: ChatTemplate
    messages: tuple[Message, ...]


@dataclass(frozen=True)
class CompletionRequest:
    """A raw prompt."""

    prompt: str


@dataclass(frozen=True)
class Generate:
    id: int
    request: ChatRequest | CompletionRequest
    options: GenerationOptions
    load_seconds: float
    queue_seconds: float


@dataclass(frozen=True)
class Credit:
    id: int
    count: int


@dataclass(frozen=True)
class Cancel:
    id: int


@dataclass(frozen=True)
class Embed:
    """Embed ``texts`` (checked non-empty by the kernel), in the runner's embedding context."""

    id: int
    texts: tuple[str, ...]
    truncate: bool
    normalize: bool


@dataclass(frozen=True)
class Stop:
    """End the runner (its model's memory returns to the system)."""


# Runner → kernel --------------------------------------------------------------------------


@dataclass(frozen=True)
class Loaded:
    n_ctx: int
    """The context size llama.cpp made."""


@dataclass(frozen=True)
class Prompted:
    """The prompt is rendered and tokenized; its evaluation starts."""

    id: int
    tokens: int


@dataclass(frozen=True)
class Piece:
    id: int
    chunk: Chunk


@dataclass(frozen=True)
class Finished:
    id: int
    chunk: Chunk
    """The last chunk (``done``, with the metrics)."""
    conversation_cache: dict[str, int] | None


@dataclass(frozen=True)
class Embedded:
    id: int
    vectors: list[list[float]]
    prompt_tokens: int
    truncated: int
    """How many inputs were cut to the embedding context."""


@dataclass(frozen=True)
class Failed:
    id: int | None
    """None: the load failed."""
    error: LLMSpellError


ToRunner = Load | Generate | Embed | Credit | Cancel | Stop
FromRunner = Loaded | Prompted | Piece | Finished | Embedded | Failed


def generation_id(message: Any) -> int | None:
    """The generation a runner's message is about (None for the load's)."""
    return getattr(message, "id", None)
