"""SIGTERM and SIGHUP, stopping a command the way Ctrl-C does.

:func:`install` makes them raise :class:`Terminated`, a ``KeyboardInterrupt``, wherever the
command is: the kernel client then cancels the command's own request in the kernel (only that
one) before the exception goes on, and the app exits 143. Code that catches Ctrl-C to carry on
(``chat`` after an interrupted answer) lets :class:`Terminated` through.
"""

from __future__ import annotations

import signal
from types import FrameType


class Terminated(KeyboardInterrupt):
    """The command was ended by SIGTERM or SIGHUP."""

    def __init__(self, signum: int) -> None:
        self.signal_name = signal.Signals(signum).name
        super().__init__(self.signal_name)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Terminated(signum)


def install() -> None:
    """Turn SIGTERM and SIGHUP into :class:`Terminated` (call on the main thread)."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _terminate)
