"""Kernels on other hosts, reached through SSH: the five channels tunnelled as
``jupyter console --existing FILE --ssh HOST`` tunnels them, and the kernel found on the host.

:class:`SSHTarget` is where to go (``[user@]host[:port]``, a key). :func:`open_tunnel` starts one
``ssh -N`` with a local forward per port of a connection file and writes a local connection file
that points at the forwards (same key, ports on 127.0.0.1). :func:`remote_connection` asks the
host for its kernels (``llmspell -o json kernel list`` over SSH) and reads the connection file of
the one wanted, the newest when no name is given.

The ``ssh`` program is ``$LLMSPELL_SSH`` (default ``ssh``; e.g. ``ssh -F ~/.ssh/lab_config``, as
``GIT_SSH_COMMAND``), and the remote ``llmspell`` is ``$LLMSPELL_REMOTE_LLMSPELL`` (default
``llmspell``: a non-interactive SSH session may not have the venv on its PATH). Without a terminal
ssh runs with ``BatchMode=yes`` (keys or an agent; a password prompt nobody can answer fails at
once instead of hanging). A tunnel whose ssh exits (the server went away, the network dropped)
makes the client fail with the reason ssh gave, within the heartbeat's grace.
"""

from __future__ import annotations

import collections
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from providers.errors import KernelConnectionError

PORT_NAMES = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
READY_SECONDS = 30.0
"""How long the forwards may take to open (the SSH handshake, a slow network)."""
SSH_ENV = "LLMSPELL_SSH"
REMOTE_ENV = "LLMSPELL_REMOTE_LLMSPELL"
_PORT = re.compile(r"^(?P<destination>[^:]+):(?P<port>\d+)$")


@dataclass(frozen=True)
class SSHTarget:
    """An SSH destination: ``[user@]host``, a port, a key file."""

    destination: str
    port: int | None = None
    key: Path | None = None

    @classmethod
    def parse(cls, text: str, key: str | Path | None = None) -> SSHTarget:
        """``[user@]host[:port]``; :class:`KernelConnectionError` for anything else."""
        match = _PORT.match(text)
        destination, port = (match["destination"], int(match["port"])) if match else (text, None)
        if not destination or destination.startswith("-") or any(c.isspace() for c in text):
            raise KernelConnectionError(f"not an SSH destination: {text!r} (user@host[:port])")
        return cls(destination, port, None if key is None else Path(key).expanduser())

    @property
    def host(self) -> str:
        return self.destination.rpartition("@")[2]

    def command(self, *extra: str) -> list[str]:
        """The ssh command line to this target, with ``extra`` options before the destination."""
        args = [*shlex.split(os.environ.get(SSH_ENV) or "ssh")]
        if not sys.stdin.isatty():
            args += ["-o", "BatchMode=yes"]
        args += ["-o", "ConnectTimeout=15"]
        if self.port is not None:
            args += ["-p", str(self.port)]
        if self.key is not None:
            args += ["-i", str(self.key)]
        return [*args, *extra, self.destination]

    def __str__(self) -> str:
        return self.destination if self.port is None else f"{self.destination}:{self.port}"


def remote_spec(value: str) -> tuple[SSHTarget, str | None] | None:
    """``user@host:NAME`` or ``user@host`` (as ``--connect`` takes them): the target and the
    kernel's name (None: the newest); None when ``value`` names a local file or kernel."""
    if "@" not in value or Path(value).expanduser().exists():
        return None
    destination, _, name = value.partition(":")
    return SSHTarget.parse(destination), (name or None)


