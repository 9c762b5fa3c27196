"""ProviderManager: routing, backend resolution and graceful degradation.

These tests are about routing only, so the backends are small in-memory recorders; the real
backends have their own tests against the real model and the stand-in servers.
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Sequence
from pathlib import Path

import pytest

import providers
from providers import (
    AvailableModel,
    BackendHealth,
    BackendUnavailable,
    Chunk,
    Config,
    GenerationOptions,
    InvalidModelSpec,
    LoadedModel,
    Message,
    ModelInfo,
    ModelNotFound,
    ModelSpec,
    ProgressCallback,
    ProviderManager,
    PullResult,
    UnsupportedOperation,
)
from providers.types import ChunkStream, Removed


class RecordingBackend:
    def __init__(self, name: str, installed: Sequence[str] = (), down: bool = False) -> None:
        self.name = name
        self.installed = set(installed)
        self.down = down
        self.calls: list[tuple[str, str]] = []

    def _check(self) -> None:
        if self.down:
            raise BackendUnavailable(f"{self.name} is down", backend=self.name)

    def health(self) -> BackendHealth:
        if self.down:
            return BackendHealth(self.name, available=False, reason=f"{self.name} is down")
        return BackendHealth(self.name, available=True, models=len(self.installed))

    def list_models(self) -> list[ModelInfo]:
        self._check()
        return [ModelInfo(id=i, backend=self.name) for i in sorted(self.installed)]

    def has_model(self, spec: ModelSpec) -> bool:
        return not self.down and spec.name in self.installed

    def available(self, *, recommended_only: bool = False) -> list[AvailableModel]:
        return [AvailableModel(name="m", backend=self.name, description="d")]

    def pull(
        self,
        spec: ModelSpec,
        progress: ProgressCallback | None = None,
        *,
        force: bool = False,
        quantization: str | None = None,
        cancel: threading.Event | None = None,
    ) -> PullResult:
        self.calls.append(("pull", str(spec)))
        return PullResult(ModelInfo(id=spec.name, backend=self.name), bytes=0, seconds=0.0)

    def import_model(self, path: Path, name: str | None = None) -> ModelInfo:
        raise UnsupportedOperation("no import", backend=self.name)

    def info(self, spec: ModelSpec) -> ModelInfo:
        self._check()
        self.calls.append(("info", str(spec)))
        if spec.name not in self.installed:
            raise ModelNotFound(f"{spec.name} not found", model=spec.name, backend=self.name)
        return ModelInfo(id=spec.name, backend=self.name)

    def remove(self, spec: ModelSpec) -> Removed:
        self.calls.append(("remove", str(spec)))
        return Removed(spec.name)

    def load(self, spec: ModelSpec, progress: ProgressCallback | None = None) -> LoadedModel:
        return LoadedModel(id=spec.name, backend=self.name)

    def unload(self, spec: ModelSpec) -> str:
        return spec.name

    def loaded(self) -> list[LoadedModel]:
        self._check()
        return [LoadedModel(id=i, backend=self.name) for i in sorted(self.installed)]

    def chat(
        self,
        spec: ModelSpec,
        messages: Sequence[Message],
        options: GenerationOptions,
        *,
        cancel: threading.Event | None = None,
    ) -> Generator[Chunk, None, None]:
        self.calls.append(("chat", str(spec)))
        yield Chunk(text="", done=True)

    def complete(
        self,
        spec: ModelSpec,
        prompt: str,
        options: GenerationOptions,
        *,
        cancel: threading.Event | None = None,
    ) -> Generator[Chunk, None, None]:
        self.calls.append(("complete", str(spec)))
        yield Chunk(text="", done=True)

    def close(self) -> None:
        self.calls.append(("close", ""))


def make(
    default: str | None = None, *, ollama_down: bool = False
) -> tuple[ProviderManager, RecordingBackend, RecordingBackend]:
    llama = RecordingBackend("llamacpp", installed=["gemma3-270m"])
    ollama = RecordingBackend("ollama", installed=["llama3.1:8b"], down=ollama_down)
    config = Config.from_dict({"default_backend": default} if default else {})
    manager = ProviderManager(config, backends={"llamacpp": llama, "ollama": ollama})
    return manager, llama, ollama


def test_explicit_backend_wins() -> None:
    manager, _llama, ollama = make()
    backend, spec = manager.resolve("gemma3-270m@ollama")
    assert backend is ollama
    assert spec.backend == "ollama"


def test_installed_backend_is_found_without_a_suffix() -> None:
    manager, llama, ollama = make()
    assert manager.resolve("gemma3-270m")[0] is llama
    assert manager.resolve("llama3.1:8b")[0] is ollama
    manager.info("local/gemma3-270m")
    assert llama.calls == [("info", "local/gemma3-270m@llamacpp")]


def test_remove_returns_what_the_backend_removed() -> None:
    manager, llama, _ = make()
    assert manager.remove("gemma3-270m") == Removed("gemma3-270m", unfinished_bytes=None)
    assert llama.calls == [("remove", "gemma3-270m@llamacpp")]


def test_generations_are_chunk_streams_that_close() -> None:
    manager, _, _ = make()
    options = GenerationOptions(max_tokens=1)
    for stream in (
        manager.chat("gemma3-270m", [Message("user", "Hi")], options),
        manager.complete("gemma3-270m", "Hi", options),
    ):
        assert isinstance(stream, ChunkStream)
        stream.close()
        assert list(stream) == []  # a closed stream yields nothing more


def test_unknown_model_is_pulled_by_default_backend_else_ollama() -> None:
    assert make()[0].route("phi3", installed=False)[1].backend == "ollama"
    assert make("llamacpp")[0].route("phi3", installed=False)[1].backend == "llamacpp"
    with pytest.raises(ModelNotFound, match="not installed anywhere"):
        make("llamacpp")[0].resolve("phi3")


def test_a_name_in_a_catalog_goes_to_that_backend() -> None:
    manager, llama, ollama = make()  # the recorders' catalogs both offer "m"
    assert manager.route("m", installed=False)[0] is llama  # resolution order
    assert manager.resolve("m")[0] is llama  # not installed: the backend that knows it says so
    manager, llama, ollama = make("ollama")
    assert manager.route("m:latest", installed=False)[0] is ollama  # the default asked first


def test_hf_specs_go_to_llamacpp() -> None:
    manager, llama, _ = make()
    assert manager.resolve("hf:org/repo:Q4_K_M")[0] is llama
    manager.pull("hf:org/repo:Q4_K_M")
    assert llama.calls[-1] == ("pull", "hf:org/repo:Q4_K_M@llamacpp")


def test_pull_without_backend_uses_the_default() -> None:
    manager, llama, ollama = make("llamacpp")
    manager.pull("tinyllama")
    assert llama.calls[-1] == ("pull", "tinyllama@llamacpp")
    manager, llama, ollama = make()
    manager.pull("tinyllama")
    assert ollama.calls[-1] == ("pull", "tinyllama@ollama")


def test_one_backend_down_does_not_hide_the_other() -> None:
    manager, _, _ = make(ollama_down=True)
    listing = manager.list_models()
    assert [m.id for m in listing.models] == ["gemma3-270m"]
    assert listing.errors == {"ollama": "ollama is down"}
    status = manager.status()
    assert status["llamacpp"].available
    assert not status["ollama"].available
    assert status["ollama"].reason == "ollama is down"
    assert [m.id for m in manager.ps()] == ["gemma3-270m"]
    # a model that only the dead backend could have: not installed anywhere that could be
    # asked, and the dead backend says why it could not be
    with pytest.raises(ModelNotFound, match=r"not installed anywhere.*ollama: could not be asked"):
        manager.info("llama3.1:8b")


def test_naming_a_down_backend_raises() -> None:
    manager, _, _ = make(ollama_down=True)
    with pytest.raises(BackendUnavailable, match="ollama is down"):
        manager.list_models("ollama")


def test_disabled_backends() -> None:
    config = Config.from_dict({"providers": {"ollama": {"enabled": False}}})
    llama = RecordingBackend("llamacpp")
    manager = ProviderManager(config)
    manager._backends["llamacpp"] = llama  # the real one is not needed to test the flags
    assert manager.enabled() == ["llamacpp"]
    with pytest.raises(BackendUnavailable, match="disabled"):
        manager.backend("ollama")
    assert manager.status()["ollama"].reason == "disabled"
    assert manager.route("phi3", installed=False)[1].backend == "llamacpp"


def test_bad_specs_and_backends_are_clear_errors() -> None:
    manager, _, _ = make()
    with pytest.raises(InvalidModelSpec):
        manager.info("../x")
    with pytest.raises(InvalidModelSpec, match="unknown backend"):
        manager.list_models("vllm")


def test_close_closes_every_backend() -> None:
    manager, llama, ollama = make()
    manager.close()
    assert ("close", "") in llama.calls
    assert ("close", "") in ollama.calls


def test_public_api_is_exactly_all() -> None:
    exported = {name for name in dir(providers) if not name.startswith("_")}
    modules = {
        "base",
        "config",
        "errors",
        "manager",
        "spec",
        "types",
        "llamacpp",
        "ollama",
        "openai",
        "hangup",
        "options",
        "validation",
        "tls",
        "leftovers",
        "structured",
        "embedding",
    }
    assert exported - modules == set(providers.__all__)
