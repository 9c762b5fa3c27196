"""Standalone kernel processes: start (foreground or daemon), stop.

A kernel started here writes its connection file into the Jupyter runtime directory as
``llmspell-kernel-<id>.json`` (so ``jupyter console --existing <id>`` and
``LLMSpellClient.connect(<id>)`` find it), and leaves a record of it (see
:mod:`llmspell_kernel.records`, which also lists the live ones).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from jupyter_core.paths import jupyter_runtime_dir

from providers.errors import KernelConnectionError

from .client import LLMSpellClient
from .kernelapp import LOOPBACK
from .records import (
    KernelRecord,
    find_record,
    forget_record,
    list_kernels,
    pid_alive,
    reap,
    records_dir,
    track_child,
    write_record,
)

log = logging.getLogger(__name__)

START_TIMEOUT = 30.0
STOP_GRACE = 5.0
CONNECTION_PREFIX = "llmspell-kernel-"


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
    track_child(proc)
    record = KernelRecord(
        id=kernel_id,
        pid=proc.pid,
        connection_file=cf,
        ip=ip,
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    write_record(record)
    try:
        _wait_ready(proc, cf, timeout, directory / f"{kernel_id}.log" if daemon else None)
    except BaseException:
        _terminate(proc.pid)
        forget_record(record)
        raise
    if daemon:
        if on_ready is not None:
            on_ready(record)
        return record
    try:
        if on_ready is not None:
            on_ready(record)
        proc.wait()
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM/SIGHUP turned into one by the CLI
        with _signals_held():
            stop_kernel(record.id)
    reap(proc.pid)
    forget_record(record)
    return replace(record, alive=False)


def stop_kernel(id_or_file: str, *, grace: float = STOP_GRACE) -> KernelRecord:
    """Stop one kernel, named by id (or a unique id prefix) or connection file.

    Sends it SIGTERM, which an llmspell kernel takes as a clean shutdown (running model
    requests cancelled, backends closed); kills it if it is still there after ``grace``
    seconds. No client round trip, so a kernel busy with a generation, or a machine busy with
    other work, does not slow this down. Raises :class:`KernelConnectionError` when no such
    kernel is known.
    """
    record = find_record(id_or_file)
    if pid_alive(record.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while pid_alive(record.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid_alive(record.pid):
            log.info("kernel %s still runs %g s after SIGTERM: killing it", record.id, grace)
            _terminate(record.pid)
    reap(record.pid)
    forget_record(record)
    return replace(record, alive=False)


def stop_all(*, grace: float = STOP_GRACE) -> list[KernelRecord]:
    return [stop_kernel(record.id, grace=grace) for record in list_kernels()]


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


def _terminate(pid: int) -> None:
    for sig, wait in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 2.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not pid_alive(pid):
            reap(pid)
            return


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """While a kernel is being stopped, another Ctrl-C or SIGTERM must not cut that short
    (and leave the kernel running): they are ignored until it is done."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in held}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _has_fileno(stream: object) -> bool:
    try:
        stream.fileno()  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return False
    return True
