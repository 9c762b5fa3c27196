"""The model requests a kernel is working on, and the leases of the clients that sent them.

One kernel serves many clients (a notebook, several ``llmspell --connect`` terminals), so work
is tracked per request and per client:

- every running model request is an :class:`~.commands.Operation` under its ``msg_id``, with
  the Jupyter session of its client: ``cancel`` stops one of them (or all), ``ps`` lists them;
- a client may hold a *lease* (``{"command": "lease", "seconds": N}`` on the control channel,
  renewed before it runs out; ``LLMSpellClient`` does this by itself). When a lease runs out,
  the client is taken to be gone: its running requests are cancelled and its subshells are
  deleted (:meth:`Tracker.expire`). A client that never took a lease (a plain Jupyter
  front-end) is never timed out.

Thread-safe: the shell, subshell, control and worker threads all use it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .commands import Operation
from .protocol.results import RequestRow


@dataclass
class _Lease:
    seconds: float
    renewed: float
    subshells: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Expired:
    """A client whose lease ran out: what was cancelled, and its subshells to delete."""

    session: str
    cancelled: list[str]
    subshells: list[str]


class Tracker:
    """Running model requests by ``msg_id``; client leases by Jupyter session."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._operations: dict[str, Operation] = {}
        self._leases: dict[str, _Lease] = {}
        self._subshell_owners: dict[str, str] = {}

    # Requests ---------------------------------------------------------------------------------

    def add(self, op: Operation) -> None:
        op.received = self._clock()
        with self._lock:
            self._operations[op.request] = op

    def remove(self, request: str) -> None:
        with self._lock:
            self._operations.pop(request, None)
            if not self._operations:
                self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` seconds) until no request runs; True if none does."""
        with self._lock:
            return self._idle.wait_for(lambda: not self._operations, timeout)

    def cancel(self, request: str | None = None) -> list[str]:
        """Ask one running request (or, with None, every one) to stop; returns their ids."""
        with self._lock:
            if request is None:
                chosen = list(self._operations.values())
            else:
                op = self._operations.get(request)
                chosen = [op] if op is not None else []
        for op in chosen:
            op.cancel.set()
        return [op.request for op in chosen]

    def rows(self) -> list[RequestRow]:
        now = self._clock()
        with self._lock:
            running = sorted(self._operations.values(), key=lambda op: op.received)
        return [
            RequestRow(
                request=op.request,
                command=op.command,
                model=op.model,
                session=op.session,
                state="queued" if op.ahead is not None else "running",
                ahead=op.ahead,
                seconds=round(now - op.received, 3),
            )
            for op in running
        ]

    # Leases ---------------------------------------------------------------------------------

    def lease(self, session: str, seconds: float) -> list[str]:
        """Take or renew ``session``'s lease; returns its running requests."""
        now = self._clock()
        with self._lock:
            held = self._leases.get(session)
            if held is None:
                self._leases[session] = _Lease(seconds, now)
            else:
                held.seconds, held.renewed = seconds, now
            return [op.request for op in self._operations.values() if op.session == session]

    def own_subshell(self, session: str, subshell_id: str) -> None:
        """``session`` created ``subshell_id`` (it is deleted when the session's lease ends)."""
        with self._lock:
            self._subshell_owners[subshell_id] = session
            held = self._leases.get(session)
            if held is not None:
                held.subshells.add(subshell_id)

    def forget_subshell(self, subshell_id: str) -> None:
        with self._lock:
            session = self._subshell_owners.pop(subshell_id, None)
            held = self._leases.get(session) if session is not None else None
            if held is not None:
                held.subshells.discard(subshell_id)

    def expire(self) -> list[Expired]:
        """End the leases that ran out: cancel their clients' requests; returns what to delete."""
        now = self._clock()
        ended: list[tuple[str, _Lease, list[Operation]]] = []
        with self._lock:
            for session, held in list(self._leases.items()):
                if now - held.renewed > held.seconds:
                    del self._leases[session]
                    owned = [s for s, owner in self._subshell_owners.items() if owner == session]
                    for subshell in owned:
                        del self._subshell_owners[subshell]
                    held.subshells.update(owned)
                    ops = [op for op in self._operations.values() if op.session == session]
                    ended.append((session, held, ops))
        expired = []
        for session, held, ops in ended:
            for op in ops:
                op.cancel.set()
            expired.append(Expired(session, [op.request for op in ops], sorted(held.subshells)))
        return expired

    def leases(self) -> int:
        with self._lock:
            return len(self._leases)
