"""What ``LocalLLM`` returns: plain lists and dicts that also display well.

A :class:`Table` is a ``list`` of row dicts, a :class:`KeyedTable` a ``dict`` of row dicts (one
row per key, e.g. per backend), a :class:`Record` one ``dict`` and a :class:`Summary` a
``Record`` that shows one line. They index, iterate and serialise (``json.dumps``) like the
built-in types they are; ``to_dict()``/``to_list()`` give the built-in copy. Jupyter renders
them as HTML tables (``_repr_html_``); consoles get aligned text (``__repr__``).
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable
from typing import Any

Row = dict[str, Any]

TABLE_CLASS = "llmspell-table"
TEXT_WIDTH = 48
"""The widest a value is shown in a console table (HTML shows it whole)."""


def format_bytes(count: int) -> str:
    """``999 B``, ``1.5 kB``, ``3.0 GB`` (powers of 1000, as Ollama and the Hub show sizes)."""
    value, unit = float(count), "B"
    for larger in ("kB", "MB", "GB", "TB"):
        if value < 1000:
            break
        value, unit = value / 1000, larger
    return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"


def show_value(key: str, value: Any) -> str:
    """One cell's text: sizes in bytes as ``253.1 MB``, booleans as yes/no, nested values as
    compact JSON, nothing for None."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) and (key == "bytes" or key.endswith(("_bytes", "size"))):
        return format_bytes(value)
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), default=str)
    return str(value)


def html_value(key: str, value: Any) -> str:
    """One cell's HTML: escaped text; a nested object folded into ``<details>`` (a model's
    manifest is tens of lines)."""
    if isinstance(value, dict | list) and value:
        kind = "field" if isinstance(value, dict) else "item"
        count = f"{len(value)} {kind}{'s' if len(value) != 1 else ''}"
        body = html.escape(json.dumps(value, indent=2, default=str))
        return f"<details><summary>{count}</summary><pre>{body}</pre></details>"
    return html.escape(show_value(key, value))


def _columns(rows: Iterable[Row]) -> list[str]:
    """Every key that has a value in some row, in first-seen order."""
    columns: dict[str, None] = {}
    for row in rows:
        for key, value in row.items():
            if value is not None and value != [] and value != {}:
                columns.setdefault(key, None)
    return list(columns)


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= TEXT_WIDTH else text[: TEXT_WIDTH - 1] + "…"


Cell = tuple[str, Any]
"""A cell: its column's key (which says how to show the value) and the value."""


class _Shown:
    """Displays the cells of :meth:`_cells` (header, body, caption) as HTML or text."""

    def _cells(self) -> tuple[list[str], list[list[Cell]], str]:
        raise NotImplementedError

    def _repr_html_(self) -> str:
        header, body, caption = self._cells()
        if not body:
            return f"<p>{html.escape(caption or 'nothing')}: none</p>"
        parts = [f'<table class="{TABLE_CLASS}">']
        if caption:
            parts.append(f"<caption>{html.escape(caption)}</caption>")
        parts.append("<thead><tr>")
        parts += [f"<th>{html.escape(name)}</th>" for name in header]
        parts.append("</tr></thead><tbody>")
        for line in body:
            parts.append("<tr>")
            parts += [f"<td>{html_value(key, value)}</td>" for key, value in line]
            parts.append("</tr>")
        parts.append("</tbody></table>")
        return "".join(parts)

    def _text(self) -> str:
        header, body, caption = self._cells()
        if not body:
            return f"{caption or 'nothing'}: none"
        shown = [header, *([_clip(show_value(key, value)) for key, value in line] for line in body)]
        widths = [max(len(line[i]) for line in shown) for i in range(len(header))]
        table = "\n".join(
            "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
            for line in shown
        )
        return f"{caption}\n{table}" if caption else table

    def __repr__(self) -> str:
        return self._text()

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(self._text())

    def to_json(self, **dumps: Any) -> str:
        """The JSON of the data (``json.dumps`` keywords, e.g. ``indent=2``)."""
        return json.dumps(self, default=str, **dumps)


class Table(_Shown, list[Row]):
    """Rows (dicts), e.g. the installed models: a ``list`` that renders as a table."""

    def __init__(self, rows: Iterable[Row] = (), caption: str = "") -> None:
        super().__init__(rows)
        self.caption = caption

    def to_list(self) -> list[Row]:
        """The rows as a plain list of plain dicts."""
        return [dict(row) for row in self]

    def _cells(self) -> tuple[list[str], list[list[Cell]], str]:
        columns = _columns(self)
        body = [[(key, row.get(key)) for key in columns] for row in self]
        return columns, body, self.caption


class KeyedTable(_Shown, dict[str, Row]):
    """A row per key (e.g. per backend): a ``dict`` that renders as a table whose first column
    is the key."""

    def __init__(self, rows: dict[str, Row], key: str = "name", caption: str = "") -> None:
        super().__init__(rows)
        self.key = key
        self.caption = caption

    def to_dict(self) -> dict[str, Row]:
        return {name: dict(row) for name, row in self.items()}

    def _cells(self) -> tuple[list[str], list[list[Cell]], str]:
        columns = [c for c in _columns(self.values()) if c != self.key]
        body = [
            [(self.key, name), *((k, row.get(k)) for k in columns)] for name, row in self.items()
        ]
        return [self.key, *columns], body, self.caption


class Record(_Shown, dict[str, Any]):
    """One thing's fields (a model's info): a ``dict`` that renders as a two-column table."""

    def __init__(self, fields: dict[str, Any], caption: str = "") -> None:
        super().__init__(fields)
        self.caption = caption

    def to_dict(self) -> dict[str, Any]:
        return dict(self)

    def _shown(self) -> dict[str, Any]:
        return self

    def _cells(self) -> tuple[list[str], list[list[Cell]], str]:
        body = [
            [("field", key), (key, value)]
            for key, value in self._shown().items()
            if value is not None and value != {} and value != []
        ]
        return ["field", "value"], body, self.caption


class Summary(Record):
    """What a change did (a pull): all its data (``result["model"]``, ``to_dict()``), shown as
    the few fields of ``shown``; ``line`` says it in one line (which the progress display
    leaves in the cell: the table does not repeat it)."""

    def __init__(self, fields: dict[str, Any], line: str, shown: dict[str, Any]) -> None:
        super().__init__(fields)
        self.line = line
        self.shown = shown

    def _shown(self) -> dict[str, Any]:
        return self.shown
