"""Every fault of the stand-in Ollama mapped to its llmspell error: clear, typed, never a hang."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from providers.errors import (
    BackendUnavailable,
    Cancelled,
    DownloadError,
    GenerationError,
    ModelLoadError,
    ModelNotFound,
)
from providers.ollama import OllamaBackend
from providers.spec import ModelSpec
from providers.types import Chunk, GenerationOptions, Message, Progress
from tests.isolation import closed_port_url
from tests.ollama_fixtures import gemma_runner, ollama, ollama_config, standin
from tests.ollama_standin import Fault, OllamaStandin

__all__ = ["gemma_runner", "ollama", "standin"]

SPEC = ModelSpec.parse("gemma3:270m@ollama")
PULL = ModelSpec.parse("smollm2:135m@ollama")
OPTIONS = GenerationOptions(temperature=0.0, max_tokens=8)
MESSAGES = [Message("user", "Write one sentence about the sea.")]
pytestmark = pytest.mark.timeout(60)


def _chat(backend: OllamaBackend, received: list[Chunk]) -> None:
    for chunk in backend.chat(SPEC, MESSAGES, OPTIONS):
        received.append(chunk)


# Ollama down ----------------------------------------------------------------------------------


@pytest.fixture
def down() -> Iterator[OllamaBackend]:
    backend = OllamaBackend(ollama_config(closed_port_url()))
    try:
        yield backend
    finally:
        backend.close()


def test_down_is_unavailable_naming_url_and_how_to_start(down: OllamaBackend) -> None:
    health = down.health()
    assert health.available is False
    assert health.reason is not None
    assert f"Ollama is not running at {down.base_url}" in health.reason
    assert "ollama serve" in health.reason and "OLLAMA_HOST" in health.reason

    for call in (down.list_models, down.loaded):
        with pytest.raises(BackendUnavailable, match="not running at"):
            call()
    with pytest.raises(BackendUnavailable, match="not running at"):
        down.info(SPEC)
    with pytest.raises(BackendUnavailable, match="not running at"):
        down.pull(PULL)
    with pytest.raises(BackendUnavailable, match="not running at"):
        list(down.chat(SPEC, MESSAGES, OPTIONS))


def test_has_model_is_false_and_quick_when_down(down: OllamaBackend) -> None:
    started = time.monotonic()
    assert down.has_model(SPEC) is False
    assert time.monotonic() - started < 5, "has_model waited on a dead server"


def test_a_server_that_goes_away_is_unavailable(
    ollama: OllamaBackend, standin: OllamaStandin
) -> None:
    assert ollama.list_models()
    standin.stop()
    with pytest.raises(BackendUnavailable, match="not running at"):
        ollama.list_models()
    assert ollama.health().available is False


def test_down_stays_down_with_the_same_message_then_comes_back(
    ollama: OllamaBackend, standin: OllamaStandin
) -> None:
    # After one refusal the client checks with a bare TCP connect: same error, and the
    # first request after the server is back goes through.
    port = standin.port
    standin.stop()
    reasons = [ollama.health().reason for _ in range(3)]
    assert reasons[0] is not None and "not running at" in reasons[0]
    assert reasons == [reasons[0]] * 3
    with pytest.raises(BackendUnavailable, match="not running at"):
        ollama.loaded()
    standin.start(port)
    assert ollama.health().available is True
    assert ollama.list_models()


# Slow ------------------------------------------------------------------------------------------


@pytest.fixture
def impatient(standin: OllamaStandin) -> Iterator[OllamaBackend]:
    backend = OllamaBackend(ollama_config(standin.url, timeout_seconds=0.5))
    try:
        yield backend
    finally:
        backend.close()


def test_slow_server_times_out_naming_the_timeout(
    impatient: OllamaBackend, standin: OllamaStandin
) -> None:
    standin.fault = Fault("slow", delay=5)
    with pytest.raises(BackendUnavailable, match=r"within 0\.5 s.*timeout_seconds"):
        impatient.list_models()
    health = impatient.health()
    assert health.available is False and "0.5 s" in (health.reason or "")
    assert impatient.has_model(SPEC) is False


def test_slow_generation_is_a_generation_error(
    impatient: OllamaBackend, standin: OllamaStandin
) -> None:
    standin.fault = Fault("slow", path="/api/chat", delay=5)
    with pytest.raises(GenerationError, match=r"did not answer /api/chat within 0\.5 s"):
        list(impatient.chat(SPEC, MESSAGES, OPTIONS))


def test_slow_pull_is_a_download_error(impatient: OllamaBackend, standin: OllamaStandin) -> None:
    standin.fault = Fault("slow", path="/api/pull", delay=5)
    with pytest.raises(DownloadError, match=r"did not answer /api/pull within 0\.5 s"):
        impatient.pull(PULL)


@pytest.mark.parametrize("path", ["/api/chat", "/api/generate", "/api/pull"])
def test_cancel_while_ollama_sends_nothing_hangs_up_at_once(
    ollama: OllamaBackend, standin: OllamaStandin, path: str
) -> None:
    # Ollama sends not even headers while it loads a model; the stall here is longer than the
    # test waits, and the timeout (30 s) longer still: only hanging up can end the call early.
    standin.fault = Fault("slow", path=path, delay=20)
    cancel = threading.Event()
    calls: dict[str, Callable[[], object]] = {
        "/api/chat": lambda: list(ollama.chat(SPEC, MESSAGES, OPTIONS, cancel=cancel)),
        "/api/generate": lambda: list(ollama.complete(SPEC, "Hello", OPTIONS, cancel=cancel)),
        "/api/pull": lambda: ollama.pull(PULL, cancel=cancel),
    }
    threading.Timer(0.3, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(Cancelled, match=f"Ollama's {path} was interrupted"):
        calls[path]()
    assert time.monotonic() - started < 10, "the call waited for the stalled server"
    standin.fault = None
    assert "".join(c.text for c in ollama.complete(SPEC, "Hello", OPTIONS))  # still works


# HTTP errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("/api/tags", BackendUnavailable),
        ("/api/pull", DownloadError),
        ("/api/chat", GenerationError),
        ("/api/generate", ModelLoadError),
    ],
)
def test_http_500_carries_ollamas_text(
    ollama: OllamaBackend, standin: OllamaStandin, path: str, error: type[Exception]
) -> None:
    standin.fault = Fault("error_500", path=path, message="something broke inside Ollama")
    operations = {
        "/api/tags": ollama.list_models,
        "/api/pull": lambda: ollama.pull(PULL),
        "/api/chat": lambda: list(ollama.chat(SPEC, MESSAGES, OPTIONS)),
        "/api/generate": lambda: ollama.load(SPEC),
    }
    with pytest.raises(error, match=r"Ollama: something broke inside Ollama \(HTTP 500\)"):
        operations[path]()


def test_generation_of_a_missing_model_says_pull_it_first(ollama: OllamaBackend) -> None:
    spec = ModelSpec.parse("llama3.1:8b@ollama")
    with pytest.raises(ModelNotFound, match=r"pull it first with `llmspell model pull llama3.1:8b"):
        list(ollama.chat(spec, MESSAGES, OPTIONS))
    with pytest.raises(ModelNotFound, match="pull it first"):
        list(ollama.complete(spec, "Hello", OPTIONS))
    with pytest.raises(ModelNotFound, match="pull it first"):
        ollama.load(spec)


# Broken streams: pull (no model needed) --------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "match"),
    [
        ("midstream_error", "Ollama: llama runner process has terminated"),
        ("truncated", "closed the connection in the middle of /api/pull"),
        ("incomplete", "stream ended before its final line"),
        ("malformed", "malformed line on /api/pull"),
    ],
)
def test_broken_pull_stream(
    ollama: OllamaBackend, standin: OllamaStandin, kind: str, match: str
) -> None:
    standin.fault = Fault(kind, path="/api/pull", after_lines=3)
    events: list[Progress] = []
    with pytest.raises(DownloadError, match=match):
        ollama.pull(PULL, events.append)
    assert len(events) == 3, "the good lines before the fault were not reported"
    assert "done" not in [e.phase for e in events]
    assert "smollm2:135m" not in {m.id for m in ollama.list_models()}


# Broken streams: generation with the real model -------------------------------------------------


@pytest.mark.model
@pytest.mark.parametrize(
    ("kind", "match"),
    [
        ("midstream_error", "Ollama: llama runner process has terminated"),
        ("truncated", "closed the connection in the middle of /api/chat"),
        ("incomplete", "stream ended before its final line"),
        ("malformed", "malformed line on /api/chat"),
    ],
)
def test_broken_chat_stream(
    ollama: OllamaBackend, standin: OllamaStandin, kind: str, match: str
) -> None:
    standin.fault = Fault(kind, path="/api/chat", after_lines=1)
    received: list[Chunk] = []
    with pytest.raises(GenerationError, match=match):
        _chat(ollama, received)
    assert len(received) == 1 and received[0].text and not received[0].done
    standin.fault = None
    assert ollama.health().available, "the backend did not recover from a broken stream"


@pytest.mark.model
def test_midstream_not_found_error_is_model_not_found(
    ollama: OllamaBackend, standin: OllamaStandin
) -> None:
    standin.fault = Fault(
        "midstream_error", path="/api/generate", after_lines=1, message="model 'x' not found"
    )
    with pytest.raises(ModelNotFound, match="pull it first"):
        list(ollama.complete(SPEC, "Hello", OPTIONS))
