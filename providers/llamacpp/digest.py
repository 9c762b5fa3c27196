"""A sha256 computed on a thread of its own, beside a download.

Verifying a pull means hashing every byte. Done inline, between reading the socket and writing
the file, it made a download of the 253 MB Gemma 0.7x a plain GET here; hashlib releases the
GIL while it hashes a block, so on its own thread the hash runs while the next blocks arrive.
Blocks are handed over in batches of about a megabyte, and at most ``MAX_PENDING`` batches
wait (a slow hasher slows the download down instead of filling memory).
"""

from __future__ import annotations

import hashlib
import queue
import threading

BATCH_BYTES = 1 << 20
MAX_PENDING = 32


class BackgroundSha256:
    """``update`` from one thread, then ``hexdigest`` (or ``close`` to abandon it)."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._batch: list[bytes] = []
        self._batched = 0
        self._queue: queue.Queue[list[bytes] | None] = queue.Queue(maxsize=MAX_PENDING)
        self._thread: threading.Thread | None = None
        self._digest: str | None = None

    def update(self, data: bytes) -> None:
        if self._digest is not None:
            raise ValueError("update() after hexdigest() or close()")
        self._batch.append(data)
        self._batched += len(data)
        if self._batched >= BATCH_BYTES:
            self._hand_over()

    def hexdigest(self) -> str:
        """The digest of everything given; waits for the hashing thread to finish."""
        if self._digest == "":
            raise ValueError("hexdigest() after close()")
        if self._digest is None:
            if self._thread is None:  # under one batch: no thread was needed
                for block in self._batch:
                    self._hash.update(block)
                self._batch = []
            else:
                self._hand_over()
                self._stop()
            self._digest = self._hash.hexdigest()
        return self._digest

    def close(self) -> None:
        """Stop the hashing thread without a digest (the download was abandoned)."""
        self._batch = []
        if self._digest is None:
            self._digest = ""  # nothing more to give, and no digest to trust
            if self._thread is not None:
                self._stop()

    def _hand_over(self) -> None:
        if self._batch:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="llmspell-sha256", daemon=True
                )
                self._thread.start()
            self._queue.put(self._batch)
            self._batch = []
            self._batched = 0

    def _stop(self) -> None:
        assert self._thread is not None
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while (batch := self._queue.get()) is not None:
            for block in batch:
                self._hash.update(block)
