"""Everything the CLI prints: rich consoles bound to the streams captured at start-up.

The embedded kernel runs in this process and code it executes may swap ``sys.stdout``; binding
the consoles to the streams seen when the command started keeps the CLI's own output on the
real terminal whatever happens later.

Text mode prints tables and messages for people; JSON mode prints exactly one JSON document on
stdout per command. Errors are one line on stderr (``error: <message>``) in both modes; in JSON
mode stdout also gets ``{"error": {"ename": ..., "evalue": ...}}``.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

from rich.console import Console
from rich.filesize import decimal
from rich.table import Table
from rich.text import Text

PIPE_WIDTH = 160
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def human_size(size: int | None) -> str:
    """``253.0 MB`` (decimal units, like Ollama and the Hub); ``-`` when unknown."""
    return "-" if size is None else decimal(size)


def short_time(iso: str | None) -> str:
    """``2026-11-25T23:01:02.5+00:00`` → ``2026-11-25 23:01``; ``-`` when unknown."""
    if not iso:
        return "-"
    return iso.replace("T", " ")[:16]


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def one_line(message: str) -> str:
    """A message folded onto one line (error output is one line per error)."""
    return "; ".join(part.strip() for part in message.splitlines() if part.strip())


def _console(stream: TextIO) -> Console:
    """A console whose terminal-ness and colours are decided now, from the environment at
    start-up: an embedded ipykernel sets ``FORCE_COLOR=1`` in this process when it starts, which
    would otherwise put colour codes and live redraws into pipes and files."""
    probe = Console(file=stream)
    # Not a terminal: rich assumes 80 columns; tables read better unwrapped in files and logs.
    width = None if probe.is_terminal or "COLUMNS" in os.environ else PIPE_WIDTH
    return Console(
        file=stream,
        width=width,
        force_terminal=probe.is_terminal,
        force_interactive=probe.is_interactive,
        color_system=probe.color_system,  # type: ignore[arg-type]
        highlight=False,
        soft_wrap=False,
    )


class Output:
    """The CLI's stdout/stderr, in text or JSON mode."""

    def __init__(self, *, json_mode: bool, stdout: TextIO, stderr: TextIO) -> None:
        self.json_mode = json_mode
        self.stdout = stdout
        self.stderr = stderr
        self.out = _console(stdout)
        self.err = _console(stderr)

    # Plain text ---------------------------------------------------------------------------

    def write(self, text: str) -> None:
        """Raw text on stdout, flushed at once (streamed generation, script output)."""
        self.stdout.write(text)
        self.stdout.flush()

    def write_err(self, text: str) -> None:
        self.stderr.write(text)
        self.stderr.flush()

    def line(self, text: str = "", *, style: str | None = None) -> None:
        """One line on stdout (text mode only)."""
        self.out.print(Text(text, style=style or ""), soft_wrap=True)

    def note(self, text: str, *, style: str | None = None) -> None:
        """One line on stderr: notices that are not the command's result."""
        self.err.print(Text(text, style=style or ""), soft_wrap=True)

    def warn(self, text: str) -> None:
        self.note(f"warning: {text}", style="yellow")

    def confirm(self, question: str, stdin: TextIO | None = None) -> bool:
        """Ask ``question [y/N]`` on stderr and read the answer from ``stdin`` (else
        ``sys.stdin``); only y or yes is a yes, and end of input is a no. Nothing goes to
        stdout (click's confirm writes the space after its prompt there, through ``input``)."""
        self.write_err(f"{question} [y/N]: ")
        answer = (stdin or sys.stdin).readline()
        if not answer:
            self.write_err("\n")
        return answer.strip().lower() in {"y", "yes"}

    def ansi_err(self, text: str) -> None:
        """Text with ANSI colours (IPython tracebacks) on stderr, plain when not a terminal."""
        self.err.print(Text.from_ansi(text), soft_wrap=True)

    # Documents ------------------------------------------------------------------------------

    def document(self, data: Any) -> None:
        """The one JSON document of a command."""
        self.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
        self.stdout.flush()

    def error(self, ename: str, message: str) -> None:
        """Report a failed operation: one line on stderr (and the JSON document in JSON mode)."""
        if self.json_mode:
            self.document({"error": {"ename": ename, "evalue": message}})
        self.err.print(Text(f"error: {one_line(message)}", style="red"), soft_wrap=True)

    # Tables ---------------------------------------------------------------------------------

    def table(
        self,
        columns: Sequence[str],
        rows: Iterable[Sequence[str]],
        *,
        title: str | None = None,
        empty: str | None = None,
    ) -> None:
        """A rich table on stdout; ``empty`` is printed instead when there are no rows."""
        materialized = [list(row) for row in rows]
        if not materialized and empty is not None:
            self.note(empty)
            return
        table = Table(title=title, show_edge=False, header_style="bold", pad_edge=False)
        for name in columns:
            table.add_column(name, overflow="fold")
        for row in materialized:
            table.add_row(*(Text(cell) for cell in row))
        self.out.print(table)

    def fields(self, pairs: Iterable[tuple[str, Any]]) -> None:
        """A two-column key/value table (``model info``)."""
        table = Table(show_header=False, show_edge=False, box=None, pad_edge=False)
        table.add_column(style="bold")
        table.add_column(overflow="fold")
        for key, value in pairs:
            table.add_row(Text(key), Text("-" if value is None else str(value)))
        self.out.print(table)
