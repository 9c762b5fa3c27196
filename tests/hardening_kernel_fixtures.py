"""Helpers for the kernel hardening tests (tests/test_hardening_{fuzz,auth,load,process,defaults}).

- :func:`record_figures` prints a test's figures and, when ``LLMSPELL_FIGURES_DIR`` is set,
  writes them there as ``<name>.json`` (docs/reliability.md is filled from such a run);
- :func:`snapshot_tree` records a directory tree (type, size, mode, mtime, content hash) so a
  test can show that nothing in it was touched;
- :class:`RawShell` sends many signed messages on one shell socket without waiting and
  collects every reply by its parent ``msg_id`` (what a pipelining client or an attacker with
  the key can do);
- :func:`kernel_pid` / :func:`kernel_alive` for a kernel subprocess started by jupyter_client.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import zmq
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.session import Session

from tests.kernel_fixtures import KernelProcess

FIGURES_ENV = "LLMSPELL_FIGURES_DIR"
_HASH_LIMIT = 16 << 20  # bigger files (the linked Gemma GGUF) are compared by stat only


def record_figures(name: str, figures: dict[str, Any]) -> dict[str, Any]:
    """Print ``figures`` and write them to ``$LLMSPELL_FIGURES_DIR/<name>.json`` if set."""
    data = {
        "test": name,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        **figures,
    }
    print(f"\nFIGURES {name}: {json.dumps(data, sort_keys=True)}")
    directory = os.environ.get(FIGURES_ENV)
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / f"{name}.json").write_text(json.dumps(data, indent=2, sort_keys=True))
    return data


# Trees ------------------------------------------------------------------------------------------


def snapshot_tree(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry under ``root`` (relative path → type, mode, size, mtime, hash or target)."""
    entries: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            info = path.lstat()
            rel = str(path.relative_to(root))
            mode = stat.S_IMODE(info.st_mode)
            if stat.S_ISLNK(info.st_mode):
                entries[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                entries[rel] = ("dir", mode)
            elif stat.S_ISREG(info.st_mode):
                digest: str | int = info.st_ino
                if info.st_size <= _HASH_LIMIT:
                    digest = hashlib.sha256(path.read_bytes()).hexdigest()
                entries[rel] = ("file", mode, info.st_size, info.st_mtime_ns, digest)
            else:
                entries[rel] = ("other", stat.S_IFMT(info.st_mode), mode, info.st_mtime_ns)
    return entries


def tree_changes(
    before: dict[str, tuple[Any, ...]], after: dict[str, tuple[Any, ...]]
) -> dict[str, list[str]]:
    return {
        "added": sorted(set(after) - set(before)),
        "removed": sorted(set(before) - set(after)),
        "changed": sorted(k for k in set(before) & set(after) if before[k] != after[k]),
    }


# Kernel processes -------------------------------------------------------------------------------


def kernel_pid(kernel: KernelProcess) -> int:
    provisioner = kernel.manager.provisioner
    assert provisioner is not None
    pid = getattr(provisioner, "pid", None)
    assert isinstance(pid, int)
    return pid


def kernel_alive(connection_file: str, timeout: float = 10.0) -> dict[str, Any]:
    """kernel_info from a fresh client; raises AssertionError if the kernel does not answer."""
    client = BlockingKernelClient(connection_file=connection_file)
    client.load_connection_file()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=timeout)
        reply = client.kernel_info(reply=True, timeout=timeout)
        return dict(reply["content"])
    except RuntimeError as exc:
        raise AssertionError(f"the kernel did not answer kernel_info: {exc}") from exc
    finally:
        client.stop_channels()


def memory_of(pid: int) -> dict[str, int]:
    """RSS of a process split as Linux reports it (bytes): ``anon`` (heap, stacks: what a
    leak grows), ``file`` (mapped files: the model's weights, reclaimable), ``total``."""
    fields = {"RssAnon": "anon", "RssFile": "file", "RssShmem": "shmem", "VmRSS": "total"}
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in fields:
            found[fields[name]] = int(value.split()[0]) * 1024
    return found


