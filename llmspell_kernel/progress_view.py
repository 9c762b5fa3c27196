"""Progress of pulls and loads in a cell: a live ipywidgets bar where the front-end renders
widgets (JupyterLab, Notebook 7, VS Code), one self-overwriting text line elsewhere (consoles,
``llmspell repl``, nbclient); both end as a one-line summary.

A front-end that renders widgets asks the kernel which ``jupyter.widget`` comms exist when it
opens a notebook (``comm_info_request``); the kernel notes it (:func:`note_comm_info`), so a
console connected to the same kernel alone never gets a widget it would print as text.
"""

from __future__ import annotations

import html
import importlib.util
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, TextIO

from providers import Progress

from .views import format_bytes

PROGRESS_INTERVAL = 0.25
"""Seconds between two updates of the same phase (a few per second, not thousands)."""

WIDGET_TARGET = "jupyter.widget"
_FINAL_PHASES = ("verifying", "done")
_widget_frontends = threading.Event()


def note_comm_info(target_name: str | None) -> None:
    """Called by the kernel for each ``comm_info_request``: a widget manager asks for
    ``jupyter.widget``."""
    if target_name == WIDGET_TARGET:
        _widget_frontends.set()


def widgets_shown() -> bool:
    """Whether a front-end that renders widgets has opened this kernel, and ipywidgets is here."""
    return _widget_frontends.is_set() and importlib.util.find_spec("ipywidgets") is not None


class ProgressView(Protocol):
    def __call__(self, progress: Progress) -> None: ...

    def finish(self, summary: str | None = None) -> None:
        """End the display: ``summary`` replaces what it showed, or (None: it failed) that
        stays as it is."""


def progress_view(stream: TextIO | None = None) -> ProgressView:
    """The progress display for a cell: a widget bar or a text line on ``stream``."""
    if widgets_shown():
        return ProgressBar()
    return ProgressLine(stream if stream is not None else sys.stdout)


class _Rate:
    """Throttling and the speed of a download (bytes/s since its first byte count)."""

    def __init__(self, interval: float, clock: Callable[[], float]) -> None:
        self._interval = interval
        self._clock = clock
        self._phase: str | None = None
        self._last = 0.0
        self._start: tuple[float, int] | None = None

    def due(self, progress: Progress) -> tuple[bool, float | None]:
        """Whether to show ``progress`` now (a new phase always), and the speed to show."""
        now = self._clock()
        if progress.completed is not None and self._start is None:
            self._start = (now, progress.completed)
        if progress.phase == self._phase and now - self._last < self._interval:
            return False, None
        self._phase, self._last = progress.phase, now
        return True, self._speed(now, progress)

    def _speed(self, now: float, progress: Progress) -> float | None:
        if self._start is None or progress.completed is None:
            return None
        if progress.phase in _FINAL_PHASES or progress.completed == progress.total:
            return None  # a speed is only worth showing while bytes are still coming
        start_time, start_bytes = self._start
        elapsed = now - start_time
        return (progress.completed - start_bytes) / elapsed if elapsed >= 1.0 else None


class ProgressLine:
    """A progress callback drawing one self-overwriting line (``\\r``) on ``stream``.

    Updates within one phase are throttled to one per ``interval`` seconds; a new phase is
    always shown. Safe to call from any thread. :meth:`finish` ends the line.
    """

    def __init__(
        self,
        stream: TextIO,
        interval: float = PROGRESS_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._rate = _Rate(interval, clock)
        self._lock = threading.Lock()
        self._width = 0
        self.updates = 0

    def __call__(self, progress: Progress) -> None:
        with self._lock:
            due, speed = self._rate.due(progress)
            if due:
                self._draw(describe_progress(progress, speed))

    def finish(self, summary: str | None = None) -> None:
        with self._lock:
            if summary is not None and self._width:  # the summary replaces what was shown
                self._draw(summary)
            if self._width:
                self._stream.write("\n")
                self._stream.flush()
                self._width = 0

    def _draw(self, text: str) -> None:
        padding = " " * max(0, self._width - len(text))
        self._stream.write(f"\r{text}{padding}")
        self._stream.flush()
        self._width = len(text)
        self.updates += 1


class ProgressBar:
    """An ipywidgets bar and its text (bytes, speed, ETA), updated in place in one output;
    replaced by the summary line at the end."""

    def __init__(
        self, interval: float = PROGRESS_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        import ipywidgets  # type: ignore[import-untyped]
        from IPython.display import display

        self._rate = _Rate(interval, clock)
        self._lock = threading.Lock()
        self._bar = ipywidgets.FloatProgress(value=0.0, min=0.0, max=1.0, bar_style="info")
        self._label = ipywidgets.HTML(value="starting")
        self._box = ipywidgets.HBox([self._bar, self._label])
        self._handle: Any = display(self._box, display_id=True)  # type: ignore[no-untyped-call]
        self._text = ""
        self.updates = 0

    def __call__(self, progress: Progress) -> None:
        with self._lock:
            due, speed = self._rate.due(progress)
            if not due:
                return
            self._text = describe_progress(progress, speed)
            if progress.completed is not None and progress.total:
                self._bar.value = min(1.0, progress.completed / progress.total)
            self._label.value = html.escape(self._text)
            self.updates += 1

    def finish(self, summary: str | None = None) -> None:
        with self._lock:
            line = summary if summary is not None else f"{self._text} (stopped)"
            self._box.close()
            self._bar.close()
            self._label.close()
            if self._handle is not None:
                self._handle.update({"text/plain": line}, raw=True)


def describe_progress(progress: Progress, rate: float | None = None) -> str:
    """``gemma3-270m: downloading 45.2 MB / 253.1 MB (17%), 12.0 MB/s, 17 s left``."""
    text = f"{progress.model}: {progress.phase}"
    if progress.completed is not None and progress.total:
        percent = 100 * progress.completed / progress.total
        text += (
            f" {format_bytes(progress.completed)} / {format_bytes(progress.total)} ({percent:.0f}%)"
        )
    elif progress.completed is not None:
        text += f" {format_bytes(progress.completed)}"
    if rate is not None and rate > 0:
        text += f", {format_bytes(int(rate))}/s"
        if progress.completed is not None and progress.total:
            text += f", {format_seconds((progress.total - progress.completed) / rate)} left"
    return text


def format_seconds(seconds: float) -> str:
    """``0.4 s``, ``17 s``, ``3 min 05 s``, ``1 h 02 min``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
