"""Turns on a loaded model: one generation at a time (a llama.cpp context is not thread-safe),
in the order the requests came, and never held by a stream that nobody reads.

A generation :meth:`Turnstile.join` s the line and gets a :class:`Turn`; :meth:`Turn.wait`
returns how many requests are ahead of it (the running one included) until its turn comes
(then 0), so that its stream can report its place while it waits. The turn passes from one
:class:`Turn` to the next in first-come order, under the turnstile's lock: a turn is an object,
not a lock, so the exit of a stream that lost its turn can never free someone else's.

A stream is a generator: between two chunks it is suspended at a ``yield`` and may never be
resumed (a half-read ``Agent.stream()`` in a notebook, an abandoned iterator). The holder marks
those moments (:meth:`Turn.suspend`, :meth:`Turn.resume`); a waiter that finds the holder
suspended for ``stall_seconds`` or more takes the turn from it (the holder is *preempted*: its
next :meth:`Turn.resume` raises :class:`GenerationError`, closing it is quiet). Dropping a
suspended llama-cpp-python stream is safe while another generation runs: its
``create_completion``/``generate`` generators hold no ``finally`` that touches the context, and
the next generation re-evaluates from whatever the context holds.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from ..errors import GenerationError
from .ids import BACKEND

POLL_SECONDS = 0.25
"""The longest a waiting stream goes without reporting its place (the kernel checks its
cancel flag between chunks)."""


class Turnstile:
    """The line of generations on one loaded model."""

    def __init__(
        self,
        model_id: str,
        *,
        stall_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.model_id = model_id
        self.stall_seconds = stall_seconds
        """A holder suspended this long while others wait loses its turn; 0 = never."""
        self._clock = clock
        self._cond = threading.Condition()
        self._holder: Turn | None = None
        self._waiting: deque[Turn] = deque()

    def join(self) -> Turn:
        """A place in the line: the turn at once when nobody holds or waits for it."""
        with self._cond:
            turn = Turn(self, self._clock())
            if self._holder is None and not self._waiting:
                self._grant_locked(turn)
            else:
                self._waiting.append(turn)
            return turn

    @property
    def busy(self) -> int:
        """How many turns are held or awaited."""
        with self._cond:
            return len(self._waiting) + (self._holder is not None)

    # Internals (run with self._cond held) -------------------------------------------------

    def _grant_locked(self, turn: Turn) -> None:
        self._holder = turn
        turn.granted_at = self._clock()
        if turn.suspended_since is not None:  # granted while its reader was away: the bound
            turn.suspended_since = turn.granted_at  # counts from now
        self._cond.notify_all()

    def _pass_on_locked(self) -> None:
        self._holder = None
        if self._waiting:
            self._grant_locked(self._waiting.popleft())
        else:
            self._cond.notify_all()

    def _preempt_stalled_locked(self) -> float | None:
        """Take the turn from a holder suspended too long; else the seconds until it would
        be (None: not suspended, or preemption is off)."""
        holder = self._holder
        if holder is None or holder.suspended_since is None or self.stall_seconds <= 0:
            return None
        left = holder.suspended_since + self.stall_seconds - self._clock()
        if left > 0:
            return left
        holder.preempted = True
        self._pass_on_locked()
        return None


class Turn:
    """One generation's place in a :class:`Turnstile`'s line."""

    def __init__(self, turnstile: Turnstile, joined_at: float) -> None:
        self._turnstile = turnstile
        self.joined_at = joined_at
        self.granted_at: float | None = None
        self.suspended_since: float | None = None
        self.preempted = False
        self.pieces = 0
        """Chunks of text its stream handed out (for the message of a preemption)."""
        self._left = False

    @property
    def queue_seconds(self) -> float:
        """How long it waited for its turn."""
        return 0.0 if self.granted_at is None else self.granted_at - self.joined_at

    def wait(self, timeout: float = POLL_SECONDS, last: int | None = None) -> int:
        """0 once this turn holds the model; else how many requests are ahead of it, as soon
        as that differs from ``last`` or after ``timeout`` seconds."""
        gate = self._turnstile
        deadline = gate._clock() + timeout
        with gate._cond:
            while True:
                if self.preempted:
                    raise self._preempted_error()
                if gate._holder is self:
                    return 0
                until_stall = gate._preempt_stalled_locked()
                if gate._holder is self:
                    return 0
                ahead = self._ahead_locked()
                remaining = deadline - gate._clock()
                if ahead != last or remaining <= 0:
                    return ahead
                gate._cond.wait(remaining if until_stall is None else min(remaining, until_stall))

    def suspend(self) -> None:
        """Its stream is about to hand out a chunk and may not be read again for a while."""
        with self._turnstile._cond:
            self.suspended_since = self._turnstile._clock()

    def resume(self) -> None:
        """Its stream is being read again: :class:`GenerationError` if the turn was taken."""
        gate = self._turnstile
        with gate._cond:
            self.suspended_since = None
            if not self.preempted:
                return
        raise self._preempted_error()

    def _preempted_error(self) -> GenerationError:
        gate = self._turnstile
        return GenerationError(
            f"{gate.model_id}: this generation was not read for {gate.stall_seconds:g} s while"
            f" another request waited for the model, so it was stopped after {self.pieces}"
            f" {'piece' if self.pieces == 1 else 'pieces'}",
            model=gate.model_id,
            backend=BACKEND,
        )

    def leave(self) -> None:
        """Give the turn to the next in line, or leave the line; does nothing after a
        preemption (the turn is someone else's now) or a second time."""
        gate = self._turnstile
        with gate._cond:
            if self._left:
                return
            self._left = True
            if gate._holder is self:
                gate._pass_on_locked()
            elif self in gate._waiting:
                gate._waiting.remove(self)
                gate._cond.notify_all()

    def _ahead_locked(self) -> int:
        gate = self._turnstile
        try:
            position = gate._waiting.index(self)
        except ValueError:
            position = 0  # preempted before it ever ran: nothing is ahead of a lost turn
        return position + (gate._holder is not None)
