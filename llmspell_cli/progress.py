"""Progress of pulls and loads, fed by the kernel's ``model_progress`` messages.

Each message is ``Progress.to_dict()``: ``{"model", "phase", "completed", "total"}`` with byte
counts for downloads (either may be None). On a terminal a live rich bar shows bytes, speed and
ETA and redraws in place; elsewhere (a pipe, a CI log) each new phase is printed once as a line,
and a download prints a line at each quarter of its bytes.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.filesize import decimal
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

if TYPE_CHECKING:
    from providers import types

_LOG_STEPS = 4  # lines per download when not on a terminal


class ModelProgress:
    """Context manager; call it with each ``model_progress`` dict."""

    def __init__(self, console: Console, label: str, *, transfer: bool = True) -> None:
        """``transfer``: a download (bar, bytes, speed, ETA); else a spinner and elapsed time."""
        self.console = console
        self.label = label
        self.transfer = transfer
        self.live = console.is_terminal
        self.phases: list[str] = []
        self._logged_step = 0
        columns: tuple[ProgressColumn, ...] = (
            (
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
            )
            if transfer
            else (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
        )
        self._progress = Progress(
            *columns,
            console=console,
            redirect_stdout=False,
            redirect_stderr=False,
            # a finished load's spinner says nothing the next line does not ("loaded ...",
            # the chat banner); a finished download's bar keeps its size and speed on screen
            transient=not transfer,
        )
        self._task: TaskID | None = None

    def __enter__(self) -> ModelProgress:
        if self.live:
            self._progress.start()
            # A download's clock starts with its first byte count (for a true speed and ETA).
            self._task = self._progress.add_task(self.label, total=None, start=not self.transfer)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.live:
            if exc is not None:  # the error line says what happened; no half-done bar above it
                self._progress.live.transient = True
            self._progress.stop()

    def __call__(self, progress: types.Progress) -> None:
        phase = progress.phase or "working"
        completed = progress.completed
        total = progress.total
        new_phase = not self.phases or self.phases[-1] != phase
        if new_phase:
            self.phases.append(phase)
        if self.live:
            self._update_bar(phase, completed, total)
        else:
            self._log(phase, new_phase, completed, total)

    def _log(self, phase: str, new_phase: bool, completed: Any, total: Any) -> None:
        if new_phase:
            self._print(f"{self.label}: {phase}")
        if phase == "done":
            return  # its byte counts are the size (a re-pull's only event), not a download
        if isinstance(completed, int) and isinstance(total, int) and total > 0:
            step = min(completed, total) * _LOG_STEPS // total
            if step > self._logged_step:
                self._logged_step = step
                percent = 100 * step // _LOG_STEPS
                self._print(f"{self.label}: {decimal(completed)} of {decimal(total)} ({percent}%)")

    def _print(self, line: str) -> None:
        self.console.print(Text(line), soft_wrap=True)

    def _update_bar(self, phase: str, completed: Any, total: Any) -> None:
        assert self._task is not None, "use ModelProgress as a context manager"
        self._progress.update(self._task, description=f"{self.label} {phase}")
        if isinstance(total, int) and total > 0:
            self._progress.start_task(self._task)
            self._progress.update(self._task, total=total)
        if isinstance(completed, int):
            self._progress.start_task(self._task)
            self._progress.update(self._task, completed=completed)
        if phase == "done":
            task = self._progress.tasks[0]
            if task.total is not None:
                self._progress.update(self._task, completed=task.total)
