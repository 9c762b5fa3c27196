"""OpenAIBackend: the provider protocol over an OpenAI-compatible server (vLLM, llama.cpp's
llama-server, SGLang, TGI, LM Studio, llama-cpp-python's server...)."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from ..embedding import check_inputs, checked_vectors
from ..errors import (
    BackendUnavailable,
    Cancelled,
    GenerationError,
    InvalidRequest,
    LLMSpellError,
    ModelNotFound,
    UnsupportedOperation,
)
from ..spec import ModelSpec
from ..types import (
    AvailableModel,
    BackendHealth,
    Chunk,
    ChunkStream,
    Embeddings,
    EmbedMetrics,
    GenerationOptions,
    LoadedModel,
    Message,
    ModelInfo,
    ProgressCallback,
    PullResult,
    Removed,
)
from . import convert
from .client import OpenAIClient

if TYPE_CHECKING:
    from ..config import OpenAIEndpoint

log = logging.getLogger(__name__)

PROBE_TIMEOUT_SECONDS = 2.0
"""Bound on ``has_model`` and on the optional ``/props`` look-up of ``info``."""
LISTING_TIMEOUT_SECONDS = 10.0
"""Bound on ``list``, ``status`` and ``info``: the kernel answers ``list`` and ``status`` on its
shell's own thread, which a stalled server must not hold for the whole ``timeout_seconds``
(that one is for generations, which may wait long for their first token)."""

Json = dict[str, Any]


def model_id(spec: ModelSpec) -> str:
    """The id a server knows the model by: the spec without its backend
    (``meta-llama/Llama-3.1-8B-Instruct@gpu`` → ``meta-llama/Llama-3.1-8B-Instruct``)."""
    if spec.hf_repo:
        return spec.name
    return f"{spec.provider}/{spec.name}" if spec.provider else spec.name


class OpenAIBackend:
    """The models of one OpenAI-compatible server, named by its ``[providers.NAME]`` table.

    The server manages its models: this backend lists them and generates with them; pulls,
    removes, imports, loads and unloads are :class:`UnsupportedOperation`.
    """

    def __init__(
        self,
        name: str,
        settings: OpenAIEndpoint,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """``transport``: the HTTP transport to reach the server through (a mock, in tests)."""
        self.name = name
        self.base_url = settings.base_url
        self.api_key_env = settings.api_key_env
        key = os.environ.get(settings.api_key_env) if settings.api_key_env else None
        self._client = OpenAIClient(
            name,
            settings.base_url,
            settings.timeout_seconds,
            api_key_env=settings.api_key_env,
            api_key=key,
            transport=transport,
        )
        self._lock = threading.Lock()
        self._served: frozenset[str] = frozenset()
        """Ids the server listed last: a generation with one of them needs no new listing."""
        self._usage = True
        """Whether to ask for ``stream_options.include_usage`` (until a server refuses it)."""

    # Status and listing -----------------------------------------------------------------------

    def health(self) -> BackendHealth:
        details: Json = {
            "url": self.base_url,
            "type": "openai",
            "api_key_env": self.api_key_env,
            "api_key_set": self._client.has_key,
        }
        try:
            ids = self._ids()
        except LLMSpellError as exc:
            return BackendHealth(
                name=self.name, available=False, reason=exc.message, details=details
            )
        return BackendHealth(
            name=self.name, available=True, models=len(ids), loaded=0, details=details
        )

    def list_models(self) -> list[ModelInfo]:
        entries = self._entries()
        return [convert.model_info(e, backend=self.name) for e in entries]

    def has_model(self, spec: ModelSpec) -> bool:
        try:
            timeout = min(PROBE_TIMEOUT_SECONDS, self._client.timeout_seconds)
            return model_id(spec) in self._ids(timeout=timeout)
        except LLMSpellError:
            return False

    def available(self, *, recommended_only: bool = False) -> list[AvailableModel]:
        """Nothing to pull: the server has the models it has (``list`` shows them)."""
        return []

    def info(self, spec: ModelSpec) -> ModelInfo:
        wanted = model_id(spec)
        entries = self._entries()
        entry = next((e for e in entries if str(e["id"]) == wanted), None)
        if entry is None:
            ids = [str(e["id"]) for e in entries]
            raise ModelNotFound(
                self._client.not_found_message(wanted, lambda: ids),
                model=wanted,
                backend=self.name,
            )
        return convert.model_info(entry, backend=self.name, props=self._props(), url=self.base_url)

    # What the server does itself --------------------------------------------------------------

    def _unsupported(self, what: str, model: str | None = None) -> UnsupportedOperation:
        return UnsupportedOperation(
            f"{self.name} is an OpenAI-compatible server ({self.base_url}): it manages its own "
            f"models, so {what} is done on the server itself, not through llmspell",
            model=model,
            backend=self.name,
        )

    def pull(
        self,
        spec: ModelSpec,
        progress: ProgressCallback | None = None,
        *,
        force: bool = False,
        quantization: str | None = None,
        cancel: threading.Event | None = None,
    ) -> PullResult:
        raise self._unsupported("a pull", model_id(spec))

    def import_model(self, path: Path, name: str | None = None) -> ModelInfo:
        raise self._unsupported(f"an import of {path}", name)

    def remove(self, spec: ModelSpec) -> Removed:
        raise self._unsupported("a remove", model_id(spec))

    def load(self, spec: ModelSpec, progress: ProgressCallback | None = None) -> LoadedModel:
        raise self._unsupported("a load", model_id(spec))

    def unload(self, spec: ModelSpec) -> str:
        raise self._unsupported("an unload", model_id(spec))

    def loaded(self) -> list[LoadedModel]:
        """Nothing: the server does not say what it holds in memory (``ps`` lists nothing)."""
        return []

    # Generation -----------------------------------------------------------------------------

    def chat(
        self,
        spec: ModelSpec,
        messages: Sequence[Message],
        options: GenerationOptions,
        *,
        cancel: threading.Event | None = None,
    ) -> ChunkStream:
        if not messages:
            raise InvalidRequest("chat needs at least one message", backend=self.name)
        wanted = model_id(spec)
        body = convert.chat_body(wanted, messages, options)
        return self._generate("chat/completions", wanted, body, convert.chat_text, cancel)

    def complete(
        self,
        spec: ModelSpec,
        prompt: str,
        options: GenerationOptions,
        *,
        cancel: threading.Event | None = None,
    ) -> ChunkStream:
        if not prompt:
            raise InvalidRequest("complete needs a non-empty prompt", backend=self.name)
        wanted = model_id(spec)
        body = convert.completion_body(wanted, prompt, options)
        return self._generate("completions", wanted, body, convert.completion_text, cancel)

    # Embeddings -----------------------------------------------------------------------------

    def embed(
        self,
        spec: ModelSpec,
        texts: Sequence[str],
        *,
        truncate: bool = True,
        normalize: bool = True,
        cancel: threading.Event | None = None,
    ) -> Embeddings:
        """``POST /v1/embeddings`` ``{"model", "input"}``: the vectors of ``data``, in the order
        of their ``index``. The OpenAI API has no ``truncate``: the server does what it does
        with a long input (llama.cpp's server refuses it). One request, not cancellable midway:
        a cancel is honoured before it is sent."""
        del truncate
        inputs = check_inputs(texts)
        wanted = model_id(spec)
        if cancel is not None and cancel.is_set():
            raise Cancelled("embedding interrupted", model=wanted, backend=self.name)
        self._check_served(wanted)
        started = time.perf_counter()
        reply = self._client.request(
            "POST",
            "embeddings",
            {"model": wanted, "input": inputs},
            model=wanted,
            failure=GenerationError,
            known=self._ids,
        )
        data = reply.get("data")
        source = f"{self.name}'s /embeddings at {self.base_url}"
        if not isinstance(data, list) or not all(
            isinstance(d, dict) and isinstance(d.get("index"), int) for d in data
        ):
            raise GenerationError(
                f"{source} sent no 'data' list of indexed embeddings",
                model=wanted,
                backend=self.name,
            )
        ordered = sorted(data, key=lambda d: int(d["index"]))
        if [d["index"] for d in ordered] != list(range(len(ordered))):
            raise GenerationError(
                f"{source} sent embeddings with indexes {[d['index'] for d in ordered]}",
                model=wanted,
                backend=self.name,
            )
        vectors = checked_vectors(
            [d.get("embedding") for d in ordered],
            len(inputs),
            normalize=normalize,
            model=wanted,
            backend=self.name,
            source=source,
        )
        usage = reply.get("usage")
        tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        return Embeddings(
            model=wanted,
            vectors=vectors,
            metrics=EmbedMetrics(
                prompt_tokens=tokens if isinstance(tokens, int) else 0,
                total_seconds=round(time.perf_counter() - started, 6),
            ),
        )

    def close(self) -> None:
        self._client.close()

    # Internals ----------------------------------------------------------------------------------

    def _entries(self, *, timeout: float | None = None) -> list[Json]:
        bound = min(LISTING_TIMEOUT_SECONDS, self._client.timeout_seconds)
        listing = self._client.request("GET", "models", timeout=timeout or bound)
        entries = convert.model_entries(listing)
        with self._lock:
            self._served = frozenset(str(e["id"]) for e in entries)
        return entries

    def _ids(self, *, timeout: float | None = None) -> list[str]:
        return [str(e["id"]) for e in self._entries(timeout=timeout)]

    def _props(self) -> Json | None:
        """llama.cpp's ``/props`` (its context size), where the server has one."""
        try:
            timeout = min(PROBE_TIMEOUT_SECONDS, self._client.timeout_seconds)
            return self._client.request("GET", "/props", timeout=timeout)
        except LLMSpellError as exc:
            log.debug("%s has no /props: %s", self.name, exc.message)
            return None

    def _check_served(self, wanted: str) -> None:
        """Servers such as llama.cpp's answer any model name with their default model: a name
        the server does not list is :class:`ModelNotFound` here instead. A server without a
        ``/models`` listing is taken at its word."""
        with self._lock:
            if wanted in self._served:
                return
        try:
            ids = self._ids()
        except LLMSpellError as exc:
            if isinstance(exc, BackendUnavailable):
                raise
            log.debug("%s did not list its models: %s", self.name, exc.message)
            return
        if wanted not in ids:
            raise ModelNotFound(
                self._client.not_found_message(wanted, lambda: ids),
                model=wanted,
                backend=self.name,
            )

    def _generate(
        self,
        path: str,
        wanted: str,
        body: Json,
        text_of: Callable[[Json], str],
        cancel: threading.Event | None,
    ) -> Generator[Chunk, None, None]:
        self._check_served(wanted)
        started = time.perf_counter()
        first: float | None = None
        last = started
        pieces = 0
        usage: Json | None = None
        timings: Json | None = None
        reason: str | None = None
        events = self._events(path, wanted, body, cancel)
        try:
            for data in events:
                text = text_of(data)
                if isinstance(data.get("usage"), dict):
                    usage = data["usage"]
                if isinstance(data.get("timings"), dict):
                    timings = data["timings"]
                reason = convert.finish_reason(data) or reason
                if text:
                    last = time.perf_counter()
                    if first is None:
                        first = last
                    pieces += 1
                    yield Chunk(text=text)
        finally:
            events.close()
        ended = time.perf_counter()
        yield Chunk(
            text="",
            done=True,
            metrics=convert.metrics(
                usage=usage,
                timings=timings,
                pieces=pieces,
                reason=reason,
                ttft=None if first is None else first - started,
                generating=0.0 if first is None else last - first,
                total=ended - started,
            ),
        )

    def _events(
        self, path: str, wanted: str, body: Json, cancel: threading.Event | None
    ) -> Generator[Json, None, None]:
        """The stream's events, asking for usage where the server takes ``stream_options``, and
        for ``json_schema`` output where it takes it (else ``json_object``)."""
        sent = convert.with_usage(body) if self._usage else body
        known = self._ids
        while True:
            events = self._client.stream(path, sent, model=wanted, cancel=cancel, known=known)
            try:
                try:
                    first = next(events)
                except StopIteration:
                    return
                except GenerationError as exc:
                    retry = self._without_refused(sent, exc)
                    if retry is None:
                        raise
                    sent = retry
                    continue
                yield first
                yield from events
                return
            finally:
                events.close()

    def _without_refused(self, body: Json, exc: GenerationError) -> Json | None:
        """``body`` without what the server refused, by ``exc``'s message (None: nothing to
        take back; the error stands)."""
        if "stream_options" in exc.message and "stream_options" in body:
            log.info("%s refuses stream_options: token counts are counted here", self.name)
            self._usage = False
            return {key: value for key, value in body.items() if key != "stream_options"}
        if "response_format" in exc.message or "json_schema" in exc.message:
            fallback = convert.json_object_fallback(body)
            if fallback is not None:
                log.info("%s refuses json_schema output: asking for json_object", self.name)
            return fallback
        return None
