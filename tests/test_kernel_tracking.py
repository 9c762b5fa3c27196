"""The kernel's request and lease bookkeeping (``llmspell_kernel.tracking``), without a kernel."""

from __future__ import annotations

import threading

from llmspell_kernel.commands import Operation
from llmspell_kernel.tracking import Tracker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_wait_idle_returns_when_the_last_request_ends() -> None:
    tracker = Tracker()
    assert tracker.wait_idle(0)
    tracker.add(Operation(request="a", command="generate"))
    tracker.add(Operation(request="b", command="pull"))
    assert not tracker.wait_idle(0.01)
    ended = threading.Timer(0.05, lambda: (tracker.remove("a"), tracker.remove("b")))
    ended.start()
    try:
        assert tracker.wait_idle(30)
    finally:
        ended.join()
    assert tracker.rows() == []


def test_a_lease_that_runs_out_cancels_only_its_sessions_requests() -> None:
    clock = Clock()
    tracker = Tracker(clock)
    mine = Operation(request="mine", command="generate", session="s1")
    theirs = Operation(request="theirs", command="generate", session="s2")
    tracker.add(mine)
    tracker.add(theirs)
    assert tracker.lease("s1", 10) == ["mine"]
    tracker.lease("s2", 10)
    tracker.own_subshell("s1", "sub-1")
    clock.now += 5
    tracker.lease("s2", 10)
    assert tracker.expire() == []
    clock.now += 6
    [expired] = tracker.expire()
    assert (expired.session, expired.cancelled, expired.subshells) == ("s1", ["mine"], ["sub-1"])
    assert mine.cancel.is_set() and not theirs.cancel.is_set()
    assert tracker.leases() == 1
