"""Ollama's error translation (providers/ollama/client.py), in-process: the backend reaches a
handler through ``httpx.MockTransport`` instead of a server, so each failure is one response.

A mock transport has no socket to hang up on (see the client's module docs): the hang-up of a
cancelled stream is checked here with a real transport against a socket that never answers,
and in test_ollama_faults.py against the stand-in.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from providers.config import Config
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

URL = closed_port_url()
"""Nothing listens there: a request that bypassed the mock transport would be refused."""
SPEC = ModelSpec.parse("gemma3:270m@ollama")
PULL = ModelSpec.parse("smollm2:135m@ollama")
OPTIONS = GenerationOptions(max_tokens=8)
MESSAGES = [Message("user", "Hi")]
pytestmark = pytest.mark.timeout(60)

Handler = Callable[[httpx.Request], httpx.Response]
Make = Callable[[Handler], OllamaBackend]

CHAT_PIECE = {"message": {"role": "assistant", "content": "Hello"}, "done": False}
PULL_LINE = {"status": "pulling abc", "digest": "sha256:abc", "total": 100, "completed": 10}


def ndjson(*lines: object) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def stream_of(body: bytes) -> httpx.Response:
    return httpx.Response(200, content=body, headers={"Content-Type": "application/x-ndjson"})


class Dropped(httpx.SyncByteStream):
    """A body that sends ``body``, then fails as a connection closed by the server would."""

    def __init__(self, body: bytes, error: Exception | None = None) -> None:
        self.body = body
        self.error = error or httpx.RemoteProtocolError("peer closed connection")

    def __iter__(self) -> Iterator[bytes]:
        yield self.body
        raise self.error


def only(path: str, response: Callable[[], httpx.Response]) -> Handler:
    """A server that answers ``path`` with ``response()`` and every other path with ``{}``."""

    def handle(request: httpx.Request) -> httpx.Response:
        return response() if request.url.path == path else httpx.Response(200, json={})

    return handle


def error(status: int, message: str) -> Callable[[], httpx.Response]:
    return lambda: httpx.Response(status, json={"error": message})


@pytest.fixture
def serve() -> Iterator[Make]:
    """``serve(handler)``: an OllamaBackend whose requests all go to ``handler``."""
    made: list[OllamaBackend] = []

    def make(handler: Handler) -> OllamaBackend:
        config = Config.from_dict({"providers": {"ollama": {"base_url": URL}}})
        made.append(OllamaBackend(config, transport=httpx.MockTransport(handler)))
        return made[-1]

    yield make
    for backend in made:
        backend.close()


def chat(backend: OllamaBackend, received: list[Chunk] | None = None) -> None:
    for chunk in backend.chat(SPEC, MESSAGES, OPTIONS):
        if received is not None:
            received.append(chunk)


# Connections ---------------------------------------------------------------------------------


def test_refused_connection_is_unavailable_naming_the_url(serve: Make) -> None:
    calls: list[str] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    backend = serve(refuse)
    reason = backend.health().reason or ""
    assert f"Ollama is not running at {URL}" in reason and "ollama serve" in reason
    with pytest.raises(BackendUnavailable, match=f"not running at {URL}"):
        backend.list_models()
    with pytest.raises(BackendUnavailable, match=f"not running at {URL}"):
        chat(backend)
    with pytest.raises(BackendUnavailable, match=f"not running at {URL}"):
        backend.pull(PULL)
    # Every request went to the transport: no bare TCP check of a host it stands in for.
    assert calls == ["/api/version", "/api/tags", "/api/chat", "/api/pull"]


def test_connect_timeout_is_unavailable(serve: Make) -> None:
    def stall(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("timed out", request=request)

    with pytest.raises(BackendUnavailable, match=r"did not accept a connection within 5 s"):
        serve(stall).list_models()


@pytest.mark.parametrize(
    ("path", "failure"),
    [
        ("/api/tags", BackendUnavailable),
        ("/api/chat", GenerationError),
        ("/api/pull", DownloadError),
    ],
)
def test_read_timeout_is_the_operations_failure(
    serve: Make, path: str, failure: type[Exception]
) -> None:
    def stall(request: httpx.Request) -> httpx.Response:
        if request.url.path == path:
            raise httpx.ReadTimeout("timed out", request=request)
        return httpx.Response(200, json={})

    backend = serve(stall)
    calls: dict[str, Callable[[], object]] = {
        "/api/tags": backend.list_models,
        "/api/chat": lambda: chat(backend),
        "/api/pull": lambda: backend.pull(PULL),
    }
    with pytest.raises(failure, match=rf"did not answer {path} within 120 s.*timeout_seconds"):
        calls[path]()


def test_a_get_is_sent_again_once_on_a_stale_connection(serve: Make) -> None:
    calls: list[str] = []

    def stale_once(request: httpx.Request) -> httpx.Response:
        calls.append(f"{request.method} {request.url.path}")
        if len(calls) == 1:
            raise httpx.RemoteProtocolError("Server disconnected", request=request)
        return httpx.Response(200, json={"models": []})

    assert serve(stale_once).list_models() == []
    assert calls[:2] == ["GET /api/tags", "GET /api/tags"]

    calls.clear()
    with pytest.raises(
        BackendUnavailable, match="closed the connection in the middle of /api/show"
    ):
        serve(stale_once).info(SPEC)  # a POST is not sent twice
    assert calls == ["POST /api/show"]


# HTTP errors ----------------------------------------------------------------------------------


def test_404_is_model_not_found(serve: Make) -> None:
    def missing(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"error": "model 'gemma3:270m' not found"})

    backend = serve(missing)
    with pytest.raises(ModelNotFound, match=r"pull it first with `llmspell model pull gemma3:270m"):
        backend.info(SPEC)
    with pytest.raises(ModelNotFound, match="pull it first"):
        chat(backend)
    with pytest.raises(ModelNotFound, match="pull it first"):
        backend.load(SPEC)
    with pytest.raises(ModelNotFound, match=f"not installed in the Ollama at {URL}: nothing"):
        backend.remove(SPEC)


@pytest.mark.parametrize(
    ("path", "failure"),
    [
        ("/api/tags", BackendUnavailable),
        ("/api/pull", DownloadError),
        ("/api/chat", GenerationError),
        ("/api/generate", ModelLoadError),
    ],
)
def test_500_carries_the_servers_message(serve: Make, path: str, failure: type[Exception]) -> None:
    backend = serve(only(path, error(500, "something broke inside Ollama")))
    calls: dict[str, Callable[[], object]] = {
        "/api/tags": backend.list_models,
        "/api/pull": lambda: backend.pull(PULL),
        "/api/chat": lambda: chat(backend),
        "/api/generate": lambda: backend.load(SPEC),
    }
    with pytest.raises(failure, match=r"^Ollama: something broke inside Ollama \(HTTP 500\)$"):
        calls[path]()


def test_an_error_text_saying_not_found_is_model_not_found(serve: Make) -> None:
    backend = serve(only("/api/pull", error(500, "pull model manifest: file does not exist")))
    with pytest.raises(
        ModelNotFound, match=r"not in the Ollama library.*\(Ollama: pull model manifest"
    ) as raised:
        backend.pull(PULL)
    assert "llmspell model pull" not in raised.value.message  # never the command that failed


def test_499_is_cancelled_and_503_busy(serve: Make) -> None:
    with pytest.raises(Cancelled, match="Ollama cancelled the request: client gone"):
        chat(serve(only("/api/chat", error(499, "client gone"))))
    with pytest.raises(BackendUnavailable, match=rf"Ollama at {URL} is busy \(HTTP 503\): full"):
        chat(serve(only("/api/chat", error(503, "full"))))


def test_an_error_body_that_is_not_json_is_quoted(serve: Make) -> None:
    backend = serve(only("/api/tags", lambda: httpx.Response(502, text="Bad Gateway\n")))
    with pytest.raises(BackendUnavailable, match=r"^Ollama: Bad Gateway \(HTTP 502\)$"):
        backend.list_models()


# Broken streams -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "match"),
    [
        (b"{not json", r"malformed line on /api/chat \(not JSON: .*\): '\{not json'"),
        (b"[1, 2]", r"malformed line on /api/chat \(a JSON list, not an object\)"),
    ],
)
def test_a_malformed_chat_line_is_a_generation_error(serve: Make, line: bytes, match: str) -> None:
    backend = serve(only("/api/chat", lambda: stream_of(ndjson(CHAT_PIECE) + line + b"\n")))
    received: list[Chunk] = []
    with pytest.raises(GenerationError, match=match):
        chat(backend, received)
    assert [c.text for c in received] == ["Hello"]  # the good line before it arrived


def test_a_malformed_pull_line_is_a_download_error(serve: Make) -> None:
    backend = serve(only("/api/pull", lambda: stream_of(ndjson(PULL_LINE) + b"oops\n")))
    events: list[Progress] = []
    with pytest.raises(DownloadError, match="malformed line on /api/pull"):
        backend.pull(PULL, events.append)
    assert len(events) == 1


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (lambda: stream_of(ndjson(CHAT_PIECE)), "stream ended before its final line"),
        (
            lambda: httpx.Response(200, stream=Dropped(ndjson(CHAT_PIECE))),
            "closed the connection in the middle of /api/chat: peer closed connection",
        ),
        (
            lambda: stream_of(ndjson(CHAT_PIECE, {"error": "llama runner process has terminated"})),
            r"^Ollama: llama runner process has terminated$",
        ),
    ],
    ids=["incomplete", "dropped", "error line"],
)
def test_a_chat_stream_broken_after_a_line(
    serve: Make, body: Callable[[], httpx.Response], match: str
) -> None:
    received: list[Chunk] = []
    with pytest.raises(GenerationError, match=match):
        chat(serve(only("/api/chat", body)), received)
    assert [(c.text, c.done) for c in received] == [("Hello", False)]


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (lambda: stream_of(ndjson(PULL_LINE)), "stream ended before its final line"),
        (
            lambda: httpx.Response(
                200, stream=Dropped(ndjson(PULL_LINE), httpx.ReadError("reset"))
            ),
            "closed the connection in the middle of /api/pull: reset",
        ),
    ],
    ids=["incomplete", "dropped"],
)
def test_a_pull_stream_broken_after_a_line(
    serve: Make, body: Callable[[], httpx.Response], match: str
) -> None:
    events: list[Progress] = []
    with pytest.raises(DownloadError, match=match):
        serve(only("/api/pull", body)).pull(PULL, events.append)
    assert "done" not in [e.phase for e in events] and len(events) == 1


def test_a_not_found_error_line_is_model_not_found(serve: Make) -> None:
    body = ndjson(CHAT_PIECE, {"error": "model 'gemma3:270m' not found"})
    with pytest.raises(ModelNotFound, match="pull it first"):
        chat(serve(only("/api/chat", lambda: stream_of(body))))


def test_a_stream_that_fails_after_a_cancel_is_cancelled(serve: Make) -> None:
    # We hung up: the broken or short stream that follows is not the server's fault.
    for response in (
        lambda: httpx.Response(200, stream=Dropped(ndjson(CHAT_PIECE), httpx.ReadError("shut"))),
        lambda: stream_of(ndjson(CHAT_PIECE)),
    ):
        cancel = threading.Event()
        stream = serve(only("/api/chat", response)).chat(SPEC, MESSAGES, OPTIONS, cancel=cancel)
        assert next(stream).text == "Hello"
        cancel.set()
        with pytest.raises(Cancelled, match="the request to Ollama's /api/chat was interrupted"):
            next(stream)


# A real transport keeps the hang-up --------------------------------------------------------------


class SilentServer:
    """Accepts connections on 127.0.0.1 and never answers (Ollama loading a big model)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.accepted.append(conn)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()
        for conn in self.accepted:
            conn.close()


class RecordingTransport(httpx.HTTPTransport):
    """httpx's own network transport, noting the path of each request it sends."""

    def __init__(self) -> None:
        super().__init__()
        self.paths: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        return super().handle_request(request)


def test_a_real_transport_keeps_the_hang_up_of_a_cancelled_stream() -> None:
    server = SilentServer()
    config = Config.from_dict({"providers": {"ollama": {"base_url": server.url}}})
    transport = RecordingTransport()
    backend = OllamaBackend(config, transport=transport)
    cancel = threading.Event()
    timer = threading.Timer(0.3, cancel.set)
    try:
        timer.start()
        started = time.monotonic()
        with pytest.raises(Cancelled, match="Ollama's /api/chat was interrupted"):
            list(backend.chat(SPEC, MESSAGES, OPTIONS, cancel=cancel))
        assert time.monotonic() - started < 10, "the stream waited for the silent server"
        assert transport.paths == ["/api/chat"]
    finally:
        timer.cancel()
        backend.close()
        server.close()
