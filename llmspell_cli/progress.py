"""A live progress bar for pulls and loads, fed by the kernel's ``model_progress`` messages.

Each message is ``Progress.to_dict()``: ``{"model", "phase", "completed", "total"}`` with byte
counts for downloads (either may be None). On a terminal the bar shows bytes, speed and ETA and
redraws in place; elsewhere (a pipe, a log file) each new phase is printed once as a line and the
bar's final state is printed at the end.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text


class ModelProgress:
    """Context manager; call it with each ``model_progress`` dict."""

    def __init__(self, console: Console, label: str) -> None:
        self.console = console
        self.label = label
        self.phases: list[str] = []
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            redirect_stdout=False,
            redirect_stderr=False,
            transient=False,
        )
        self._task: TaskID | None = None

    def __enter__(self) -> ModelProgress:
        self._progress.start()
        self._task = self._progress.add_task(self.label, total=None, start=False)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def __call__(self, message: dict[str, Any]) -> None:
        assert self._task is not None, "use ModelProgress as a context manager"
        phase = str(message.get("phase") or "working")
        completed = message.get("completed")
        total = message.get("total")
        if not self.phases or self.phases[-1] != phase:
            self.phases.append(phase)
            if not self.console.is_terminal:
                self.console.print(Text(f"{self.label}: {phase}"), soft_wrap=True)
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
