"""The OpenAI backend's error translation and wire format (providers/openai/), in-process: the
backend reaches a handler through ``httpx.MockTransport``, so each failure is one response.

The real server (llama-cpp-python's) is in test_openai_server.py; it cannot show most of these
shapes (it serves any model name, it sends no usage, it never sends an error event).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from providers.config import Config
from providers.errors import (
    BackendUnavailable,
    Cancelled,
    GenerationError,
    InvalidRequest,
    ModelNotFound,
    UnsupportedOperation,
)
from providers.openai import OpenAIBackend
from providers.spec import ModelSpec
from providers.types import Chunk, GenerationOptions, Message
from tests.isolation import closed_port_url

URL = closed_port_url() + "/v1"
"""Nothing listens there: a request that bypassed the mock transport would be refused."""
SPEC = ModelSpec.parse("gemma3-270m@gpu")
OPTIONS = GenerationOptions(max_tokens=8)
MESSAGES = [Message("user", "Hi")]
KEY = "sk-test-9b2e77d1"
MODELS = {"object": "list", "data": [{"id": "gemma3-270m", "object": "model"}, {"id": "other"}]}
pytestmark = pytest.mark.timeout(60)

Handler = Callable[[httpx.Request], httpx.Response]


def sse(*events: object, done: bool = True) -> bytes:
    body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    return body + (b"data: [DONE]\n\n" if done else b"")


def stream_of(body: bytes) -> httpx.Response:
    return httpx.Response(200, content=body, headers={"Content-Type": "text/event-stream"})


def piece(text: str, reason: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": reason}]}


def text_piece(text: str, reason: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "text": text, "finish_reason": reason}]}


CHAT = sse(piece("Hel"), piece("lo"), piece("", "stop"))


class Dropped(httpx.SyncByteStream):
    """A body that sends ``body``, then fails as a connection closed by the server would."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def __iter__(self) -> Iterator[bytes]:
        yield self.body
        raise httpx.RemoteProtocolError("peer closed connection without sending complete body")


def server(routes: dict[str, Callable[[httpx.Request], httpx.Response]]) -> Handler:
    """A server answering ``/v1/models`` with MODELS unless ``routes`` (by path) says else."""

    def handle(request: httpx.Request) -> httpx.Response:
        route = routes.get(request.url.path)
        if route is not None:
            return route(request)
        if request.url.path == "/v1/models":
            return httpx.Response(200, json=MODELS)
        return httpx.Response(404, json={"detail": "Not Found"})

    return handle


def error(status: int, body: object) -> Callable[[httpx.Request], httpx.Response]:
    return lambda _: httpx.Response(status, json=body)


Make = Callable[..., OpenAIBackend]


@pytest.fixture
def serve() -> Iterator[Make]:
    """``serve(handler, **settings)``: an OpenAIBackend named ``gpu`` reaching ``handler``."""
    made: list[OpenAIBackend] = []

    def make(handler: Handler, **settings: Any) -> OpenAIBackend:
        config = Config.from_dict(
            {"providers": {"gpu": {"type": "openai", "base_url": URL, **settings}}}
        )
        endpoint = config.endpoints["gpu"]
        made.append(OpenAIBackend("gpu", endpoint, transport=httpx.MockTransport(handler)))  # type: ignore[arg-type]
        return made[-1]

    yield make
    for backend in made:
        backend.close()


def chat(backend: OpenAIBackend, received: list[Chunk] | None = None) -> list[Chunk]:
    chunks = received if received is not None else []
    for chunk in backend.chat(SPEC, MESSAGES, OPTIONS):
        chunks.append(chunk)
    return chunks


# Connections ---------------------------------------------------------------------------------


def test_refused_connection_is_unavailable_naming_the_url(serve: Make) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    backend = serve(refuse)
    health = backend.health()
    assert not health.available
    assert f"gpu at {URL} cannot be reached" in (health.reason or "")
    assert health.details["url"] == URL
    with pytest.raises(BackendUnavailable, match=f"gpu at {URL} cannot be reached"):
        backend.list_models()
    with pytest.raises(BackendUnavailable, match="Connection refused"):
        chat(backend)
    assert backend.has_model(SPEC) is False


