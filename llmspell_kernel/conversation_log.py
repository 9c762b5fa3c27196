"""The conversation log: every ``prompt``, ``chat`` turn and ``Agent`` turn, kept in SQLite (as
simonw's ``llm`` keeps its logs), so that a conversation can be read again and continued.

One row per answer: its conversation, where it came from (``prompt``, ``chat``, ``agent``), the
model, the messages it answered (or the raw prompt), the answer, the options and the metrics.
The database is in the user data directory (``[logs] path`` in the config moves it, ``[logs]
enabled = false`` or ``--no-log`` turns logging off). Several processes write to it at once
(two CLIs, a kernel): SQLite's write-ahead log and a busy timeout keep every entry, each written
in one short transaction of its own connection.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from platformdirs import user_data_path

from providers.config import Config
from providers.errors import InvalidRequest
from providers.options import GenerationOptions, Message
from providers.types import Metrics

Source = Literal["prompt", "chat", "agent"]
BUSY_TIMEOUT_SECONDS = 30.0
"""How long a writer waits for another one (SQLite serialises writers)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation TEXT NOT NULL,
    source TEXT NOT NULL,
    model TEXT NOT NULL,
    created_at TEXT NOT NULL,
    messages TEXT,
    prompt TEXT,
    text TEXT NOT NULL,
    options TEXT NOT NULL,
    metrics TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_conversation ON responses (conversation, id);
"""


def default_path() -> Path:
    return user_data_path("llmspell") / "logs.db"


def new_conversation_id() -> str:
    return uuid.uuid4().hex[:12]


@dataclass(frozen=True)
class Entry:
    """One logged answer."""

    id: int
    conversation: str
    source: str
    model: str
    created_at: str
    messages: list[Message] | None
    """The messages it answered (None for a raw prompt)."""
    prompt: str | None
    """The raw prompt it continued (None for a conversation)."""
    text: str
    options: dict[str, Any]
    metrics: dict[str, Any]

    @property
    def question(self) -> str:
        """What was asked: the last message, or the raw prompt."""
        if self.messages:
            return self.messages[-1].content
        return self.prompt or ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # the messages as {"role", "content"}


class ConversationLog:
    """The log database at ``path`` (created on first write)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._ready = False  # the file is in WAL mode and has the table

    @classmethod
    def of(cls, config: Config) -> ConversationLog | None:
        """The log ``config`` asks for; None when logging is off."""
        if not config.logs.enabled:
            return None
        return cls(config.logs.path.expanduser() if config.logs.path else default_path())

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_SECONDS)
        try:
            if not self._ready:
                _use_wal(connection)
                connection.executescript(_SCHEMA)
                self._ready = True
            with connection:  # one transaction: committed, or rolled back on an error
                yield connection
        finally:
            connection.close()

    def record(
        self,
        *,
        conversation: str,
        source: Source,
        model: str,
        text: str,
        options: GenerationOptions,
        metrics: Metrics,
        messages: Sequence[Message] | None = None,
        prompt: str | None = None,
    ) -> int:
        """Add one answer; returns its id."""
        row = (
            conversation,
            source,
            model,
            datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            None if messages is None else json.dumps([m.to_dict() for m in messages]),
            prompt,
            text,
            json.dumps({k: v for k, v in options.to_dict().items() if v not in (None, [])}),
            json.dumps(metrics.to_dict()),
        )
        with self._connect() as db:
            cursor = db.execute(
                "INSERT INTO responses (conversation, source, model, created_at, messages,"
                " prompt, text, options, metrics) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            return int(cursor.lastrowid or 0)

    def keep(self, **entry: Any) -> str | None:
        """:meth:`record` for a caller whose answer must not fail with the log: None, or why
        the log could not be written (for the caller to warn with)."""
        try:
            self.record(**entry)
        except (sqlite3.Error, OSError) as exc:
            return f"the conversation log {self.path} cannot be written: {exc}"
        return None

    def entries(self, *, limit: int | None = None, model: str | None = None) -> list[Entry]:
        """The latest answers, oldest first (at most ``limit``; of ``model`` only)."""
        if not self.path.exists():
            return []
        query, args = "SELECT * FROM responses", []
        if model is not None:
            query += " WHERE model = ? OR model LIKE ?"
            args += [model, f"{model}@%"]
        query += " ORDER BY id DESC"
        if limit is not None:
            query += f" LIMIT {int(limit)}"
        with self._connect() as db:
            rows = db.execute(query, args).fetchall()
        return [_entry(row) for row in reversed(rows)]

    def conversation(self, conversation: str) -> list[Entry]:
        """Every answer of one conversation, in order; :class:`InvalidRequest` if none."""
        rows = []
        if self.path.exists():
            with self._connect() as db:
                rows = db.execute(
                    "SELECT * FROM responses WHERE conversation = ? ORDER BY id", (conversation,)
                ).fetchall()
        if not rows:
            raise InvalidRequest(
                f"no conversation {conversation!r} in the log {self.path}: see `llmspell logs list`"
            )
        return [_entry(row) for row in rows]

    def latest_conversation(self, source: Source | None = None) -> str | None:
        """The conversation of the latest answer (from ``source`` only)."""
        if not self.path.exists():
            return None
        query = "SELECT conversation FROM responses"
        args: list[str] = []
        if source is not None:
            query += " WHERE source = ?"
            args.append(source)
        with self._connect() as db:
            row = db.execute(query + " ORDER BY id DESC LIMIT 1", args).fetchone()
        return None if row is None else str(row[0])

    def history(self, conversation: str) -> tuple[str, list[Message]]:
        """The model and messages of a conversation to continue it: what its last answer
        answered, and that answer."""
        last = self.conversation(conversation)[-1]
        if last.messages is None:
            raise InvalidRequest(
                f"conversation {conversation!r} is a raw completion (prompt --raw): it has no"
                " messages to continue"
            )
        return last.model, [*last.messages, Message("assistant", last.text)]


def _entry(row: tuple[Any, ...]) -> Entry:
    id_, conversation, source, model, created_at, messages, prompt, text, options, metrics = row
    return Entry(
        id=int(id_),
        conversation=str(conversation),
        source=str(source),
        model=str(model),
        created_at=str(created_at),
        messages=None
        if messages is None
        else [Message(m["role"], m["content"]) for m in json.loads(messages)],
        prompt=prompt,
        text=str(text),
        options=json.loads(options),
        metrics=json.loads(metrics),
    )


def _use_wal(connection: sqlite3.Connection) -> None:
    """Switch the file to WAL mode (kept by the file itself). Switching takes an exclusive
    lock and SQLite does not wait for it through the busy timeout: two processes opening a
    new log at once got "database is locked"; retry within the timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)
