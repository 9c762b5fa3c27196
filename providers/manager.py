"""ProviderManager: builds the backends from config and routes model specs to them."""

from __future__ import annotations

import difflib
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from .base import Backend
from .config import Config, OllamaEndpoint, OpenAIEndpoint
from .errors import (
    BackendUnavailable,
    InvalidModelSpec,
    LLMSpellError,
    ModelNotFound,
    UnsupportedOperation,
)
from .options import with_defaults
from .spec import ModelSpec, normalize_backend, parse_spec
from .structured import checked
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

log = logging.getLogger(__name__)
T = TypeVar("T")

# Which installed backend is asked first when a spec names none: the local store is cheap to
# look at, Ollama needs a round trip.
RESOLUTION_ORDER: tuple[str, ...] = ("llamacpp", "ollama")
FALLBACK_BACKEND = "ollama"


@dataclass(frozen=True)
class ModelListing:
    """``list`` over several backends: the models found, and the backends that failed."""

    models: list[ModelInfo]
    errors: dict[str, str] = field(default_factory=dict)


def build_backend(name: str, config: Config) -> Backend:
    """Construct one backend: a built-in one or a named endpoint of ``config``. Imports are
    local so that unused backends cost nothing."""
    if name == "llamacpp":
        from .llamacpp import LlamaCppBackend

        return LlamaCppBackend(config)
    if name == "ollama":
        from .ollama import OllamaBackend

        return OllamaBackend(config)
    endpoint = config.endpoints.get(name)
    if isinstance(endpoint, OpenAIEndpoint):
        from .openai import OpenAIBackend

        return OpenAIBackend(name, endpoint)
    if isinstance(endpoint, OllamaEndpoint):
        from .ollama import OllamaBackend

        return OllamaBackend(config, name=name, settings=endpoint)
    raise _unknown_backend(name, config.backend_names())


def _unknown_backend(name: str, known: Sequence[str]) -> InvalidModelSpec:
    return InvalidModelSpec(
        f"unknown backend {name!r}: expected one of {', '.join(known)} (built-in, or a"
        " [providers.NAME] table of the configuration)",
        backend=name,
    )