def test_dns_failure_and_connect_timeout_are_unavailable(serve: Make) -> None:
    def unknown_host(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno -2] Name or service not known", request=request)

    def stall(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("timed out", request=request)

    with pytest.raises(BackendUnavailable, match="Name or service not known"):
        serve(unknown_host).list_models()
    with pytest.raises(BackendUnavailable, match=r"did not accept a connection within 5 s"):
        serve(stall).list_models()


def test_read_timeouts_name_timeout_seconds(serve: Make) -> None:
    def stall(path: str) -> Handler:
        def handle(request: httpx.Request) -> httpx.Response:
            if request.url.path == path:
                raise httpx.ReadTimeout("timed out", request=request)
            return server({})(request)

        return handle

    with pytest.raises(
        BackendUnavailable, match=r"did not answer models within 5 s.*providers\.gpu\.timeout"
    ):
        serve(stall("/v1/models"), timeout_seconds=5).list_models()
    with pytest.raises(BackendUnavailable, match=r"did not answer models within 10 s \(the bound"):
        serve(stall("/v1/models"), timeout_seconds=300).list_models()
    with pytest.raises(GenerationError, match=r"did not answer chat/completions within 120 s"):
        chat(serve(stall("/v1/chat/completions")))


def test_listings_wait_less_than_generations(serve: Make) -> None:
    waits: dict[str, float] = {}

    def handle(request: httpx.Request) -> httpx.Response:
        waits[request.url.path] = request.extensions["timeout"]["read"]
        return server({"/v1/chat/completions": lambda _: stream_of(CHAT)})(request)

    backend = serve(handle, timeout_seconds=300)
    chat(backend)
    backend.health()
    assert waits == {"/v1/models": 10.0, "/v1/chat/completions": 300.0}
    backend.has_model(SPEC)
    assert waits["/v1/models"] == 2.0


# Keys ----------------------------------------------------------------------------------------


def test_the_key_is_sent_as_a_bearer_token(serve: Make, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPU_API_KEY", KEY)
    seen: list[str | None] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("Authorization"))
        return server({"/v1/chat/completions": lambda _: stream_of(CHAT)})(request)

    backend = serve(handle, api_key_env="GPU_API_KEY")
    assert "".join(c.text for c in chat(backend)) == "Hello"
    assert seen and set(seen) == {f"Bearer {KEY}"}
    assert backend.health().details["api_key_set"] is True
    assert KEY not in repr(backend.health().to_dict())


def test_401_names_api_key_env_or_says_none_is_set(
    serve: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    refused = server({"/v1/models": error(401, {"detail": "Invalid API key"})})
    with pytest.raises(BackendUnavailable, match=r"set api_key_env in \[providers\.gpu\]"):
        serve(refused).list_models()
    monkeypatch.delenv("GPU_API_KEY", raising=False)
    with pytest.raises(
        BackendUnavailable, match=r"HTTP 401: Invalid API key.*GPU_API_KEY .* is not set"
    ):
        serve(refused, api_key_env="GPU_API_KEY").list_models()
    monkeypatch.setenv("GPU_API_KEY", KEY)
    forbidden = server({"/v1/models": error(403, {"error": {"message": "forbidden"}})})
    with pytest.raises(BackendUnavailable, match=r"HTTP 403: forbidden.*check the API key in GPU"):
        serve(forbidden, api_key_env="GPU_API_KEY").list_models()


def test_the_key_never_shows_even_when_the_server_echoes_it(
    serve: Make, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("GPU_API_KEY", KEY)
    echo = {"error": {"message": f"Incorrect API key provided: {KEY}", "code": "invalid_api_key"}}
    routes = {
        "/v1/models": error(401, echo),
        "/v1/chat/completions": error(500, echo),
    }
    caplog.set_level(logging.DEBUG)
    backend = serve(server(routes), api_key_env="GPU_API_KEY")
    messages = []
    for call in (backend.list_models, backend.health, lambda: chat(backend)):
        try:
            outcome = call()
        except Exception as exc:
            messages.append(str(exc))
            messages.append(repr(exc.__dict__))
        else:
            messages.append(repr(outcome))
    assert any("Incorrect API key provided: ***" in m for m in messages), messages
    assert all(KEY not in m for m in messages), messages
    assert KEY not in caplog.text


# HTTP errors ----------------------------------------------------------------------------------


def test_a_model_the_server_does_not_list_is_not_found_before_any_generation(
    serve: Make,
) -> None:
    paths: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        return server({"/v1/completions": lambda _: stream_of(sse(text_piece("x", "stop")))})(
            request
        )

    backend = serve(handle)
    missing = ModelSpec.parse("llama3.1-70b@gpu")
    with pytest.raises(
        ModelNotFound, match=r"'llama3.1-70b' is not served by gpu.*gemma3-270m, other"
    ):
        list(backend.complete(missing, "Hi", OPTIONS))
    with pytest.raises(ModelNotFound, match="it serves gemma3-270m, other"):
        backend.info(missing)
    assert "/v1/completions" not in paths


def test_404_on_generation_is_model_not_found_listing_the_models(serve: Make) -> None:
    vllm = {"object": "error", "message": "The model `gemma3-270m` does not exist.", "code": 404}
    backend = serve(server({"/v1/chat/completions": error(404, vllm)}))
    with pytest.raises(ModelNotFound, match=r"does not exist\.\): it serves gemma3-270m, other$"):
        chat(backend)


def test_model_not_found_codes_and_texts(serve: Make) -> None:
    openai = {"error": {"message": "nope", "code": "model_not_found"}}
    with pytest.raises(ModelNotFound, match="HTTP 400: nope"):
        chat(serve(server({"/v1/chat/completions": error(400, openai)})))
    lm_studio = {"error": "Model not found: gemma3-270m"}
    with pytest.raises(ModelNotFound):
        chat(serve(server({"/v1/chat/completions": error(400, lm_studio)})))


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (
            {"error": {"message": "CUDA out of memory", "type": "server_error"}},
            "CUDA out of memory",
        ),
        ({"detail": "Internal failure"}, "Internal failure"),
        ({"error": "plain string error"}, "plain string error"),
    ],
)
def test_5xx_is_a_generation_error_with_the_servers_message(
    serve: Make, body: object, text: str
) -> None:
    backend = serve(server({"/v1/chat/completions": error(500, body)}))
    with pytest.raises(
        GenerationError, match=rf"^gpu at {URL} failed chat/completions \(HTTP 500: {text}\)$"
    ):
        chat(backend)


def test_an_error_body_that_is_not_json_is_quoted(serve: Make) -> None:
    gateway = server({"/v1/models": lambda _: httpx.Response(502, text="Bad Gateway\n")})
    with pytest.raises(BackendUnavailable, match=r"failed models \(HTTP 502: Bad Gateway\)$"):
        serve(gateway).list_models()


def test_a_listing_that_is_not_json_is_an_error(serve: Make) -> None:
    html = server({"/v1/models": lambda _: httpx.Response(200, text="<html>hi</html>")})
    with pytest.raises(BackendUnavailable, match="sent a body on models that is not JSON"):
        serve(html).list_models()


# Streams -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (
            b'event: error\ndata: {"message": "engine died"}\n\n',
            "error in the chat/completions stream: engine died",
        ),
        (
            sse({"error": {"message": "KV cache full"}}, done=False),
            "error in the chat/completions stream: KV cache full",
        ),
        (b"data: {not json\n\n", r"malformed event on chat/completions \(not JSON"),
        (b"data: [1, 2]\n\n", r"a JSON list, not an object"),
        (b"", r"ended the chat/completions stream before its end \(no \[DONE\]\)"),
    ],
    ids=["error event", "error data", "not json", "not an object", "cut short"],
)
def test_a_broken_stream_is_a_generation_error_after_the_text_before_it(
    serve: Make, body: bytes, match: str
) -> None:
    start = sse(piece("Hel"), done=False)
    backend = serve(server({"/v1/chat/completions": lambda _: stream_of(start + body)}))
    received: list[Chunk] = []
    with pytest.raises(GenerationError, match=match):
        chat(backend, received)
    assert [c.text for c in received] == ["Hel"]


