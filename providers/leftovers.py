"""Files and folders that a process makes for its own unfinished work (an import being copied,
an embedded kernel's connection file) carry its pid in their names, so that what a killed
process left behind can be told from what a live one is using, and removed safely.
"""

from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from pathlib import Path

UNTAGGED_AGE_SECONDS = 24 * 3600.0
"""A leftover without an owner in its name (written before owners were named) is removed once
it has not changed for this long."""
_OWNER = re.compile(r"^(?P<prefix>.*?)(?P<pid>\d+)-[0-9a-f]{8,32}")


def owned_name(prefix: str = "", suffix: str = "") -> str:
    """A new unique name that says this process owns it: ``<prefix><pid>-<hex><suffix>``."""
    return f"{prefix}{os.getpid()}-{uuid.uuid4().hex}{suffix}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def is_orphan(path: Path, prefix: str = "", *, now: float | None = None) -> bool:
    """Whether ``path`` was left by a process that is gone (its pid names no process), or,
    for a name without an owner, has not changed for :data:`UNTAGGED_AGE_SECONDS`."""
    match = _OWNER.match(path.name[len(prefix) :]) if path.name.startswith(prefix) else None
    if match is not None and not match.group("prefix"):
        pid = int(match.group("pid"))
        return pid != os.getpid() and not _alive(pid)
    try:
        age = (time.time() if now is None else now) - path.lstat().st_mtime
    except OSError:
        return False
    return age > UNTAGGED_AGE_SECONDS


def size_of(path: Path) -> int:
    """Bytes under ``path`` (a file, or a folder's files), not following links."""
    try:
        if path.is_symlink() or path.is_file():
            return path.lstat().st_size
        return sum(p.lstat().st_size for p in path.rglob("*") if not p.is_dir() or p.is_symlink())
    except OSError:
        return 0


def remove_orphans(folder: Path, pattern: str, prefix: str = "") -> int:
    """Delete what killed processes left in ``folder`` (names matching ``pattern`` that start
    with ``prefix``); returns the bytes freed."""
    freed = 0
    try:
        candidates = list(folder.glob(pattern))
    except OSError:
        return 0
    for path in candidates:
        if not is_orphan(path, prefix):
            continue
        size = size_of(path)
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError:
            continue
        freed += size
    return freed
