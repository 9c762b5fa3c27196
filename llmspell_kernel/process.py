"""Standalone kernel processes: start (foreground or daemon), list, stop.

A kernel started here writes its connection file into the Jupyter runtime directory as
``llmspell-kernel-<id>.json`` (so ``jupyter console --existing <id>`` and
``LLMSpellClient.connect(<id>)`` find it), and this module keeps a small record of it
(id, pid, connection file, ip, start time) in ``<runtime dir>/llmspell/<id>.json``.
``list_kernels`` shows the live ones and prunes the records of dead ones.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jupyter_core.paths import jupyter_runtime_dir

from providers.errors import KernelConnectionError, LLMSpellError

from .kernelapp import LOOPBACK

log = logging.getLogger(__name__)

START_TIMEOUT = 30.0
STOP_GRACE = 5.0
CONNECTION_PREFIX = "llmspell-kernel-"

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


def start_kernel(
    *,
    daemon: bool,
    ip: str = "127.0.0.1",
    connection_file: Path | None = None,
    config_path: str | Path | None = None,
    on_ready: Callable[[KernelRecord], None] | None = None,
    timeout: float = START_TIMEOUT,
    encrypt: bool = False,
) -> KernelRecord:
    """Start a kernel process and wait until it answers.

    ``daemon=True`` detaches it (own session, output to ``<records dir>/<id>.log``) and
    returns its record. ``daemon=False`` runs it in the foreground: its output goes to this
    terminal, ``on_ready`` is called once it answers, and the call returns when the kernel
    exits (Ctrl-C stops it cleanly).

    ``encrypt=True`` turns on CurveZMQ transport encryption: the connection file (mode 0600)
    then also holds a Curve key pair, which ipykernel applies to its sockets and
    jupyter_client (8.10+) clients to theirs; clients without the keys cannot talk to it.
    """
    if ip not in LOOPBACK:
        log.warning(
            "the kernel will listen on %s, not on loopback: anyone who can reach it and read "
            "its connection file can run code as you, and %s",
            ip,
            "its traffic is encrypted (CurveZMQ)"
            if encrypt
            else "its traffic (code, outputs, prompts) crosses the network in plain text"
            " (see --encrypt)",
        )
    kernel_id = uuid.uuid4().hex[:8]
    runtime = Path(jupyter_runtime_dir())
    runtime.mkdir(parents=True, exist_ok=True, mode=0o700)
    cf = (connection_file or runtime / f"{CONNECTION_PREFIX}{kernel_id}.json").absolute()
    if cf.exists():
        raise KernelConnectionError(f"connection file {cf} already exists")
    cf.parent.mkdir(parents=True, exist_ok=True)
    if encrypt:
        _write_encrypted_connection_file(cf, ip)
    directory = records_dir()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    env = dict(os.environ)
    if config_path is not None:
        env["LLMSPELL_CONFIG"] = str(Path(config_path).expanduser().absolute())
    argv = [sys.executable, "-m", "llmspell_kernel", "-f", str(cf), f"--ip={ip}"]
    if daemon:
        with open(directory / f"{kernel_id}.log", "ab") as logfile:
            proc = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
    else:
        # Own session too: Ctrl-C in this terminal is ours to handle (a clean stop). The kernel's
        # own chatter (ipykernel's banner, logs) goes to stderr: stdout is the caller's, for
        # the connection details (one JSON document with --output json).
        proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sys.stderr.fileno() if _has_fileno(sys.stderr) else subprocess.DEVNULL,
            start_new_session=True,
        )
    _CHILDREN[proc.pid] = proc
    record = KernelRecord(
        id=kernel_id,
        pid=proc.pid,
        connection_file=cf,
        ip=ip,
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    _write_record(record)
    try:
        _wait_ready(proc, cf, timeout, directory / f"{kernel_id}.log" if daemon else None)
    except BaseException:
        _terminate(proc.pid)
        _forget(record)
        raise
    if on_ready is not None:
        on_ready(record)
    if daemon:
        return record
    try:
        proc.wait()
    except KeyboardInterrupt:
        stop_kernel(record.id)
    _reap(proc.pid)
    _forget(record)
    return replace(record, alive=False)


def list_kernels() -> list[KernelRecord]:
    """The live kernels started here; the records of dead ones are removed."""
    alive: list[KernelRecord] = []
    for record in _read_records():
        if _pid_alive(record.pid) and record.connection_file.exists():
            alive.append(record)
        else:
            _forget(record, keep_log=True)  # a kernel that died: its log says why
    return sorted(alive, key=lambda r: r.started_at)


def stop_kernel(id_or_file: str, *, grace: float = STOP_GRACE) -> KernelRecord:
    """Stop one kernel, named by id (or a unique id prefix) or connection file.

    Sends ``shutdown_request``; kills the process if it is still there after ``grace``
    seconds. Raises :class:`KernelConnectionError` when no such kernel is known.
    """
    record = _find(id_or_file)
    if _pid_alive(record.pid):
        try:
            from .client import LLMSpellClient

            with LLMSpellClient(record.connection_file, timeout=min(grace, 3.0)) as client:
                client.shutdown(timeout=min(grace, 3.0))
        except (LLMSpellError, OSError) as exc:
            log.info("kernel %s did not take a shutdown request: %s", record.id, exc)
        deadline = time.monotonic() + grace
        while _pid_alive(record.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _pid_alive(record.pid):
            _terminate(record.pid)
    _reap(record.pid)
    _forget(record)
    return replace(record, alive=False)


def stop_all(*, grace: float = STOP_GRACE) -> list[KernelRecord]:
    return [stop_kernel(record.id, grace=grace) for record in list_kernels()]


# Records --------------------------------------------------------------------------------------


def _write_record(record: KernelRecord) -> None:
    path = records_dir() / f"{record.id}.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        json.dump(record.to_dict(), file)


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


def _forget(record: KernelRecord, *, keep_log: bool = False) -> None:
    directory = records_dir()
    (directory / f"{record.id}.json").unlink(missing_ok=True)
    if not keep_log:
        (directory / f"{record.id}.log").unlink(missing_ok=True)
    if not _pid_alive(record.pid):
        record.connection_file.unlink(missing_ok=True)


def _find(id_or_file: str) -> KernelRecord:
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


def _write_encrypted_connection_file(cf: Path, ip: str) -> None:
    """A connection file (0600) with a new HMAC key and a CurveZMQ key pair; ports are
    picked now. The kernel reads it instead of writing its own."""
    import zmq
    from jupyter_client.connect import write_connection_file
    from jupyter_client.session import new_id_bytes

    if not zmq.has("curve"):
        raise KernelConnectionError(
            "CurveZMQ encryption is not available: this pyzmq's libzmq was built without it"
        )
    public, secret = zmq.curve_keypair()
    write_connection_file(
        str(cf), ip=ip, key=new_id_bytes(), curve_publickey=public, curve_secretkey=secret
    )


# Processes ------------------------------------------------------------------------------------


def _wait_ready(
    proc: subprocess.Popen[bytes], cf: Path, timeout: float, logfile: Path | None
) -> None:
    from .client import LLMSpellClient

    deadline = time.monotonic() + timeout
    while not cf.exists():
        if proc.poll() is not None:
            raise KernelConnectionError(
                f"the kernel process exited with code {proc.returncode}" + _tail(logfile)
            )
        if time.monotonic() > deadline:
            raise KernelConnectionError(f"the kernel did not start within {timeout:g} s")
        time.sleep(0.05)
    # The file is written after the sockets are bound; one answered kernel_info proves it.
    remaining = max(1.0, deadline - time.monotonic())
    try:
        LLMSpellClient(cf, timeout=remaining).close()
    except KernelConnectionError as exc:
        raise KernelConnectionError(f"{exc}{_tail(logfile)}") from exc


def _tail(logfile: Path | None) -> str:
    if logfile is None or not logfile.exists():
        return ""
    lines = logfile.read_text(encoding="utf-8", errors="replace").splitlines()[-10:]
    return ("\n" + "\n".join(lines)) if lines else ""


def _pid_alive(pid: int) -> bool:
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


def _terminate(pid: int) -> None:
    for sig, wait in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 2.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not _pid_alive(pid):
            _reap(pid)
            return


def _reap(pid: int) -> None:
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        child.poll()


def _has_fileno(stream: object) -> bool:
    try:
        stream.fileno()  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return False
    return True
