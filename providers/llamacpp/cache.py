"""Loaded models: an LRU of at most ``max_loaded`` entries, each freed after ``keep_alive`` idle
seconds.

A model is loaded once however many threads ask for it at the same time (the first one loads,
the others wait for its result). Users hold a :class:`Lease` while they use a model; a model
that is evicted, unloaded or expires while leased is only closed when its last lease ends, so a
generation never sees its model freed under it. Each entry has its :class:`~.turns.Turnstile`:
the line of generations on that model (one at a time, first come first served). Idle expiry
runs on one small timer thread that sleeps until the next deadline; it is also checked on every
access.

The cache itself is backend-agnostic: it stores whatever ``load`` returns and calls its
``close()``; a model whose ``alive`` attribute turns False (a runner process that died) is
dropped on the next access, so that the next request loads it again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from ..errors import BackendUnavailable, Cancelled
from .turns import Turnstile

log = logging.getLogger(__name__)


class Closeable(Protocol):
    def close(self) -> None: ...


@dataclass(eq=False)
class Entry:
    model_id: str
    model: Any
    n_ctx: int
    size_bytes: int | None
    last_used: float
    last_used_wall: float
    turns: Turnstile
    """The line of generations on the model: a llama.cpp context is not thread-safe."""
    leases: int = 0
    retired: bool = False


@dataclass(frozen=True)
class LoadedEntry:
    model_id: str
    n_ctx: int
    size_bytes: int | None
    expires_at: str | None
    in_use: bool
    model: Any = field(default=None, repr=False, compare=False)


class Lease:
    """The right to use a loaded model until :meth:`release` (or the end of a ``with``)."""

    def __init__(self, cache: ModelCache, entry: Entry, load_seconds: float) -> None:
        self._cache = cache
        self.entry = entry
        self.load_seconds = load_seconds
        self._released = False

    @property
    def model(self) -> Any:
        return self.entry.model

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._cache._release(self.entry)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


class ModelCache:
    """Thread-safe cache of loaded models."""

    def __init__(
        self,
        *,
        max_loaded: int,
        keep_alive: float,
        stall_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_loaded < 1:
            raise ValueError("max_loaded must be at least 1")
        self.max_loaded = max_loaded
        self.keep_alive = keep_alive
        self.stall_seconds = stall_seconds
        """Given to each model's :class:`Turnstile`."""
        self._clock = clock
        self._cond = threading.Condition()
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._loading: dict[str, Future[None]] = {}
        self._reaper: threading.Thread | None = None
        self._closed = False
        self.loads = 0
        """How many times a model was actually loaded (not served from the cache)."""

    # Use ----------------------------------------------------------------------------------

    def acquire(
        self,
        model_id: str,
        load: Callable[[int], Any],
        *,
        n_ctx: int | None,
        default_n_ctx: int,
        size_bytes: int | None = None,
        on_load_start: Callable[[], None] | None = None,
    ) -> Lease:
        """A lease on ``model_id``, loading it with ``load(n_ctx)`` unless it is loaded.

        ``n_ctx`` None accepts the model at whatever context size it is loaded with; a number
        reloads it when it was loaded with another.
        """
        lease: Lease | None = None
        while True:
            with self._cond:
                if self._closed:
                    raise BackendUnavailable("the llamacpp backend is closed", backend="llamacpp")
                expired = self._expire_locked()
                entry = self._entries.get(model_id)
                if entry is not None and (n_ctx is None or entry.n_ctx == n_ctx):
                    self._touch_locked(entry)
                    entry.leases += 1
                    lease = Lease(self, entry, 0.0)
                    break
                pending = self._loading.get(model_id)
                if pending is None:
                    future: Future[None] = Future()
                    self._loading[model_id] = future
                    break
            self._close_all(expired)
            error = pending.exception()
            if error is not None and not isinstance(error, Cancelled):
                raise error  # the same model fails the same way; a cancelled load is retried
        self._close_all(expired)
        if lease is not None:
            return lease
        return self._load(model_id, load, n_ctx or default_n_ctx, size_bytes, on_load_start, future)

    def _load(
        self,
        model_id: str,
        load: Callable[[int], Any],
        n_ctx: int,
        size_bytes: int | None,
        on_load_start: Callable[[], None] | None,
        future: Future[None],
    ) -> Lease:
        started = time.perf_counter()
        try:
            if on_load_start is not None:
                on_load_start()
            model = load(n_ctx)
        except BaseException as exc:
            with self._cond:
                del self._loading[model_id]
            future.set_exception(exc)
            raise
        seconds = time.perf_counter() - started
        retired: list[Entry] = []
        with self._cond:
            self.loads += 1
            now = self._clock()
            turns = Turnstile(model_id, stall_seconds=self.stall_seconds)
            entry = Entry(model_id, model, n_ctx, size_bytes, now, time.time(), turns, leases=1)
            previous = self._entries.pop(model_id, None)
            if previous is not None:
                retired.append(previous)
            if self._closed:  # closed while loading: free it as soon as the caller is done
                entry.retired = True
            else:
                self._entries[model_id] = entry
            while len(self._entries) > self.max_loaded:
                retired.append(self._entries.pop(self._eviction_victim_locked(model_id)))
            retired = self._retire_locked(retired)
            del self._loading[model_id]
            self._start_reaper_locked()
            self._cond.notify_all()
        future.set_result(None)
        self._close_all(retired)
        return Lease(self, entry, seconds)

    def _release(self, entry: Entry) -> None:
        with self._cond:
            entry.leases -= 1
            self._touch_locked(entry)
            close = entry.retired and entry.leases == 0
            self._cond.notify_all()
        if close:
            self._close_all([entry])

    # Management ---------------------------------------------------------------------------

    def unload(self, model_id: str) -> bool:
        """Drop ``model_id`` (freed now, or when its last lease ends); False if not loaded."""
        with self._cond:
            entry = self._entries.pop(model_id, None)
            closing = self._retire_locked([entry] if entry else [])
        self._close_all(closing)
        return entry is not None

    def is_loaded(self, model_id: str) -> bool:
        with self._cond:
            entry = self._entries.get(model_id)
            return entry is not None and _alive(entry)

    def snapshot(self) -> list[LoadedEntry]:
        """The loaded models, least recently used first."""
        with self._cond:
            expired = self._expire_locked()
            rows = [
                LoadedEntry(
                    model_id=e.model_id,
                    n_ctx=e.n_ctx,
                    size_bytes=e.size_bytes,
                    expires_at=self._expires_at(e),
                    in_use=e.leases > 0,
                    model=e.model,
                )
                for e in self._entries.values()
            ]
        self._close_all(expired)
        return rows

    def close(self) -> None:
        """Free every model (leased ones when their lease ends) and stop the timer thread."""
        with self._cond:
            self._closed = True
            closing = self._retire_locked(list(self._entries.values()))
            self._entries.clear()
            reaper, self._reaper = self._reaper, None
            self._cond.notify_all()
        self._close_all(closing)
        if reaper is not None and reaper is not threading.current_thread():
            reaper.join(timeout=5)

    # Internals (the *_locked methods run with self._cond held) ------------------------------

    def _touch_locked(self, entry: Entry) -> None:
        entry.last_used = self._clock()
        entry.last_used_wall = time.time()
        if self._entries.get(entry.model_id) is entry:
            self._entries.move_to_end(entry.model_id)

    def _eviction_victim_locked(self, keep: str) -> str:
        candidates = [k for k in self._entries if k != keep]
        idle = [k for k in candidates if self._entries[k].leases == 0]
        return (idle or candidates)[0]

    def _retire_locked(self, entries: list[Entry]) -> list[Entry]:
        """Mark ``entries`` retired; the ones nobody holds are returned to be closed now."""
        for entry in entries:
            entry.retired = True
        return [e for e in entries if e.leases == 0]

    def _expire_locked(self) -> list[Entry]:
        """Drop the entries idle for ``keep_alive`` and those whose model died (a runner that
        crashed or was stopped: its ``alive`` is False)."""
        now = self._clock()
        expired = [
            e
            for e in self._entries.values()
            if not _alive(e)
            or (self.keep_alive > 0 and e.leases == 0 and now - e.last_used >= self.keep_alive)
        ]
        for entry in expired:
            del self._entries[entry.model_id]
        return self._retire_locked(expired)

    def _expires_at(self, entry: Entry) -> str | None:
        if self.keep_alive <= 0:
            return None
        moment = datetime.fromtimestamp(entry.last_used_wall + self.keep_alive, UTC)
        return moment.isoformat(timespec="seconds").replace("+00:00", "Z")

    def _start_reaper_locked(self) -> None:
        if self._reaper is None and self.keep_alive > 0 and not self._closed:
            self._reaper = threading.Thread(
                target=self._reap, name="llmspell-llamacpp-keep-alive", daemon=True
            )
            self._reaper.start()

    def _reap(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                expired = self._expire_locked()
                if not expired:
                    idle = [e.last_used for e in self._entries.values() if e.leases == 0]
                    timeout = (
                        max(0.0, min(idle) + self.keep_alive - self._clock()) if idle else None
                    )
                    self._cond.wait(timeout)
                    continue
            self._close_all(expired)

    def _close_all(self, entries: list[Entry]) -> None:
        for entry in entries:
            try:
                entry.model.close()
                log.debug("freed model %s", entry.model_id)
            except Exception:  # freeing one model must not stop freeing the others
                log.exception("closing model %s failed", entry.model_id)


def _alive(entry: Entry) -> bool:
    """False for a model whose process died (a runner's ``alive``); models without the
    attribute live as long as they are loaded."""
    return bool(getattr(entry.model, "alive", True))