# Raw pipelined shell ----------------------------------------------------------------------------


@dataclass
class Outcome:
    """What came back for one message sent by :class:`RawShell`."""

    index: int
    sent_at: float
    replies: list[dict[str, Any]] = field(default_factory=list)
    answered_at: float | None = None


class RawShell:
    """One DEALER socket on a kernel's shell (or control) port, signing with the connection
    file's key (or with ``session``).

    :meth:`pipeline` keeps up to ``window`` messages in flight, matches every reply to its
    request by parent ``msg_id`` and counts replies to nothing it sent (``strays``).
    """

    def __init__(
        self, connection_file: str, *, session: Session | None = None, channel: str = "shell"
    ) -> None:
        self.kc = BlockingKernelClient(connection_file=connection_file)
        self.kc.load_connection_file()
        self.session = session or self.kc.session
        connect = self.kc.connect_control if channel == "control" else self.kc.connect_shell
        self.socket = connect(identity=self.session.bsession)
        self.strays: list[dict[str, Any]] = []
        self.undecodable = 0

    def close(self) -> None:
        self.socket.close(linger=0)

    def message(self, msg_type: str, content: Any) -> dict[str, Any]:
        return self.session.msg(msg_type, content)

    def recv(self, timeout: float) -> dict[str, Any] | None:
        if not self.socket.poll(int(timeout * 1000), zmq.POLLIN):
            return None
        frames = self.socket.recv_multipart()
        try:
            _, parts = self.session.feed_identities(frames)
            return dict(self.session.deserialize(parts))
        except (ValueError, TypeError):
            self.undecodable += 1
            return {}

    def pipeline(
        self,
        messages: Iterable[dict[str, Any]],
        *,
        window: int = 64,
        settle: float = 2.0,
        timeout: float = 120.0,
        request_timeout: float = 30.0,
        on_reply: Callable[[int, dict[str, Any]], None] | None = None,
    ) -> list[Outcome]:
        """Send every message, ``window`` at a time; wait ``settle`` s after the last reply
        for late or duplicate replies. A message unanswered after ``request_timeout`` s gives
        up its place in the window (a reply that comes later is still recorded). Returns one
        :class:`Outcome` per message, in order."""
        pending: dict[str, Outcome] = {}
        outcomes: list[Outcome] = []
        by_id: dict[str, Outcome] = {}
        source = iter(messages)
        exhausted = False
        deadline = time.monotonic() + timeout
        while True:
            while not exhausted and len(pending) < window:
                msg = next(source, None)
                if msg is None:
                    exhausted = True
                    break
                outcome = Outcome(index=len(outcomes), sent_at=time.perf_counter())
                outcomes.append(outcome)
                msg_id = msg["header"]["msg_id"]
                pending[msg_id] = by_id[msg_id] = outcome
                self.session.send(self.socket, msg)
            if exhausted and not pending:
                break
            if time.monotonic() > deadline:
                break  # what is still pending is reported as unanswered
            reply = self.recv(0.5)
            if reply:
                self._take(reply, pending, by_id, on_reply)
            given_up = time.perf_counter() - request_timeout
            for msg_id in [k for k, o in pending.items() if o.sent_at < given_up]:
                del pending[msg_id]
        end = time.monotonic() + settle
        while time.monotonic() < end:
            reply = self.recv(max(0.0, end - time.monotonic()))
            if reply:
                self._take(reply, pending, by_id, on_reply)
        return outcomes

    def _take(
        self,
        reply: dict[str, Any],
        pending: dict[str, Outcome],
        by_id: dict[str, Outcome],
        on_reply: Callable[[int, dict[str, Any]], None] | None,
    ) -> None:
        parent = (reply.get("parent_header") or {}).get("msg_id")
        outcome = by_id.get(parent) if parent else None
        if outcome is None:
            self.strays.append(reply)
            return
        outcome.replies.append(reply)
        if outcome.answered_at is None:
            outcome.answered_at = time.perf_counter()
        pending.pop(str(parent), None)
        if on_reply is not None:
            on_reply(outcome.index, reply)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]