def run_remote(target: SSHTarget, command: list[str], timeout: float = 60.0) -> str:
    """Run ``command`` on the target (through its login shell); its stdout."""
    remote = " ".join(shlex.quote(part) for part in command)
    try:
        done = subprocess.run(
            [*target.command(), remote],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise KernelConnectionError(f"ssh {target}: no answer within {timeout:g} s") from None
    except OSError as exc:
        raise KernelConnectionError(f"cannot run ssh: {exc}") from exc
    if done.returncode != 0:
        reason = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "no message"
        raise KernelConnectionError(
            f"ssh {target} {remote!r} failed (exit {done.returncode}): {reason}"
        )
    return done.stdout


def remote_connection(target: SSHTarget, name: str | None) -> dict[str, Any]:
    """The connection info of the llmspell kernel ``name`` (its ID, or part of its connection
    file's name) on the target, else of the newest one there."""
    llmspell = shlex.split(os.environ.get(REMOTE_ENV) or "llmspell")
    listing = run_remote(target, [*llmspell, "-o", "json", "kernel", "list"])
    try:
        kernels = [k for k in json.loads(listing)["kernels"] if k.get("alive")]
    except (ValueError, KeyError, TypeError) as exc:
        raise KernelConnectionError(
            f"{target}: `llmspell kernel list` did not answer JSON ({exc}); set"
            f" ${REMOTE_ENV} to the llmspell program there"
        ) from None
    if name is not None:
        kernels = [k for k in kernels if k["id"] == name or name in Path(k["connection_file"]).name]
    if not kernels:
        which = f"named {name!r} " if name else ""
        raise KernelConnectionError(
            f"no running llmspell kernel {which}on {target.host} (start one there with"
            " `llmspell kernel start --daemon`)"
        )
    chosen = max(kernels, key=lambda k: str(k.get("started_at") or ""))
    text = run_remote(target, ["cat", str(chosen["connection_file"])])
    try:
        info: dict[str, Any] = json.loads(text)
    except ValueError as exc:
        raise KernelConnectionError(
            f"{target}: {chosen['connection_file']} is not a connection file ({exc})"
        ) from None
    return info


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class SSHTunnel:
    """One ``ssh -N`` process forwarding local ports to a kernel's ports on the target, and
    the local connection file that points at them."""

    def __init__(self, target: SSHTarget, process: subprocess.Popen[bytes], file: Path) -> None:
        self.target = target
        self.process = process
        self.connection_file = file
        self._errors: collections.deque[str] = collections.deque(maxlen=5)
        self._reader = threading.Thread(target=self._read_errors, daemon=True, name="ssh-log")
        self._reader.start()

    def _read_errors(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            text = line.decode("utf-8", "replace").strip()
            if text:
                self._errors.append(text)

    def alive(self) -> bool:
        return self.process.poll() is None

    def closed_message(self) -> str:
        """Why the tunnel is gone, in ssh's words."""
        code = self.process.poll()
        said = f": {self._errors[-1]}" if self._errors else ""
        return f"the SSH tunnel to {self.target} closed (ssh exit {code}){said}"

    def close(self) -> None:
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(2)
        if self.process.stderr is not None:
            self.process.stderr.close()
        self.connection_file.unlink(missing_ok=True)
        try:
            self.connection_file.parent.rmdir()
        except OSError:
            pass


def open_tunnel(target: SSHTarget, info: dict[str, Any]) -> SSHTunnel:
    """Forward each port of the connection ``info`` (a kernel's, as seen on the target) from
    127.0.0.1 here; returns the tunnel once every forward accepts connections."""
    if info.get("transport", "tcp") != "tcp":
        raise KernelConnectionError("only tcp kernels can be reached through SSH (not ipc)")
    try:
        remote = {name: int(info[name]) for name in PORT_NAMES}
    except (KeyError, TypeError, ValueError) as exc:
        raise KernelConnectionError(f"the connection info has no {exc}") from None
    ip = str(info.get("ip") or "127.0.0.1")
    ip = "127.0.0.1" if ip in ("0.0.0.0", "*", "") else ip
    local = dict(zip(PORT_NAMES, _free_ports(len(PORT_NAMES)), strict=True))
    forwards = [f"-L127.0.0.1:{local[n]}:{ip}:{remote[n]}" for n in PORT_NAMES]
    options = ["-N", "-o", "ExitOnForwardFailure=yes", "-o", "ServerAliveInterval=5"]
    options += ["-o", "ServerAliveCountMax=3", *forwards]
    try:
        process = subprocess.Popen(
            target.command(*options), stdin=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
    except OSError as exc:
        raise KernelConnectionError(f"cannot run ssh: {exc}") from exc
    directory = Path(tempfile.mkdtemp(prefix="llmspell-ssh-"))
    file = directory / "kernel.json"
    local_info = {**info, **local, "ip": "127.0.0.1", "transport": "tcp"}
    fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(local_info, handle)
    tunnel = SSHTunnel(target, process, file)
    try:
        _wait_for_forwards(tunnel, list(local.values()))
    except BaseException:
        tunnel.close()
        raise
    return tunnel


def _wait_for_forwards(tunnel: SSHTunnel, ports: list[int]) -> None:
    deadline = time.monotonic() + READY_SECONDS
    waiting = list(ports)
    while waiting:
        if not tunnel.alive():
            raise KernelConnectionError(tunnel.closed_message())
        if time.monotonic() > deadline:
            raise KernelConnectionError(
                f"the SSH tunnel to {tunnel.target} did not open within {READY_SECONDS:g} s"
            )
        try:
            with socket.create_connection(("127.0.0.1", waiting[0]), timeout=1.0):
                waiting.pop(0)
        except OSError:
            time.sleep(0.1)