def test_a_dropped_connection_is_a_generation_error(serve: Make) -> None:
    dropped = lambda _: httpx.Response(  # noqa: E731
        200,
        stream=Dropped(sse(piece("Hel"), done=False)),
        headers={"Content-Type": "text/event-stream"},
    )
    with pytest.raises(GenerationError, match="closed the connection in the middle of chat"):
        chat(serve(server({"/v1/chat/completions": dropped})))


def test_an_answer_that_is_not_an_event_stream_is_a_generation_error(serve: Make) -> None:
    html = lambda _: httpx.Response(200, text="<html>proxy login</html>")  # noqa: E731
    with pytest.raises(GenerationError, match="did not answer chat/completions with an event"):
        chat(serve(server({"/v1/chat/completions": html})))


def test_a_finished_choice_without_done_is_complete(serve: Make) -> None:
    body = sse(piece("Hi"), piece("", "length"), done=False)
    chunks = chat(serve(server({"/v1/chat/completions": lambda _: stream_of(body)})))
    assert chunks[-1].done and chunks[-1].metrics is not None
    assert chunks[-1].metrics.stop_reason == "length"


def test_comments_and_empty_events_are_skipped(serve: Make) -> None:
    body = b": ping\n\n" + sse(piece("A"), done=False) + b"data:\n\n" + sse(piece("B", "stop"))
    chunks = chat(serve(server({"/v1/chat/completions": lambda _: stream_of(body)})))
    assert "".join(c.text for c in chunks) == "AB"


