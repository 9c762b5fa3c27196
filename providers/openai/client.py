"""The one boundary between llmspell and an OpenAI-compatible server's HTTP API.

Every httpx exception, every error status and every error the server reports inside a stream
becomes an llmspell error here, with ``raise ... from exc``:

- connection refused, DNS failure, a connect timeout → :class:`BackendUnavailable` naming the
  URL;
- a read timeout                 → the operation's failure type naming ``timeout_seconds``;
- HTTP 401 / 403                 → :class:`BackendUnavailable` naming ``api_key_env`` (or
  saying that none is set);
- HTTP 404, or an error whose code or text says the model does not exist → :class:`ModelNotFound`
  listing the models the server has;
- other statuses (400, 422, 5xx) → the operation's failure type with the server's message;
- in a stream: an ``error`` event or a ``data`` object holding ``error``, a ``data`` line that
  is not a JSON object, a response that is not an event stream, a connection dropped or a
  stream that ends before ``data: [DONE]`` (and before any choice finished) →
  :class:`GenerationError` saying so.

The API key travels only in the ``Authorization`` header. Every message built here has the key
removed from the server's text (a server may echo it back), and the key is never part of a URL,
so neither httpx's exceptions nor its log lines can carry it.

The HTTP transport is a seam: ``OpenAIClient(..., transport=httpx.MockTransport(handler))`` checks
all of the above in-process (``tests/test_openai_mock_transport.py``); the hang-up of a
cancelled stream (:class:`~providers.hangup.HangUp`) needs a real transport.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import httpx_sse

from ..errors import (
    BackendUnavailable,
    Cancelled,
    GenerationError,
    LLMSpellError,
    ModelNotFound,
)
from ..hangup import HangUp
from ..tls import verify_for

CONNECT_TIMEOUT_SECONDS = 5.0
"""Upper bound on opening a connection; a refused connection fails at once anyway."""
DONE = "[DONE]"
REDACTED = "***"

Json = dict[str, Any]
ErrorType = type[LLMSpellError]

# How servers say that a model does not exist besides a 404: OpenAI's error code, and the texts
# of servers that answer 400 for it.
_NOT_FOUND_CODES = ("model_not_found",)
_NOT_FOUND_MARKERS = ("does not exist", "model not found")


class OpenAIClient:
    """A thread-safe JSON and server-sent-events client for one OpenAI-compatible server."""

    def __init__(
        self,
        backend: str,
        base_url: str,
        timeout_seconds: float,
        *,
        api_key_env: str | None = None,
        api_key: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """``backend`` is the endpoint's name (its config table); ``base_url`` the API root
        (``http://host:8000/v1``). ``api_key`` (read by the caller from ``$api_key_env``) is
        sent as a bearer token. ``transport`` replaces httpx's own (a mock, in tests)."""
        self.backend = backend
        self.base_url = base_url.rstrip("/")
        self.timeout_seconds = timeout_seconds
        self.api_key_env = api_key_env
        self._key = api_key or None
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        timeout = httpx.Timeout(
            timeout_seconds, connect=min(timeout_seconds, CONNECT_TIMEOUT_SECONDS)
        )
        self._http = httpx.Client(
            base_url=self.base_url + "/",
            timeout=timeout,
            headers=headers,
            trust_env=False,
            verify=verify_for(self.base_url),
            transport=transport,
        )
        # Streams each open their own connection, so that a hang-up reaches its socket even
        # before the server sends the headers (see providers.hangup).
        self._streams = httpx.Client(
            base_url=self.base_url + "/",
            timeout=timeout,
            headers=headers,
            trust_env=False,
            verify=verify_for(self.base_url),
            limits=httpx.Limits(max_keepalive_connections=0),
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()
        self._streams.close()

    @property
    def has_key(self) -> bool:
        return self._key is not None

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
        known: Callable[[], list[str]] | None = None,
    ) -> Json:
        """Send one request to ``path`` (relative to the API root, or ``/...`` from the server's
        root) and return its JSON object body. ``known`` lists the server's models for a
        :class:`ModelNotFound`."""
        extra: dict[str, Any] = {}
        if timeout is not None:
            extra["timeout"] = httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT_SECONDS))
        with self._translated(path, model, failure, timeout=timeout):
            try:
                response = self._http.request(method, self._url(path), json=body, **extra)
            except httpx.RemoteProtocolError:
                # A pooled keep-alive connection the server had just closed: a GET is safe to
                # send again, once, on a fresh connection.
                if method != "GET":
                    raise
                response = self._http.request(method, self._url(path), json=body, **extra)
        if response.is_error:
            raise self._status_error(response, path, model, failure, known)
        try:
            data = response.json()
        except ValueError as exc:
            raise failure(
                self._say(f"sent a body on {path} that is not JSON: {response.text[:200]!r}"),
                model=model,
                backend=self.backend,
            ) from exc
        if not isinstance(data, dict):
            raise failure(
                self._say(f"sent a JSON {type(data).__name__} on {path}, not an object"),
                model=model,
                backend=self.backend,
            )
        return data

    # Streams ------------------------------------------------------------------------------------

    def stream(
        self,
        path: str,
        body: Json,
        *,
        model: str,
        cancel: threading.Event | None = None,
        known: Callable[[], list[str]] | None = None,
    ) -> Generator[Json, None, None]:
        """POST ``body`` and yield the JSON object of each ``data:`` event, up to ``[DONE]``.

        Closing the generator closes the HTTP response (servers stop generating when the client
        goes). Setting ``cancel`` hangs up at once, even while the server sends nothing, and
        raises :class:`Cancelled`.
        """
        finished = False  # a choice said why it ended: the text is complete even without [DONE]
        with self._translated(path, model, GenerationError, cancel), HangUp(cancel) as hang_up:
            with self._streams.stream(
                "POST",
                self._url(path),
                json=body,
                headers={"Accept": "text/event-stream"},
                extensions=hang_up.extensions,
            ) as response:
                hang_up.attach(response)
                if response.is_error:
                    response.read()
                    raise self._status_error(response, path, model, GenerationError, known)
                try:
                    for event in httpx_sse.EventSource(response).iter_sse():
                        if event.data == DONE:
                            return
                        data = self._event_data(event, path, model)
                        if data is None:
                            continue
                        yield data
                        finished = finished or _has_finish_reason(data)
                except httpx_sse.SSEError as exc:
                    raise GenerationError(
                        self._say(f"did not answer {path} with an event stream: {exc}"),
                        model=model,
                        backend=self.backend,
                    ) from exc
        if cancel is not None and cancel.is_set():
            raise Cancelled(self._interrupted(path), model=model, backend=self.backend)
        if not finished:
            raise GenerationError(
                self._say(f"ended the {path} stream before its end (no [DONE])"),
                model=model,
                backend=self.backend,
            )

    def _event_data(self, event: httpx_sse.ServerSentEvent, path: str, model: str) -> Json | None:
        if event.event == "error":
            raise GenerationError(
                self._say(f"reported an error in the {path} stream: {error_text(event.data)}"),
                model=model,
                backend=self.backend,
            )
        if not event.data:
            return None
        try:
            data = json.loads(event.data)
        except json.JSONDecodeError as exc:
            raise GenerationError(
                self._say(
                    f"sent a malformed event on {path} (not JSON: {exc.msg}): {event.data[:200]!r}"
                ),
                model=model,
                backend=self.backend,
            ) from exc
        if not isinstance(data, dict):
            raise GenerationError(
                self._say(
                    f"sent a malformed event on {path} (a JSON {type(data).__name__}, not an "
                    f"object): {event.data[:200]!r}"
                ),
                model=model,
                backend=self.backend,
            )
        if "error" in data:
            raise GenerationError(
                self._say(f"reported an error in the {path} stream: {error_text(event.data)}"),
                model=model,
                backend=self.backend,
            )
        return data

    # Error translation ------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        """``models`` → under the API root; ``/props`` → beside it (the API root without its
        ``/v1``: llama.cpp's ``/props``, vLLM's ``/version``)."""
        if path.startswith("/"):
            root = self.base_url.removesuffix("/v1")
            return root + path
        return path

    def _say(self, text: str) -> str:
        """``text`` about this server, with the API key removed."""
        return self.redact(f"{self.backend} at {self.base_url} {text}")

    def redact(self, text: str) -> str:
        return text.replace(self._key, REDACTED) if self._key else text

    def _interrupted(self, path: str) -> str:
        return f"the request to {self.backend}'s {path} was interrupted"

    @contextmanager
    def _translated(
        self,
        path: str,
        model: str | None,
        failure: ErrorType,
        cancel: threading.Event | None = None,
        *,
        timeout: float | None = None,
    ) -> Iterator[None]:
        try:
            yield
        except httpx.HTTPError as exc:
            if cancel is not None and cancel.is_set():  # we hung up: not the server's fault
                raise Cancelled(self._interrupted(path), model=model, backend=self.backend) from exc
            raise self._http_error(exc, path, model, failure, timeout) from exc

    def _http_error(
        self,
        exc: httpx.HTTPError,
        path: str,
        model: str | None,
        failure: ErrorType,
        timeout: float | None = None,
    ) -> LLMSpellError:
        """``timeout``: the request's own, when it is not ``timeout_seconds``."""
        waited = self.timeout_seconds if timeout is None else timeout
        reason = self.redact(f"{type(exc).__name__}: {exc}")
        where = f"{self.backend} at {self.base_url}"
        if isinstance(exc, httpx.ConnectError):
            return BackendUnavailable(
                f"{where} cannot be reached: is the server running? ({reason})",
                model=model,
                backend=self.backend,
            )
        if isinstance(exc, httpx.ConnectTimeout):
            return BackendUnavailable(
                f"{where} did not accept a connection within "
                f"{min(waited, CONNECT_TIMEOUT_SECONDS):g} s: is the server "
                "running, and is the URL right?",
                model=model,
                backend=self.backend,
            )
        if isinstance(exc, httpx.TimeoutException):
            kind = failure if failure is not LLMSpellError else BackendUnavailable
            return kind(
                f"{where} did not answer {path} within {waited:g} s"
                + (
                    f" (providers.{self.backend}.timeout_seconds)"
                    if waited == self.timeout_seconds
                    else " (the bound on a listing, however long timeout_seconds is)"
                ),
                model=model,
                backend=self.backend,
            )
        if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
            return failure(
                f"{where} closed the connection in the middle of {path}: {reason}",
                model=model,
                backend=self.backend,
            )
        return BackendUnavailable(
            f"{where} cannot be reached: {reason}", model=model, backend=self.backend
        )

    def _status_error(
        self,
        response: httpx.Response,
        path: str,
        model: str | None,
        failure: ErrorType,
        known: Callable[[], list[str]] | None,
    ) -> LLMSpellError:
        status = response.status_code
        text = error_text(response.text) or response.reason_phrase or "no message"
        said = f"HTTP {status}: {text}"
        if status in (401, 403):
            return BackendUnavailable(
                self._say(f"refused the request ({said}): {self._key_hint()}"),
                model=model,
                backend=self.backend,
            )
        if model is not None and (status == 404 or _says_not_found(status, response.text)):
            return ModelNotFound(
                self.redact(self.not_found_message(model, known, said)),
                model=model,
                backend=self.backend,
            )
        if status == 404:
            return failure(
                self._say(f"has no {path} ({said}): is the base_url the API root (…/v1)?"),
                model=model,
                backend=self.backend,
            )
        return failure(self._say(f"failed {path} ({said})"), model=model, backend=self.backend)

    def _key_hint(self) -> str:
        table = f"[providers.{self.backend}]"
        if self.api_key_env is None:
            return f"it wants an API key: set api_key_env in {table} and export the key there"
        if not self.has_key:
            return f"the API key's variable {self.api_key_env} (api_key_env of {table}) is not set"
        return f"check the API key in {self.api_key_env} (api_key_env of {table})"

    def not_found_message(
        self, model: str, known: Callable[[], list[str]] | None, said: str | None = None
    ) -> str:
        """``model`` is not served here; the message lists what is, if the server says."""
        listed: list[str] | None = None
        if known is not None:
            try:
                listed = known()
            except LLMSpellError:
                listed = None
        if listed is None:
            has = "(it did not say which models it has)"
        elif listed:
            has = f"it serves {', '.join(listed)}"
        else:
            has = "it serves no models"
        reason = f" ({said})" if said else ""
        return f"model '{model}' is not served by {self.backend} at {self.base_url}{reason}: {has}"


def _has_finish_reason(data: Json) -> bool:
    choices = data.get("choices")
    return isinstance(choices, list) and any(
        isinstance(c, dict) and c.get("finish_reason") for c in choices
    )


def _says_not_found(status: int, body: str) -> bool:
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and error.get("code") in _NOT_FOUND_CODES:
        return True
    return status == 400 and any(m in error_text(body).lower() for m in _NOT_FOUND_MARKERS)


def error_text(body: str) -> str:
    """The server's message in an error body: ``{"error": {"message": ...}}`` (OpenAI, vLLM,
    llama.cpp), ``{"error": "..."}``, ``{"message": ...}``, ``{"detail": ...}`` (FastAPI), else
    the body itself, trimmed."""
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip()[:500]
    if isinstance(data, dict):
        for key in ("error", "message", "detail"):
            value = data.get(key)
            if isinstance(value, dict):
                value = value.get("message") or value.get("msg") or json.dumps(value)
            if isinstance(value, list):
                value = "; ".join(
                    str(v.get("msg", v)) if isinstance(v, dict) else str(v) for v in value
                )
            if value:
                return str(value).strip()[:500]
    return body.strip()[:500]
