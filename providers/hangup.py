"""Cancelling an httpx request that is blocked on a silent server.

A read waiting on a stalled server notices a cancel only at its next bytes or at its timeout:
a stalled download, or an Ollama generation while Ollama loads a big model (it sends not even
the response headers until the model is loaded). :class:`HangUp` watches the cancel event beside
the request and shuts the connection's socket down once it is set: the blocked read fails at
once, and the caller reports :class:`~providers.errors.Cancelled`.

The socket comes from httpcore's ``trace`` extension when the request opens its connection (so
even a wait for the headers is cut short), else from the response once its headers are in (a
connection reused from a pool). The watcher checks the event ten times a second and ends with
the request.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType
from typing import Any

import httpx


class HangUp:
    """``with HangUp(cancel) as hang_up:`` around one request sent with
    ``extensions=hang_up.extensions``; :meth:`attach` its response. With ``cancel`` None it
    does nothing."""

    def __init__(self, cancel: threading.Event | None) -> None:
        self.cancel = cancel
        self._lock = threading.Lock()
        self._stream: Any = None
        self._finished = threading.Event()
        self._watcher: threading.Thread | None = None

    @property
    def extensions(self) -> dict[str, Any]:
        return {} if self.cancel is None else {"trace": self._trace}

    def attach(self, response: httpx.Response) -> None:
        """The request's response: its connection, if the trace did not see it open."""
        stream = response.extensions.get("network_stream")
        with self._lock:
            if self._stream is None:
                self._stream = stream
        self._hang_up_if_cancelled()

    def __enter__(self) -> HangUp:
        if self.cancel is not None:
            self._watcher = threading.Thread(
                target=self._watch, name="llmspell-hang-up", daemon=True
            )
            self._watcher.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._finished.set()
        if self._watcher is not None:
            self._watcher.join(timeout=1.0)

    def _trace(self, event: str, info: dict[str, Any]) -> None:
        if event in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            with self._lock:
                self._stream = info.get("return_value")
            self._hang_up_if_cancelled()

    def _watch(self) -> None:
        assert self.cancel is not None
        while not self._finished.is_set():
            if self.cancel.wait(0.1):
                self._hang_up_if_cancelled()
                return

    def _hang_up_if_cancelled(self) -> None:
        if self.cancel is None or not self.cancel.is_set() or self._finished.is_set():
            return
        with self._lock:
            stream = self._stream
        sock = stream.get_extra_info("socket") if stream is not None else None
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
