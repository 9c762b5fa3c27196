"""Kernel records: what ``kernel start`` keeps about the kernels it started.

Each kernel started by :mod:`llmspell_kernel.process` has a small record (id, pid,
connection file, ip, start time) in ``<runtime dir>/llmspell/<id>.json``. This module reads
and writes them, tells live kernels from dead ones (``list_kernels`` prunes the records of
dead ones), and finds a kernel's connection file by id or name (``find_kernel``, used by
``LLMSpellClient.connect``). It imports neither the client nor ipykernel.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from jupyter_core.paths import jupyter_runtime_dir

from providers.errors import KernelConnectionError

log = logging.getLogger(__name__)

# Kernel processes started by this process, so that they are reaped (and not reported as
# "still running" when their Popen is collected) while this process lives.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class KernelRecord:
    id: str
    pid: int
    connection_file: Path
    ip: str
    started_at: str
    """ISO 8601, UTC."""
    alive: bool = True

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["connection_file"] = str(self.connection_file)
        return data


def records_dir() -> Path:
    return Path(jupyter_runtime_dir()) / "llmspell"


def list_kernels() -> list[KernelRecord]:
    """The live kernels started here; the records of dead ones are removed."""
    alive: list[KernelRecord] = []
    for record in _read_records():
        if pid_alive(record.pid) and record.connection_file.exists():
            alive.append(record)
        else:
            forget_record(record, keep_log=True)  # a kernel that died: its log says why
    return sorted(alive, key=lambda r: r.started_at)


def find_record(id_or_file: str) -> KernelRecord:
    """The live kernel named by id (or a unique id prefix) or connection file.

    Raises :class:`KernelConnectionError` when no such kernel is known, or the prefix is
    ambiguous.
    """
    records = list_kernels()
    path = Path(id_or_file).expanduser()
    for record in records:
        if record.id == id_or_file or record.connection_file in (path, path.absolute()):
            return record
        if record.connection_file.name in (id_or_file, f"{id_or_file}.json"):
            return record
    matches = [r for r in records if r.id.startswith(id_or_file)]
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(r.id for r in records) or "none running"
    if len(matches) > 1:
        raise KernelConnectionError(f"{id_or_file!r} matches several kernels: {known}")
    raise KernelConnectionError(f"no llmspell kernel {id_or_file!r} (running: {known})")


def find_kernel(file_or_name: str) -> Path:
    """The connection file for a path or a name, like ``jupyter console --existing``."""
    path = Path(file_or_name).expanduser()
    if path.is_file():
        return path.absolute()
    for record in list_kernels():  # started by `kernel start`, maybe with its own file
        if record.id == file_or_name:
            return record.connection_file
    from jupyter_client.connect import find_connection_file  # imports zmq: only when needed

    runtime = jupyter_runtime_dir()
    try:
        return Path(find_connection_file(file_or_name, path=[".", runtime]))
    except OSError as exc:
        raise KernelConnectionError(
            f"no kernel connection file matching {file_or_name!r} here or in {runtime}"
            " (see `llmspell kernel list`)"
        ) from exc


def write_record(record: KernelRecord) -> None:
    path = records_dir() / f"{record.id}.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        json.dump(record.to_dict(), file)


def forget_record(record: KernelRecord, *, keep_log: bool = False) -> None:
    """Remove a kernel's record (and its log, unless ``keep_log``); once its process is gone,
    its connection file too."""
    directory = records_dir()
    (directory / f"{record.id}.json").unlink(missing_ok=True)
    if not keep_log:
        (directory / f"{record.id}.log").unlink(missing_ok=True)
    if not pid_alive(record.pid):
        record.connection_file.unlink(missing_ok=True)


def _read_records() -> list[KernelRecord]:
    directory = records_dir()
    if not directory.is_dir():
        return []
    records = []
    for path in directory.glob("*.json"):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            data.pop("alive", None)
            records.append(
                KernelRecord(**{**data, "connection_file": Path(data["connection_file"])})
            )
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.warning("ignoring unreadable kernel record %s: %s", path, exc)
    return records


# Processes ------------------------------------------------------------------------------------


def track_child(proc: subprocess.Popen[bytes]) -> None:
    """Remember a kernel process started here, so that its exit is seen (and it is reaped)."""
    _CHILDREN[proc.pid] = proc


def reap(pid: int) -> None:
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        child.poll()


def pid_alive(pid: int) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        # A zombie is dead, whoever's child it is (Linux: state field of /proc/PID/stat).
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rpartition(")")[2].split()[0] != "Z"
    return True
