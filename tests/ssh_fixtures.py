"""A real OpenSSH server on 127.0.0.1 for the remote-kernel tests: Debian's ``openssh-server``
(installed here as root when it is missing), a host key and a client key made in a temp dir,
``sshd -D -f CONFIG`` on a free port, and an ssh client config (``$LLMSPELL_SSH``) that trusts
it. The server, and every session process it forked, is stopped at the end."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

SSHD = Path("/usr/sbin/sshd")
START_SECONDS = 30.0


def ensure_sshd() -> None:
    """Install Debian's openssh-server if sshd is missing (as root, quietly); skip the tests,
    saying why, where that cannot be done."""
    if SSHD.exists():
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("no /usr/sbin/sshd, and openssh-server cannot be installed here (not root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "openssh-server"]
    if subprocess.run(install, env=env, capture_output=True, timeout=600).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600)
        done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            pytest.skip(f"openssh-server cannot be installed: {done.stderr.strip()[-300:]}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class SSHServer:
    port: int
    process: subprocess.Popen[bytes]
    client_config: Path
    key: Path
    alias: str = "llmspell-test-host"
    """A Host entry of the client config: 127.0.0.1 on :attr:`port` as root."""

    @property
    def ssh_command(self) -> str:
        """``$LLMSPELL_SSH`` for clients of this server."""
        return f"ssh -F {self.client_config}"

    def kill(self) -> None:
        """Kill the server and the session processes it forked (a dropped connection)."""
        try:
            parent = psutil.Process(self.process.pid)
            children = parent.children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        for proc in [*children]:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        self.process.kill()
        self.process.wait(10)


def start_sshd(base: Path, address: str = "127.0.0.1") -> SSHServer:
    """sshd on a free port of ``address`` (a loopback address), with a new host and client key."""
    ensure_sshd()
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o700)
    for name in ("host_key", "client_key"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(base / name)],
            check=True, timeout=30,
        )  # fmt: skip
    shutil.copy(base / "client_key.pub", base / "authorized_keys")
    port = free_port()
    config = base / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress {address}\nHostKey {base / 'host_key'}\n"
        f"AuthorizedKeysFile {base / 'authorized_keys'}\nPidFile {base / 'sshd.pid'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\n"
        "AllowTcpForwarding yes\nLogLevel ERROR\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    process = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL)
    client_config = base / "ssh_config"
    server = SSHServer(port, process, client_config, base / "client_key")
    client_config.write_text(
        f"Host {server.alias}\n  HostName {address}\n  Port {port}\n  User root\n"
        f"Host *\n  IdentityFile {server.key}\n  IdentitiesOnly yes\n"
        "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n"
    )
    deadline = time.monotonic() + START_SECONDS
    while True:
        try:
            with socket.create_connection((address, port), timeout=1):
                return server
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError(f"sshd did not start (exit {process.poll()})") from None
            time.sleep(0.1)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHServer]:
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        if server.process.poll() is None:
            server.kill()