class ProviderManager:
    """Owns the enabled backends. Thread-safe; every method may be called from any thread."""

    def __init__(
        self, config: Config | None = None, backends: dict[str, Backend] | None = None
    ) -> None:
        self.config = config or Config()
        self._lock = threading.Lock()
        self._backends: dict[str, Backend] = dict(backends or {})
        self._given = backends is not None

    # Backends ---------------------------------------------------------------------------------

    def enabled(self) -> list[str]:
        """Names of the enabled backends, in resolution order: llamacpp, ollama, then the
        named endpoints in the configuration's order."""
        if self._given:
            builtin = [n for n in RESOLUTION_ORDER if n in self._backends]
            return builtin + [n for n in self._backends if n not in RESOLUTION_ORDER]
        providers = self.config.providers
        flags = {"llamacpp": providers.llamacpp.enabled, "ollama": providers.ollama.enabled}
        named = [n for n, e in self.config.endpoints.items() if e.enabled]
        return [n for n in RESOLUTION_ORDER if flags[n]] + named

    def known(self) -> list[str]:
        """Every backend name this manager knows, enabled or not."""
        names = list(self.config.backend_names())
        return names + [n for n in self._backends if n not in names]

    def _key(self, name: str) -> str:
        """``name`` normalized, if it names a backend this manager knows."""
        key = normalize_backend(name)
        if key not in self.known():
            raise _unknown_backend(name, self.known())
        return key

    def backend(self, name: str) -> Backend:
        key = self._key(name)
        if key not in self.enabled():
            raise BackendUnavailable(
                f"backend '{key}' is disabled in the configuration", backend=key
            )
        with self._lock:
            if key not in self._backends:
                self._backends[key] = build_backend(key, self.config)
            return self._backends[key]

    def _selected(self, backend: str | None) -> list[str]:
        if backend is None:
            return self.enabled()
        key = self._key(backend)
        if key not in self.enabled():
            raise BackendUnavailable(
                f"backend '{key}' is disabled in the configuration", backend=key
            )
        return [key]

    def resolve(self, spec: str | ModelSpec) -> tuple[Backend, ModelSpec]:
        """The backend for ``spec`` (a model that should be installed) and the spec with its
        backend filled in: see :meth:`route`."""
        return self.route(spec, installed=True)

    def route(self, spec: str | ModelSpec, *, installed: bool) -> tuple[Backend, ModelSpec]:
        """The one routing rule, first match wins:

        1. an explicit ``@backend``;
        2. ``hf:`` specs go to llamacpp;
        3. with ``installed``, the first enabled backend that has the model;
        4. the first enabled backend whose catalog (``available``) names the model,
           ``default_backend`` asked first: a pull of ``qwen2.5-0.5b`` goes where it can come
           from, and a removed catalog model is reported by the backend it came from;
        5. with ``installed``, nothing has or knows the model: :class:`ModelNotFound` saying
           so, with each backend's state and the close matches among what is installed and
           what can be pulled;
        6. a pull goes to ``default_backend`` if enabled, else ollama if enabled, else the
           first enabled backend.

        A pull routes with ``installed=False``: the model is not here yet.
        """
        parsed = parse_spec(spec)
        if parsed.backend:
            return self.backend(parsed.backend), parsed
        enabled = self.enabled()
        if not enabled:
            raise BackendUnavailable("every backend is disabled in the configuration")
        if parsed.is_hf and "llamacpp" in enabled:
            return self.backend("llamacpp"), parsed.with_backend("llamacpp")
        if installed:
            for name in enabled:
                try:
                    backend = self.backend(name)
                    if backend.has_model(parsed):
                        return backend, parsed.with_backend(name)
                except LLMSpellError as exc:
                    log.debug("backend %s could not be asked for %s: %s", name, parsed, exc)
        default = self.config.default_backend
        preferred = [default] if default in enabled else []
        for name in [*preferred, *(n for n in enabled if n != default)]:
            if parsed.model.lower() in self._catalog_names(name):
                return self.backend(name), parsed.with_backend(name)
        if installed:
            raise self._not_installed_anywhere(parsed, enabled)
        name = (
            default
            if default in enabled
            else (FALLBACK_BACKEND if FALLBACK_BACKEND in enabled else enabled[0])
        )
        assert name is not None
        return self.backend(name), parsed.with_backend(name)

    def _catalog_names(self, name: str) -> set[str]:
        """The (lower-case) names a backend's catalog offers for pulling."""
        try:
            return {m.name.lower() for m in self.backend(name).available()}
        except LLMSpellError as exc:
            log.debug("backend %s could not list its catalog: %s", name, exc)
            return set()

    def _not_installed_anywhere(self, spec: ModelSpec, enabled: list[str]) -> ModelNotFound:
        """The error for a model no enabled backend has or knows: where it was looked for
        (a backend that could not be asked says why) and the names close to it."""
        searched: list[str] = []
        names: list[str] = []
        for name in enabled:
            try:
                ids = [m.id for m in self.backend(name).list_models()]
            except LLMSpellError as exc:
                searched.append(f"{name}: could not be asked, {exc.message}")
            else:
                searched.append(f"{name}: {len(ids)} installed")
                names += [*ids, *(i.split(":", 1)[0] for i in ids)]
            try:
                names += [m.name for m in self.backend(name).available()]
            except LLMSpellError:
                pass
        wanted = spec.name if spec.variant else spec.model
        unique = list(dict.fromkeys(n for n in names if n != wanted))
        close = difflib.get_close_matches(wanted, unique, n=3, cutoff=0.75)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        return ModelNotFound(
            f"model '{spec.name}' is not installed anywhere ({'; '.join(searched)}): {hint}"
            "see `llmspell model list` for what is installed and `llmspell model available`"
            " for what can be pulled",
            model=spec.name,
        )

    # Queries over all backends -------------------------------------------------------------

    def _ask(self, names: list[str], ask: Callable[[Backend], T]) -> dict[str, T | LLMSpellError]:
        """``ask(backend)`` of each of ``names``, or the LLMSpellError it raised, in order.

        With several backends beyond llamacpp (each a server: Ollama, named endpoints), those
        are asked at the same time, so that a list or status over several servers takes as long
        as the slowest one, not the sum (a server that does not answer costs its timeout).
        """

        def one(name: str) -> T | LLMSpellError:
            try:
                return ask(self.backend(name))
            except LLMSpellError as exc:
                return exc

        servers = [n for n in names if n != "llamacpp"]
        if len(servers) < 2:
            return {name: one(name) for name in names}
        with ThreadPoolExecutor(len(servers), thread_name_prefix="llmspell-ask") as pool:
            asked = {name: pool.submit(one, name) for name in servers}
            here = {name: one(name) for name in names if name not in asked}
            return {name: asked[name].result() if name in asked else here[name] for name in names}

    def status(self, backend: str | None = None) -> dict[str, BackendHealth]:
        result: dict[str, BackendHealth] = {}
        for name, health in self._ask(self._selected(backend), lambda b: b.health()).items():
            if isinstance(health, LLMSpellError):
                health = BackendHealth(name=name, available=False, reason=health.message)
            result[name] = health
        if backend is None:
            for name in self.known():
                if name not in result:
                    result[name] = BackendHealth(name=name, available=False, reason="disabled")
        return result

    def list_models(self, backend: str | None = None) -> ModelListing:
        """Models of every selected backend; a backend that fails is reported, not fatal.

        With one backend named, its failure is raised instead.
        """
        models: list[ModelInfo] = []
        errors: dict[str, str] = {}
        for name, found in self._ask(self._selected(backend), lambda b: b.list_models()).items():
            if isinstance(found, LLMSpellError):
                if backend is not None:
                    raise found
                errors[name] = found.message
            else:
                models.extend(found)
        return ModelListing(models=models, errors=errors)

    def available(
        self, backend: str | None = None, *, recommended_only: bool = False
    ) -> list[AvailableModel]:
        models: list[AvailableModel] = []
        for name in self._selected(backend):
            models.extend(self.backend(name).available(recommended_only=recommended_only))
        return models

    def ps(self) -> list[LoadedModel]:
        loaded: list[LoadedModel] = []
        for name in self.enabled():
            try:
                loaded.extend(self.backend(name).loaded())
            except BackendUnavailable:
                continue
        return loaded

    # Per-model operations -----------------------------------------------------------------

    def pull(
        self,
        spec: str | ModelSpec,
        progress: ProgressCallback | None = None,
        *,
        force: bool = False,
        quantization: str | None = None,
        cancel: threading.Event | None = None,
    ) -> PullResult:
        backend, parsed = self.route(spec, installed=False)
        return backend.pull(parsed, progress, force=force, quantization=quantization, cancel=cancel)

    def import_model(
        self, path: str | Path, name: str | None = None, *, link: bool = False
    ) -> ModelInfo:
        """Register a GGUF file in the llamacpp store: copied, or with ``link`` linked in
        place (hard link, else symlink)."""
        from .llamacpp import LlamaCppBackend

        backend = self.backend("llamacpp")
        if not isinstance(backend, LlamaCppBackend):
            raise UnsupportedOperation("import is for the llamacpp store", backend=backend.name)
        return backend.import_model(Path(path), name, link=link)

    def copy(self, spec: str | ModelSpec, name: str) -> ModelInfo:
        """A second name for an installed model: in the llamacpp store, a manifest naming the
        same blob (no bytes copied)."""
        from .llamacpp import LlamaCppBackend

        backend, parsed = self.resolve(spec)
        if not isinstance(backend, LlamaCppBackend):
            raise UnsupportedOperation(
                f"copy is for models of the llamacpp store; {parsed} is on {backend.name}"
                " (for Ollama: `ollama cp`)",
                model=str(parsed),
                backend=backend.name,
            )
        return backend.copy(parsed, name)

    def info(self, spec: str | ModelSpec) -> ModelInfo:
        backend, parsed = self.resolve(spec)
        return backend.info(parsed)

    def remove(self, spec: str | ModelSpec) -> Removed:
        backend, parsed = self.resolve(spec)
        return backend.remove(parsed)

    def load(self, spec: str | ModelSpec, progress: ProgressCallback | None = None) -> LoadedModel:
        backend, parsed = self.resolve(spec)
        return backend.load(parsed, progress)

    def unload(self, spec: str | ModelSpec) -> str:
        backend, parsed = self.resolve(spec)
        return backend.unload(parsed)

    def chat(
        self,
        spec: str | ModelSpec,
        messages: Sequence[Message],
        options: GenerationOptions | None = None,
        *,
        cancel: threading.Event | None = None,
    ) -> ChunkStream:
        backend, parsed = self.resolve(spec)
        options = self.generation_options(options)
        stream = backend.chat(parsed, messages, options, cancel=cancel)
        return checked(stream, options, str(parsed))

    def complete(
        self,
        spec: str | ModelSpec,
        prompt: str,
        options: GenerationOptions | None = None,
        *,
        cancel: threading.Event | None = None,
    ) -> ChunkStream:
        backend, parsed = self.resolve(spec)
        options = self.generation_options(options)
        stream = backend.complete(parsed, prompt, options, cancel=cancel)
        return checked(stream, options, str(parsed))

    def embed(
        self,
        spec: str | ModelSpec,
        texts: Sequence[str],
        *,
        truncate: bool = True,
        normalize: bool = True,
        cancel: threading.Event | None = None,
    ) -> Embeddings:
        """Embeddings of ``texts`` by the model ``spec`` names (routed as a generation is)."""
        backend, parsed = self.resolve(spec)
        return backend.embed(parsed, texts, truncate=truncate, normalize=normalize, cancel=cancel)

    def generation_options(self, options: GenerationOptions | None) -> GenerationOptions:
        """A request's options completed from the config's ``[generation]`` table (what the
        request sets wins): what every caller of a backend's ``chat``/``complete`` passes."""
        return with_defaults(options or GenerationOptions(), self.config.generation)

    def close(self) -> None:
        with self._lock:
            backends, self._backends = list(self._backends.values()), {}
        for backend in backends:
            try:
                backend.close()
            except Exception:  # closing must not hide the other backends' cleanup
                log.exception("closing backend %s failed", backend.name)
