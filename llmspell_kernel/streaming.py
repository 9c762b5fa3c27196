# ipykernel is not annotated: its IOPub thread is typed Any here.
"""Generated text on IOPub, joined like ipykernel's own stdout.

A backend yields a piece of text per token. One IOPub message per piece costs every token a
wake-up of the kernel's IOPub thread and of the client's receiving threads; on a 2-core machine
where llama.cpp keeps both cores busy, each wake-up takes time from llama.cpp's threads. Tokens/s
through the kernel, against raw llama-cpp-python (benchmarks/bench_generation.py, 8 rounds):
0.95x with a message per token, 0.98x with one per 50 ms, 0.99x with one per 100 ms (the
default), 1.00x with one per 200 ms. So :class:`StreamPublisher` sends the first piece at once
(time to first token is untouched) and then at most one message per ``interval``, holding text
no longer than that: the pieces that arrive in between are joined. ipykernel's ``OutStream``
does the same for ``print`` every 0.2 s, with the same machinery: a timer on the IOPub thread's
loop, armed from whichever thread writes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


class StreamPublisher:
    """Coalesces ``model_stream`` contents (``{"model", "text"}``) of one request.

    :meth:`publish` may be called from any thread; ``send`` always runs on the IOPub thread.
    With ``interval`` 0, every piece is a message of its own.
    Call :meth:`flush` when the request ends, before its reply: what is still held is sent
    then, ahead of the request's idle status (both go through the IOPub thread's queue).
    """

    def __init__(
        self, iopub_thread: Any, send: Callable[[dict[str, Any]], None], interval: float
    ) -> None:
        self._iopub = iopub_thread
        self._send = send
        self.interval = interval
        self._lock = threading.Lock()
        self._held: dict[str, Any] | None = None
        self._armed = False  # a send of the held text is scheduled
        self._last_sent = -float("inf")

    def publish(self, content: dict[str, Any]) -> None:
        if self.interval <= 0:
            self._iopub.schedule(lambda: self._send(content))
            return
        with self._lock:
            if self._held is None:
                self._held = dict(content)
            else:
                self._held = {**content, "text": self._held["text"] + content["text"]}
            if self._armed:
                return
            self._armed = True
            delay = self._last_sent + self.interval - time.monotonic()
        if delay <= 0 or not self._iopub.thread.is_alive():
            self._iopub.schedule(self._send_held)
        else:
            self._iopub.schedule(lambda: self._iopub.io_loop.call_later(delay, self._send_held))

    def flush(self) -> None:
        with self._lock:
            if self._held is None:
                return
        self._iopub.schedule(self._send_held)

    def _send_held(self) -> None:
        with self._lock:
            content, self._held = self._held, None
            self._armed = False
            if content is None:
                return
            self._last_sent = time.monotonic()
        self._send(content)