def test_a_cancel_that_breaks_the_stream_is_cancelled(serve: Make) -> None:
    cancel = threading.Event()
    dropped = lambda _: httpx.Response(  # noqa: E731
        200,
        stream=Dropped(sse(piece("Hel"), done=False)),
        headers={"Content-Type": "text/event-stream"},
    )
    backend = serve(server({"/v1/chat/completions": dropped}))
    stream = backend.chat(SPEC, MESSAGES, OPTIONS, cancel=cancel)
    assert next(stream).text == "Hel"
    cancel.set()
    with pytest.raises(Cancelled, match="gpu's chat/completions was interrupted"):
        next(stream)


# The wire format ------------------------------------------------------------------------------


def test_options_are_mapped_and_usage_is_asked_for(serve: Make) -> None:
    bodies: list[dict[str, Any]] = []

    def record(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return stream_of(sse(text_piece("x", "stop")))

    backend = serve(server({"/v1/completions": record}))
    options = GenerationOptions(
        max_tokens=5, temperature=0.0, top_p=0.5, top_k=7, min_p=0.1, repeat_penalty=1.1,
        seed=42, stop=("\n",), num_ctx=4096, frequency_penalty=0.5, presence_penalty=-0.5,
    )  # fmt: skip
    list(backend.complete(SPEC, "Once", options))
    assert bodies == [
        {
            "model": "gemma3-270m",
            "prompt": "Once",
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": 5,
            "temperature": 0.0,
            "top_p": 0.5,
            "top_k": 7,
            "min_p": 0.1,
            "repeat_penalty": 1.1,
            "repetition_penalty": 1.1,
            "frequency_penalty": 0.5,
            "presence_penalty": -0.5,
            "seed": 42,
            "stop": ["\n"],
        }
    ]


def test_a_server_refusing_stream_options_is_asked_again_without(serve: Make) -> None:
    bodies: list[dict[str, Any]] = []

    def picky(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append(body)
        if "stream_options" in body:
            return httpx.Response(422, json={"detail": "extra field: stream_options"})
        return stream_of(CHAT)

    backend = serve(server({"/v1/chat/completions": picky}))
    assert "".join(c.text for c in chat(backend)) == "Hello"
    assert "".join(c.text for c in chat(backend)) == "Hello"
    assert ["stream_options" in b for b in bodies] == [True, False, False]


def test_metrics_from_usage_or_counted(serve: Make) -> None:
    usage = {"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 3}}
    with_usage = sse(piece("a"), piece("b"), piece("c", "length"), usage)
    final = chat(serve(server({"/v1/chat/completions": lambda _: stream_of(with_usage)})))[-1]
    assert final.metrics is not None
    assert (final.metrics.prompt_tokens, final.metrics.generated_tokens) == (11, 3)
    assert final.metrics.stop_reason == "length"
    assert final.metrics.time_to_first_token is not None

    counted = chat(serve(server({"/v1/chat/completions": lambda _: stream_of(CHAT)})))[-1]
    assert counted.metrics is not None
    assert (counted.metrics.prompt_tokens, counted.metrics.generated_tokens) == (0, 2)
    assert counted.metrics.stop_reason == "stop"


def test_info_carries_what_the_server_says(serve: Make) -> None:
    vllm = {
        "data": [
            {"id": "gemma3-270m", "object": "model", "max_model_len": 8192, "owned_by": "vllm"}
        ]
    }
    info = serve(server({"/v1/models": lambda _: httpx.Response(200, json=vllm)})).info(SPEC)
    assert (info.id, info.backend, info.context_length) == ("gemma3-270m", "gpu", 8192)
    assert info.details["owned_by"] == "vllm" and info.details["url"] == URL

    props = {"default_generation_settings": {"n_ctx": 4096}}
    llama = serve(server({"/props": lambda _: httpx.Response(200, json=props)})).info(SPEC)
    assert llama.context_length == 4096


def test_what_the_server_manages_itself_is_unsupported(serve: Make, tmp_path: Any) -> None:
    backend = serve(server({}))
    for call in (
        lambda: backend.pull(SPEC),
        lambda: backend.remove(SPEC),
        lambda: backend.load(SPEC),
        lambda: backend.unload(SPEC),
        lambda: backend.import_model(tmp_path / "x.gguf"),
    ):
        with pytest.raises(UnsupportedOperation, match="it manages its own models"):
            call()
    assert backend.loaded() == []
    assert backend.available() == []
    with pytest.raises(InvalidRequest):
        backend.chat(SPEC, [], OPTIONS)
