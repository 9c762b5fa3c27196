"""Fixtures for the kernel namespace tests: a real IPython shell, a scripted backend for the pure
logic (history, options, defaults, parsing), and a recording wrapper around the real llamacpp
backend with Gemma 3 270M imported, for everything that generates text.
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from providers import (
    AvailableModel,
    Backend,
    BackendHealth,
    Chunk,
    Config,
    GenerationError,
    GenerationOptions,
    LoadedModel,
    Message,
    Metrics,
    ModelInfo,
    ModelNotFound,
    ModelSpec,
    Progress,
    ProgressCallback,
    ProviderManager,
    PullResult,
    UnsupportedOperation,
)
from providers.types import ChunkStream, Removed

GEMMA_ID = "gemma3-270m"


class ScriptedBackend:
    """A llamacpp stand-in whose chat yields scripted pieces and records what it was asked.

    ``fail_after`` makes the next generation raise :class:`GenerationError` after that many
    pieces. ``closed`` counts generations whose iterator was closed before their end.
    """

    name = "llamacpp"

    def __init__(self, installed: Sequence[str] = (GEMMA_ID,)) -> None:
        self.installed = list(installed)
        self.pieces = ["Hello", ",", " world", "!"]
        self.chats: list[tuple[str, list[dict[str, str]], GenerationOptions]] = []
        self.prompts: list[str] = []
        """The prompts of plain completions (each is also recorded in :attr:`chats`)."""
        self.closed = 0
        self.finished = 0
        self.fail_after: int | None = None
        self.interrupt_after: int | None = None
        """Raise KeyboardInterrupt (a Stop in a notebook) after that many pieces."""
        self.pull_events = 0

    def _find(self, spec: ModelSpec) -> str:
        if spec.name not in self.installed:
            raise ModelNotFound(f"model '{spec.name}' is not installed", model=spec.name)
        return spec.name

    def health(self) -> BackendHealth:
        return BackendHealth(self.name, available=True, version="scripted", models=1)

    def list_models(self) -> list[ModelInfo]:
        return [ModelInfo(id=i, backend=self.name, size_bytes=10) for i in self.installed]

    def has_model(self, spec: ModelSpec) -> bool:
        return spec.name in self.installed

    def available(self, *, recommended_only: bool = False) -> list[AvailableModel]:
        return [AvailableModel("tinyllama", self.name, "a small model", ("Q4_K_M",))]

    def pull(
        self,
        spec: ModelSpec,
        progress: ProgressCallback | None = None,
        *,
        force: bool = False,
        quantization: str | None = None,
        cancel: threading.Event | None = None,
    ) -> PullResult:
        total = 5_000_000
        if progress is not None:
            progress(Progress(spec.name, "resolving"))
            for step in range(1, 5001):
                progress(Progress(spec.name, "downloading", step * 1000, total))
                self.pull_events += 1
            progress(Progress(spec.name, "verifying", total, total))
            progress(Progress(spec.name, "done", total, total))
        self.installed.append(spec.name)
        return PullResult(ModelInfo(id=spec.name, backend=self.name), bytes=total, seconds=0.5)

    def import_model(self, path: Path, name: str | None = None) -> ModelInfo:
        raise UnsupportedOperation("the scripted backend imports nothing", backend=self.name)

    def info(self, spec: ModelSpec) -> ModelInfo:
        return ModelInfo(id=self._find(spec), backend=self.name, context_length=32768)

    def remove(self, spec: ModelSpec) -> Removed:
        name = self._find(spec)
        self.installed.remove(name)
        return Removed(name)

    def load(self, spec: ModelSpec, progress: ProgressCallback | None = None) -> LoadedModel:
        return LoadedModel(id=self._find(spec), backend=self.name)

    def unload(self, spec: ModelSpec) -> str:
        return self._find(spec)

    def loaded(self) -> list[LoadedModel]:
        return []

    def chat(
        self,
        spec: ModelSpec,
        messages: Sequence[Message],
        options: GenerationOptions,
        *,
        cancel: threading.Event | None = None,
    ) -> ChunkStream:
        self._find(spec)
        self.chats.append((spec.name, [m.to_dict() for m in messages], options))
        return self._generate()

    def _generate(self) -> Generator[Chunk, None, None]:
        done = False
        try:
            for index, piece in enumerate(self.pieces):
                if self.fail_after is not None and index == self.fail_after:
                    raise GenerationError("the scripted model broke")
                if self.interrupt_after is not None and index == self.interrupt_after:
                    raise KeyboardInterrupt
                yield Chunk(piece)
            done = True
            yield Chunk("", done=True, metrics=Metrics(generated_tokens=len(self.pieces)))
        finally:
            if done:
                self.finished += 1
            else:
                self.closed += 1

    def complete(
        self,
        spec: ModelSpec,
        prompt: str,
        options: GenerationOptions,
        *,
        cancel: threading.Event | None = None,
    ) -> ChunkStream:
        self.prompts.append(prompt)
        return self.chat(spec, [Message("user", prompt)], options, cancel=cancel)

    def close(self) -> None:
        pass


class RecordingBackend:
    """Wraps a real backend, recording the messages of every chat and how each generation
    ended (``{"chunks": n, "done": bool, "closed": bool}``); everything else is delegated."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.name = inner.name
        self.chats: list[list[dict[str, str]]] = []
        self.generations: list[dict[str, Any]] = []

    def chat(
        self,
        spec: ModelSpec,
        messages: Sequence[Message],
        options: GenerationOptions,
        *,
        cancel: threading.Event | None = None,
    ) -> ChunkStream:
        self.chats.append([m.to_dict() for m in messages])
        return self._watch(self.inner.chat(spec, messages, options, cancel=cancel))

    def _watch(self, chunks: ChunkStream) -> Generator[Chunk, None, None]:
        record: dict[str, Any] = {"chunks": 0, "done": False, "closed": False}
        self.generations.append(record)
        try:
            for chunk in chunks:
                record["chunks"] += 1
                record["done"] = record["done"] or chunk.done
                yield chunk
        finally:
            chunks.close()
            record["closed"] = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def make_shell(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """A fresh, real IPython InteractiveShell (no history file, its own IPYTHONDIR)."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config as TraitletsConfig

    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    config = TraitletsConfig()
    config.HistoryManager.enabled = False
    config.InteractiveShell.colors = "nocolor"
    return InteractiveShell(config=config)


@pytest.fixture
def shell(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    monkeypatch.delenv("LLMSPELL_MODEL", raising=False)
    ipython = make_shell(monkeypatch, tmp_path)
    try:
        yield ipython
    finally:
        ipython.cleanup()


@pytest.fixture
def scripted() -> ScriptedBackend:
    return ScriptedBackend()


@pytest.fixture
def scripted_manager(scripted: ScriptedBackend) -> ProviderManager:
    config = Config.from_dict({"default_backend": "llamacpp"})
    return ProviderManager(config, backends={"llamacpp": scripted})


# The real model ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def gemma_store(tmp_path_factory: pytest.TempPathFactory, gemma_path: Path) -> Path:
    """A model store holding the real Gemma 3 270M as ``gemma3-270m`` (imported once)."""
    from providers.llamacpp import LlamaCppBackend

    store = tmp_path_factory.mktemp("gemma-store")
    backend = LlamaCppBackend(gemma_config(store))
    try:
        backend.import_model(gemma_path, GEMMA_ID)
    finally:
        backend.close()
    return store


def gemma_config(store: Path) -> Config:
    return Config.from_dict(
        {
            "default_backend": "llamacpp",
            "providers": {
                "ollama": {"enabled": False},
                "llamacpp": {"options": {"model_directory": str(store), "n_ctx": 2048}},
            },
        }
    )


@pytest.fixture(scope="module")
def gemma_manager(gemma_store: Path) -> Iterator[tuple[ProviderManager, RecordingBackend]]:
    """A manager over the real llamacpp backend (recorded), shared by a module's tests so the
    model loads once."""
    from providers.llamacpp import LlamaCppBackend

    recording = RecordingBackend(LlamaCppBackend(gemma_config(gemma_store)))
    manager = ProviderManager(gemma_config(gemma_store), backends={"llamacpp": recording})
    try:
        yield manager, recording
    finally:
        manager.close()
