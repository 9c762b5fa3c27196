"""OllamaBackend: the provider protocol over a running Ollama server's REST API."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Any

import httpx

from ..config import Config, OllamaConfig, normalize_ollama_url
from ..embedding import check_inputs, checked_vectors
from ..errors import (
    BackendUnavailable,
    Cancelled,
    DownloadError,
    GenerationError,
    InvalidRequest,
    LLMSpellError,
    ModelLoadError,
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
    Progress,
    ProgressCallback,
    PullResult,
    Removed,
)
from .client import OllamaClient, not_found_message
from .convert import (
    loaded_model,
    metrics,
    model_info,
    ollama_options,
    parse_parameters,
    utc_iso,
)
from .library import library_models
from .names import ollama_name, same_model
from .progress import SUCCESS, PullTracker

PROBE_TIMEOUT_SECONDS = 2.0
"""Bound on ``has_model``: it runs during backend resolution and must stay quick."""

Json = dict[str, Any]


def _is_done(line: Json) -> bool:
    return line.get("done") is True


def _is_pull_done(line: Json) -> bool:
    return line.get("status") == SUCCESS


class OllamaBackend:
    """Models served by Ollama (``ollama serve``), reached over HTTP with httpx."""

    name = "ollama"

    def __init__(
        self,
        config: Config,
        *,
        name: str = "ollama",
        settings: OllamaConfig | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """The built-in ``[providers.ollama]``, or with ``name`` and ``settings`` a named
        endpoint of type ollama (``[providers.NAME]``, its own ``base_url``). ``transport``: the
        HTTP transport to reach Ollama through (see :class:`OllamaClient`)."""
        self.name = name
        if settings is None:
            settings = config.providers.ollama
            self.base_url = config.ollama_url()
        else:
            self.base_url = normalize_ollama_url(settings.base_url or "")
        self.keep_alive = settings.options.keep_alive
        self._client = OllamaClient(
            self.base_url, settings.timeout_seconds, backend=name, transport=transport
        )

    # Status and listing -----------------------------------------------------------------------

    def health(self) -> BackendHealth:
        try:
            version = self._client.request("GET", "/api/version").get("version")
            models = self._tags()
            loaded = self._ps()
        except LLMSpellError as exc:
            return BackendHealth(
                name=self.name, available=False, reason=exc.message, details={"url": self.base_url}
            )
        return BackendHealth(
            name=self.name,
            available=True,
            version=str(version) if version is not None else None,
            models=len(models),
            loaded=len(loaded),
            details={"url": self.base_url},
        )

    def list_models(self) -> list[ModelInfo]:
        entries = self._tags()
        try:
            running = {str(e.get("name") or e.get("model")) for e in self._ps()}
        except BackendUnavailable:
            running = set()
        return [
            model_info(
                e,
                loaded=any(same_model(str(e.get("name")), r) for r in running),
                backend=self.name,
            )
            for e in entries
        ]

    def has_model(self, spec: ModelSpec) -> bool:
        try:
            timeout = min(PROBE_TIMEOUT_SECONDS, self._client.timeout_seconds)
            body = self._client.request("GET", "/api/tags", timeout=timeout)
        except LLMSpellError:
            return False
        wanted = ollama_name(spec)
        models = body.get("models")
        return isinstance(models, list) and any(
            isinstance(e, dict) and same_model(str(e.get("name") or e.get("model")), wanted)
            for e in models
        )

    def available(self, *, recommended_only: bool = False) -> list[AvailableModel]:
        return library_models(recommended_only=recommended_only)

    def info(self, spec: ModelSpec) -> ModelInfo:
        name = ollama_name(spec)
        show = self._client.request("POST", "/api/show", {"model": name}, model=name)
        entry = self._tag_entry(name)
        try:
            loaded = any(same_model(str(e.get("name")), name) for e in self._ps())
        except BackendUnavailable:
            loaded = False
        details = show.get("details") or {}
        info = show.get("model_info") or {}
        architecture = info.get("general.architecture")
        context = info.get(f"{architecture}.context_length") if architecture else None
        template = show.get("template")
        return ModelInfo(
            id=str(entry.get("name")) if entry else name,
            backend=self.name,
            size_bytes=entry.get("size") if entry else None,
            quantization=details.get("quantization_level") or None,
            modified_at=utc_iso(entry.get("modified_at")) if entry else None,
            loaded=loaded,
            format=details.get("format") or "gguf",
            family=details.get("family") or None,
            architecture=str(architecture) if architecture else None,
            parameter_size=details.get("parameter_size") or None,
            context_length=int(context) if isinstance(context, int | float) else None,
            chat_template="ollama" if template else None,
            details={
                "parameters": parse_parameters(show.get("parameters")),
                "template": template,
                "capabilities": list(show.get("capabilities") or []),
                "parameter_count": info.get("general.parameter_count"),
                "families": details.get("families"),
                "digest": entry.get("digest") if entry else None,
            },
        )

    # Pull and remove ----------------------------------------------------------------------------

    def pull(
        self,
        spec: ModelSpec,
        progress: ProgressCallback | None = None,
        *,
        force: bool = False,
        quantization: str | None = None,
        cancel: threading.Event | None = None,
    ) -> PullResult:
        """Pull through Ollama. ``force`` changes nothing: Ollama always re-checks the registry
        and fetches only changed layers. Setting ``cancel`` hangs up at once, which cancels the
        pull on Ollama's side (it keeps the layers it has)."""
        del force
        if quantization:
            if not spec.is_hf:
                raise UnsupportedOperation(
                    "Ollama picks the quantization by tag: pull `name:TAG` instead, e.g. "
                    "`llama3.1:8b-instruct-q4_K_M@ollama`",
                    model=str(spec),
                    backend=self.name,
                )
            spec = ModelSpec(model=spec.model, variant=quantization, hf_repo=spec.hf_repo)
        name = ollama_name(spec)
        tracker = PullTracker(name)
        started = time.monotonic()
        lines = self._client.stream(
            "/api/pull",
            {"model": name, "stream": True},
            model=name,
            failure=DownloadError,
            is_final=_is_pull_done,
            cancel=cancel,
        )
        try:
            for line in lines:
                event = tracker.update(line)
                if progress is not None:
                    progress(event)
        except ModelNotFound as exc:
            # The client's advice for a missing model is to pull it: not for a pull.
            detail = exc.message.removeprefix(not_found_message(name)).strip()
            raise ModelNotFound(
                f"model '{name}' is not in the Ollama library (Ollama at {self.base_url}"
                f" could not find it): see `llmspell model available --backend ollama` or"
                f" https://ollama.com/library for the names it has {detail}".rstrip(),
                model=name,
                backend=self.name,
            ) from exc
        finally:
            lines.close()
        seconds = time.monotonic() - started
        return PullResult(model=self.info(spec), bytes=tracker.total_bytes, seconds=seconds)

    def import_model(self, path: Path, name: str | None = None) -> ModelInfo:
        raise UnsupportedOperation(
            f"the Ollama backend cannot import {path}: Ollama imports a GGUF with "
            "`ollama create NAME -f Modelfile` (a Modelfile holding `FROM /path/to/model.gguf`); "
            "`llmspell model import` adds it to the llamacpp backend instead",
            model=name,
            backend=self.name,
        )

    def remove(self, spec: ModelSpec) -> Removed:
        name = ollama_name(spec)
        try:
            self._client.request("DELETE", "/api/delete", {"model": name}, model=name)
        except ModelNotFound as exc:
            raise ModelNotFound(
                f"model '{name}' is not installed in the Ollama at {self.base_url}: nothing to"
                " remove",
                model=name,
                backend=self.name,
            ) from exc
        return Removed(name)

    # Memory ---------------------------------------------------------------------------------------

    def load(self, spec: ModelSpec, progress: ProgressCallback | None = None) -> LoadedModel:
        name = ollama_name(spec)
        if progress is not None:
            progress(Progress(name, "loading"))
        body: Json = {"model": name, "stream": False}
        if self.keep_alive is not None:
            body["keep_alive"] = self.keep_alive
        self._client.request("POST", "/api/generate", body, model=name, failure=ModelLoadError)
        if progress is not None:
            progress(Progress(name, "done"))
        for entry in self._ps():
            if same_model(str(entry.get("name") or entry.get("model")), name):
                return loaded_model(entry, self.name)
        return LoadedModel(id=name, backend=self.name)

    def unload(self, spec: ModelSpec) -> str:
        name = ollama_name(spec)
        self._client.request(
            "POST", "/api/generate", {"model": name, "keep_alive": 0, "stream": False}, model=name
        )
        return name

    def loaded(self) -> list[LoadedModel]:
        return [loaded_model(e, self.name) for e in self._ps()]

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
        name = ollama_name(spec)
        body = self._generation_body(name, options)
        body["messages"] = [m.to_dict() for m in messages]
        return self._generate("/api/chat", name, body, _chat_text, cancel)

    def complete(
        self,
        spec: ModelSpec,
        prompt: str,
        options: GenerationOptions,
        *,
        cancel: threading.Event | None = None,
    ) -> ChunkStream:
        if not prompt:
            # Ollama treats an empty prompt as "load the model" and generates nothing.
            raise InvalidRequest("complete needs a non-empty prompt", backend=self.name)
        name = ollama_name(spec)
        body = self._generation_body(name, options)
        body["prompt"] = prompt
        # A completion continues the text as given: without `raw`, Ollama would wrap it in the
        # model's chat template (llamacpp's complete() applies no template either).
        body["raw"] = True
        return self._generate("/api/generate", name, body, _generate_text, cancel)

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
        """``POST /api/embed`` (Ollama's vectors are normalized already; with ``normalize``
        false they are still what Ollama sent). One request, not cancellable midway: a cancel
        is honoured before it is sent."""
        inputs = check_inputs(texts)
        name = ollama_name(spec)
        if cancel is not None and cancel.is_set():
            raise Cancelled("embedding interrupted", model=name, backend=self.name)
        body: Json = {"model": name, "input": inputs, "truncate": truncate}
        if self.keep_alive is not None:
            body["keep_alive"] = self.keep_alive
        started = time.perf_counter()
        reply = self._client.request(
            "POST", "/api/embed", body, model=name, failure=GenerationError
        )
        vectors = checked_vectors(
            reply.get("embeddings"),
            len(inputs),
            normalize=normalize,
            model=name,
            backend=self.name,
            source=f"Ollama's /api/embed at {self.base_url}",
        )
        return Embeddings(
            model=name,
            vectors=vectors,
            metrics=EmbedMetrics(
                prompt_tokens=_count(reply.get("prompt_eval_count")),
                load_seconds=_count(reply.get("load_duration")) / 1e9,
                total_seconds=round(time.perf_counter() - started, 6),
            ),
        )

    def close(self) -> None:
        self._client.close()

    # Internals ----------------------------------------------------------------------------------

    def _generation_body(self, name: str, options: GenerationOptions) -> Json:
        body: Json = {"model": name, "stream": True, "options": ollama_options(options)}
        if options.format is not None:
            body["format"] = options.format  # "json" or a JSON Schema, as Ollama takes them
        if self.keep_alive is not None:
            body["keep_alive"] = self.keep_alive
        return body

    def _generate(
        self,
        path: str,
        name: str,
        body: Json,
        text_of: Callable[[Json], str],
        cancel: threading.Event | None,
    ) -> Generator[Chunk, None, None]:
        started = time.perf_counter()
        first_token: float | None = None
        lines = self._client.stream(
            path, body, model=name, failure=GenerationError, is_final=_is_done, cancel=cancel
        )
        try:
            for line in lines:
                text = text_of(line)
                if text and first_token is None:
                    first_token = time.perf_counter() - started
                if _is_done(line):
                    yield Chunk(text=text, done=True, metrics=metrics(line, first_token))
                    return
                if text:
                    yield Chunk(text=text)
        finally:
            lines.close()

    def _tags(self) -> list[Json]:
        models = self._client.request("GET", "/api/tags").get("models") or []
        return [m for m in models if isinstance(m, dict)]

    def _ps(self) -> list[Json]:
        models = self._client.request("GET", "/api/ps").get("models") or []
        return [m for m in models if isinstance(m, dict)]

    def _tag_entry(self, name: str) -> Json | None:
        for entry in self._tags():
            if same_model(str(entry.get("name") or entry.get("model")), name):
                return entry
        return None


def _count(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _chat_text(line: Json) -> str:
    message = line.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else ""


def _generate_text(line: Json) -> str:
    response = line.get("response")
    return response if isinstance(response, str) else ""
