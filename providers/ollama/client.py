"""The one boundary between llmspell and Ollama's HTTP API.

Every httpx exception and every error Ollama reports (an ``{"error": ...}`` body with a 4xx/5xx
status, or an ``error`` line in the middle of a 200 NDJSON stream) becomes an llmspell error
here, with ``raise ... from exc``:

- connection refused / DNS failure  → :class:`BackendUnavailable` naming the URL and how to start
  Ollama;
- a timeout                         → the operation's failure type naming the timeout (for
  requests that are not pulls or generations: :class:`BackendUnavailable`);
- HTTP 404                          → :class:`ModelNotFound` ("pull it first");
- HTTP 499                          → :class:`Cancelled`; 503 → :class:`BackendUnavailable`;
- other 4xx/5xx and ``error`` lines → the operation's failure type with Ollama's text
  (``ModelNotFound`` when the text says the model does not exist);
- a line that is not a JSON object, or a stream that ends before its final line (or whose
  connection drops) → the operation's failure type saying so.

The HTTP transport is a seam: ``OllamaClient(..., transport=httpx.MockTransport(handler))``
checks all of the above in-process (``tests/test_ollama_mock_transport.py``). What a mock
transport cannot show is the hang-up of a cancelled stream: :class:`~providers.hangup.HangUp`
shuts down the stream's socket, which it learns from httpcore (its ``trace`` extension, or the
response's ``network_stream``), and an in-memory response has none; there a cancel is noticed
only when the response fails or ends. A real transport (``httpx.HTTPTransport``) keeps the
hang-up; that is tested against a silent socket and the Ollama stand-in.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from ..errors import (
    BackendUnavailable,
    Cancelled,
    ConfigError,
    LLMSpellError,
    ModelNotFound,
)
from ..hangup import HangUp
from ..tls import verify_for

BACKEND = "ollama"
CONNECT_TIMEOUT_SECONDS = 5.0
"""Upper bound on opening a connection; a refused connection fails at once anyway."""
START_HINT = "start it with `ollama serve` (or set OLLAMA_HOST / providers.ollama.base_url)"


def start_hint(backend: str) -> str:
    """How to make the Ollama of endpoint ``backend`` reachable."""
    if backend == BACKEND:
        return START_HINT
    return f"start it with `ollama serve` there (or fix providers.{backend}.base_url)"


Json = dict[str, Any]
ErrorType = type[LLMSpellError]

# Texts Ollama uses when a model does not exist locally ("model 'x' not found") or in the
# registry ("pull model manifest: file does not exist"). Other "pull model manifest: ..." errors
# are network failures, not missing models.
_NOT_FOUND_MARKERS = ("not found", "file does not exist")


def not_found_message(model: str, backend: str = BACKEND) -> str:
    return f"model '{model}' not found: pull it first with `llmspell model pull {model}@{backend}`"


class OllamaClient:
    """A thread-safe JSON/NDJSON client for one Ollama server (an ``httpx.Client`` for plain
    requests, another for streams)."""

    def __init__(
        self,
        base_url: str,
        timeout_seconds: float,
        *,
        backend: str = BACKEND,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """``backend`` is the endpoint's name, for the errors (``ollama``, or a named endpoint
        of type ollama).

        ``transport`` replaces httpx's own (a mock, in tests) for every request. Then the
        transport's own connection limits apply (streams then may share pooled connections,
        and a stream on a reused one can be hung up only once its headers are in), and the
        bare TCP connect that checks a server found down is skipped (it would bypass the
        transport)."""
        self.base_url = base_url
        self.timeout_seconds = timeout_seconds
        self.backend = backend
        timeout = httpx.Timeout(
            timeout_seconds, connect=min(timeout_seconds, CONNECT_TIMEOUT_SECONDS)
        )
        try:
            self._http = httpx.Client(
                base_url=base_url,
                timeout=timeout,
                trust_env=False,
                verify=verify_for(base_url),
                transport=transport,
            )
            # Streams (generations, pulls) each open their own connection, so that a hang-up
            # can reach its socket before Ollama sends the headers (see providers.hangup).
            self._streams = httpx.Client(
                base_url=base_url,
                timeout=timeout,
                trust_env=False,
                verify=verify_for(base_url),
                limits=httpx.Limits(max_keepalive_connections=0),
                transport=transport,
            )
        except (httpx.InvalidURL, ValueError) as exc:
            raise ConfigError(
                f"invalid Ollama URL {base_url!r}: {exc}", key=f"providers.{backend}.base_url"
            ) from exc
        url = self._http.base_url
        self._address = (url.host, url.port or (443 if url.scheme == "https" else 80))
        self._refused = False  # the last connection attempt was refused
        self._probe = transport is None  # see _check_listening

    def close(self) -> None:
        self._http.close()
        self._streams.close()

    # Plain requests ---------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: Json | None = None,
        *,
        model: str | None = None,
        failure: ErrorType = BackendUnavailable,
        timeout: float | None = None,
    ) -> Json:
        """Send one request and return its JSON object body (``{}`` for an empty body)."""
        extra: dict[str, Any] = {}
        if timeout is not None:
            extra["timeout"] = httpx.Timeout(timeout)
        with self._translated(path, model, failure):
            try:
                response = self._http.request(method, path, json=body, **extra)
            except httpx.RemoteProtocolError:
                # A pooled keep-alive connection the server had just closed: a GET is safe to
                # send again, once, on a fresh connection.
                if method != "GET":
                    raise
                response = self._http.request(method, path, json=body, **extra)
        if response.is_error:
            raise self._status_error(response.status_code, response.text, model, failure)
        if not response.content.strip():
            return {}
        return parse_line(
            response.text, path=path, model=model, failure=failure, backend=self.backend
        )

    # Streams ------------------------------------------------------------------------------------

    def stream(
        self,
        path: str,
        body: Json,
        *,
        model: str | None,
        failure: ErrorType,
        is_final: Callable[[Json], bool],
        cancel: threading.Event | None = None,
    ) -> Generator[Json, None, None]:
        """POST ``body`` and yield each NDJSON line as a dict, up to and including the final one.

        Closing the returned generator closes the HTTP response (that cancels the request on
        Ollama's side). A stream that ends before a line satisfying ``is_final`` is an error.
        Setting ``cancel`` hangs up at once, even while Ollama sends nothing (it may be loading
        a model for a minute), and raises :class:`Cancelled`.
        """
        with self._translated(path, model, failure, cancel), HangUp(cancel) as hang_up:
            with self._streams.stream(
                "POST", path, json=body, extensions=hang_up.extensions
            ) as response:
                hang_up.attach(response)
                if response.is_error:
                    response.read()
                    raise self._status_error(response.status_code, response.text, model, failure)
                for raw in response.iter_lines():
                    if not raw.strip():
                        continue
                    line = parse_line(
                        raw, path=path, model=model, failure=failure, backend=self.backend
                    )
                    if "error" in line:
                        raise classify(str(line["error"]), model, failure, self.backend)
                    yield line
                    if is_final(line):
                        return
        if cancel is not None and cancel.is_set():
            raise Cancelled(
                f"the request to Ollama's {path} was interrupted",
                model=model,
                backend=self.backend,
            )
        raise failure(
            f"Ollama's {path} stream ended before its final line"
            " (the server stopped answering mid-stream)",
            model=model,
            backend=self.backend,
        )

    # Error translation ------------------------------------------------------------------------

    @contextmanager
    def _translated(
        self,
        path: str,
        model: str | None,
        failure: ErrorType,
        cancel: threading.Event | None = None,
    ) -> Iterator[None]:
        self._check_listening(model)
        try:
            yield
        except httpx.HTTPError as exc:
            if cancel is not None and cancel.is_set():  # we hung up: not the server's fault
                raise Cancelled(
                    f"the request to Ollama's {path} was interrupted",
                    model=model,
                    backend=self.backend,
                ) from exc
            if isinstance(exc, httpx.ConnectError) and self._probe:
                self._refused = True
            raise translate_http_error(exc, self, path, model, failure) from exc

    def _check_listening(self, model: str | None) -> None:
        """While Ollama is down, every request is refused again: a bare TCP connect finds that
        out in a fraction of what a refused httpx request costs (``list`` and ``status`` ask
        every backend, and a kernel answers them many times)."""
        if not self._refused:
            return
        try:
            socket.create_connection(self._address, timeout=CONNECT_TIMEOUT_SECONDS).close()
        except ConnectionRefusedError as exc:
            raise BackendUnavailable(
                f"Ollama is not running at {self.base_url}: {start_hint(self.backend)} ({exc})",
                model=model,
                backend=self.backend,
            ) from exc
        except OSError:
            return  # not a plain refusal: httpx tries and reports it
        self._refused = False

    def _status_error(
        self, status: int, text: str, model: str | None, failure: ErrorType
    ) -> LLMSpellError:
        message = error_text(text) or f"HTTP {status}"
        if status == 404:
            if model is not None:
                return ModelNotFound(
                    not_found_message(model, self.backend), model=model, backend=self.backend
                )
            return ModelNotFound(f"Ollama: {message}", backend=self.backend)
        if status == 499:
            return Cancelled(
                f"Ollama cancelled the request: {message}", model=model, backend=self.backend
            )
        if status == 503:
            return BackendUnavailable(
                f"Ollama at {self.base_url} is busy (HTTP 503): {message}",
                model=model,
                backend=self.backend,
            )
        return classify(f"{message} (HTTP {status})", model, failure, self.backend)


def translate_http_error(
    exc: httpx.HTTPError, client: OllamaClient, path: str, model: str | None, failure: ErrorType
) -> LLMSpellError:
    url = client.base_url
    backend = client.backend
    hint = start_hint(backend)
    if isinstance(exc, httpx.ConnectError):
        return BackendUnavailable(
            f"Ollama is not running at {url}: {hint} ({exc})", model=model, backend=backend
        )
    if isinstance(exc, httpx.ConnectTimeout):
        return BackendUnavailable(
            f"Ollama at {url} did not accept a connection within "
            f"{min(client.timeout_seconds, CONNECT_TIMEOUT_SECONDS):g} s: is it running?"
            f" {hint}",
            model=model,
            backend=backend,
        )
    if isinstance(exc, httpx.TimeoutException):
        kind = failure if failure is not LLMSpellError else BackendUnavailable
        return kind(
            f"Ollama at {url} did not answer {path} within {client.timeout_seconds:g} s"
            f" (providers.{backend}.timeout_seconds)",
            model=model,
            backend=backend,
        )
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
        return failure(
            f"Ollama at {url} closed the connection in the middle of {path}: {exc}",
            model=model,
            backend=backend,
        )
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return ConfigError(
            f"invalid Ollama URL {url!r}: {exc}", key=f"providers.{backend}.base_url"
        )
    return BackendUnavailable(
        f"Ollama at {url} cannot be reached: {type(exc).__name__}: {exc}",
        model=model,
        backend=backend,
    )


def classify(
    text: str, model: str | None, failure: ErrorType, backend: str = BACKEND
) -> LLMSpellError:
    """The error for Ollama's error ``text``: not-found texts are ModelNotFound."""
    lowered = text.lower()
    if any(marker in lowered for marker in _NOT_FOUND_MARKERS):
        if model is not None:
            return ModelNotFound(
                f"{not_found_message(model, backend)} (Ollama: {text})",
                model=model,
                backend=backend,
            )
        return ModelNotFound(f"Ollama: {text}", backend=backend)
    return failure(f"Ollama: {text}", model=model, backend=backend)


def error_text(body: str) -> str:
    """Ollama's ``{"error": "..."}`` text, else the body itself (trimmed)."""
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip()[:500]
    if isinstance(data, dict) and "error" in data:
        return str(data["error"])
    return body.strip()[:500]


def parse_line(
    raw: str, *, path: str, model: str | None, failure: ErrorType, backend: str = BACKEND
) -> Json:
    """One NDJSON line (or a whole JSON body) as a dict; anything else is ``failure``."""
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise failure(
            f"Ollama sent a malformed line on {path} (not JSON: {exc.msg}): {raw[:200]!r}",
            model=model,
            backend=backend,
        ) from exc
    if not isinstance(data, dict):
        raise failure(
            f"Ollama sent a malformed line on {path} (a JSON {type(data).__name__}, not an "
            f"object): {raw[:200]!r}",
            model=model,
            backend=backend,
        )
    return data
