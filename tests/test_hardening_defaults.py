"""Safe defaults: loopback only, private connection files, a loud warning for any other
address, and CurveZMQ transport encryption when asked for.

Checked on real kernels: a daemon started by ``process.start_kernel``, an embedded kernel, a
kernel launched by jupyter_client from the kernelspec, and ``llmspell kernel start``. The
listening sockets are read from the kernel process itself (psutil), and encryption is checked
on the wire: a relay between client and kernel records the bytes of the shell channel.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import pytest
import zmq
from jupyter_client.blocking.client import BlockingKernelClient

from llmspell_kernel.client import LLMSpellClient
from llmspell_kernel.process import start_kernel, stop_all, stop_kernel
from llmspell_kernel.records import KernelRecord, list_kernels, records_dir
from tests.cli_fixtures import run_cli
from tests.hardening_kernel_fixtures import record_figures
from tests.kernel_fixtures import kernel_environment, start_kernel_process

PORTS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "models").mkdir()
    monkeypatch.setenv("LLMSPELL_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    return tmp_path


@pytest.fixture
def daemon(isolated: Path) -> Iterator[KernelRecord]:
    record = start_kernel(daemon=True)
    try:
        yield record
    finally:
        stop_all()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def listening(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket the process (and its children) listens on."""
    found = set()
    process = psutil.Process(pid)
    for proc in (process, *process.children(recursive=True)):
        for conn in proc.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN:
                found.add((conn.laddr.ip, conn.laddr.port))
    return found


def test_a_daemon_kernel_listens_on_loopback_only_with_a_private_connection_file(
    daemon: KernelRecord,
) -> None:
    info = json.loads(daemon.connection_file.read_text())
    sockets = listening(daemon.pid)
    ports = {info[name] for name in PORTS}
    record_figures(
        "defaults_daemon",
        {
            "ip": info["ip"],
            "transport": info["transport"],
            "signature_scheme": info["signature_scheme"],
            "key_bytes": len(info["key"]),
            "connection_file_mode": oct(mode(daemon.connection_file)),
            "listening": sorted(f"{ip}:{port}" for ip, port in sockets),
        },
    )
    assert daemon.ip == info["ip"] == "127.0.0.1" and info["transport"] == "tcp"
    assert info["signature_scheme"] == "hmac-sha256" and len(info["key"]) >= 32
    assert mode(daemon.connection_file) == 0o600
    assert mode(records_dir()) & 0o777 == 0o700
    assert mode(records_dir() / f"{daemon.id}.json") == 0o600
    assert ports <= {port for _, port in sockets}, (ports, sockets)
    assert {ip for ip, _ in sockets} == {"127.0.0.1"}, sockets


def test_an_embedded_kernel_is_private_too(isolated: Path) -> None:
    with LLMSpellClient.embedded() as client:
        path = client.connection_file
        info = json.loads(path.read_text())
        sockets = listening(os.getpid())
        assert mode(path) == 0o600
        assert mode(path.parent) & 0o777 == 0o700  # (jupyter may add the sticky bit)
        assert info["ip"] == "127.0.0.1"
        ours = {info[name] for name in PORTS}
        assert {ip for ip, port in sockets if port in ours} == {"127.0.0.1"}
    assert not path.exists()


def test_a_kernel_launched_from_the_kernelspec_has_a_private_connection_file(
    tmp_path: Path,
) -> None:
    (tmp_path / "models").mkdir()
    kernel = start_kernel_process(tmp_path, kernel_environment(tmp_path, tmp_path / "models"))
    try:
        path = Path(kernel.connection_file)
        assert mode(path) == 0o600
        assert json.loads(path.read_text())["ip"] == "127.0.0.1"
        assert "curve_publickey" not in json.loads(path.read_text())  # not asked for
    finally:
        kernel.stop()


def test_a_kernel_manager_asking_for_transport_encryption_gets_an_encrypted_kernel(
    tmp_path: Path,
) -> None:
    """The kernelspec declares ``supported_encryption: ["curve"]``, so jupyter_client's
    ``transport_encryption`` (``auto`` or ``required``) provisions Curve keys for it."""
    (tmp_path / "models").mkdir()
    env = kernel_environment(tmp_path, tmp_path / "models")
    kernel = start_kernel_process(tmp_path, env, transport_encryption="required")
    try:
        info = json.loads(Path(kernel.connection_file).read_text())
        assert {"curve_publickey", "curve_secretkey"} <= set(info)
        with LLMSpellClient(kernel.connection_file) as client:
            assert client.status().backends["llamacpp"].available
    finally:
        kernel.stop()


def test_a_non_loopback_address_gets_a_loud_warning(
    isolated: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="llmspell_kernel.process"):
        record = start_kernel(daemon=True, ip="0.0.0.0")
    try:
        warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert any("not on loopback" in m and "plain text" in m for m in warned), warned
        # The kernel says it too, in its own log.
        log_text = (records_dir() / f"{record.id}.log").read_text()
        assert "listening on 0.0.0.0" in log_text
        assert json.loads(record.connection_file.read_text())["ip"] == "0.0.0.0"
    finally:
        stop_kernel(record.id)

    # And the command line prints it on stderr.
    started = run_cli(["kernel", "start", "--daemon", "--ip", "0.0.0.0"], dict(os.environ))
    try:
        assert started.returncode == 0, started.stderr
        assert "WARNING" in started.stderr and "0.0.0.0" in started.stderr
        assert "not on loopback" in started.stderr and "plain text" in started.stderr
    finally:
        stop_all()
    assert list_kernels() == []


# CurveZMQ ---------------------------------------------------------------------------------------


class Relay:
    """A TCP relay on 127.0.0.1 that forwards to ``port`` and keeps every byte it carried."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.carried = bytearray()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                with self._lock:
                    self.carried += data
                sink.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()


def through_relay(record: KernelRecord, tmp_path: Path) -> tuple[Relay, Path]:
    info = json.loads(record.connection_file.read_text())
    relay = Relay(info["shell_port"])
    info["shell_port"] = relay.port
    relayed = tmp_path / f"relayed-{record.id}.json"
    relayed.write_text(json.dumps(info))
    relayed.chmod(0o600)
    return relay, relayed


SECRET = "TOP-SECRET-PROMPT-4711"


def sniff(record: KernelRecord, tmp_path: Path) -> tuple[bytes, bytes]:
    """What crossed the shell channel while a cell holding ``SECRET`` ran, and what a local
    eavesdropper without any key got by subscribing to the IOPub port."""
    relay, relayed = through_relay(record, tmp_path)
    info = json.loads(record.connection_file.read_text())
    context = zmq.Context()
    eavesdropper = context.socket(zmq.SUB)
    eavesdropper.setsockopt(zmq.SUBSCRIBE, b"")
    eavesdropper.connect(f"tcp://127.0.0.1:{info['iopub_port']}")
    overheard = bytearray()
    try:
        with LLMSpellClient(relayed) as client:
            result = client.execute(f"secret = {SECRET!r}; print(secret); secret.lower()")
            assert result.status == "ok"
            assert result.outputs[-1]["data"]["text/plain"] == repr(SECRET.lower())
            assert client.model_request("ps")["status"] == "ok"
        while eavesdropper.poll(500):
            overheard += b"".join(eavesdropper.recv_multipart())
        return bytes(relay.carried), bytes(overheard)
    finally:
        relay.close()
        eavesdropper.close(linger=0)
        context.term()


def test_curve_encryption_hides_the_traffic_and_shuts_out_clients_without_the_keys(
    isolated: Path, tmp_path: Path
) -> None:
    plain = start_kernel(daemon=True)
    encrypted = start_kernel(daemon=True, encrypt=True)
    try:
        info = json.loads(encrypted.connection_file.read_text())
        assert {"curve_publickey", "curve_secretkey"} <= set(info)
        assert mode(encrypted.connection_file) == 0o600
        assert {ip for ip, _ in listening(encrypted.pid)} == {"127.0.0.1"}

        clear_bytes, clear_iopub = sniff(plain, tmp_path)
        secret_bytes, secret_iopub = sniff(encrypted, tmp_path)

        # A client that has the HMAC key but not the Curve keys gets nowhere.
        for name in ("curve_publickey", "curve_secretkey"):
            info.pop(name)
        keyless = tmp_path / "keyless.json"
        keyless.write_text(json.dumps(info))
        outsider = BlockingKernelClient(connection_file=str(keyless))
        outsider.load_connection_file()
        outsider.start_channels()
        # Without a finished handshake the shell socket has no peer, and a DEALER's send then
        # blocks for ever (wait_for_ready's timeout does not cover it): bound the send too.
        outsider.shell_channel.socket.setsockopt(zmq.SNDTIMEO, 3000)
        try:
            with pytest.raises((RuntimeError, zmq.Again)):
                outsider.wait_for_ready(timeout=3)
        finally:
            outsider.stop_channels()
        with LLMSpellClient(encrypted.connection_file) as insider:
            assert insider.model_request("status")["status"] == "ok"
    finally:
        stop_all()
    record_figures(
        "defaults_curve",
        {
            "plain_shell_bytes": len(clear_bytes),
            "plain_secret_visible": SECRET.encode() in clear_bytes,
            "encrypted_shell_bytes": len(secret_bytes),
            "encrypted_secret_visible": SECRET.encode() in secret_bytes,
            "plain_iopub_overheard_without_key": SECRET.encode() in clear_iopub,
            "encrypted_iopub_overheard_without_key": SECRET.encode() in secret_iopub,
        },
    )
    # IOPub is a PUB socket: without encryption anyone who can reach the port reads the
    # outputs, key or no key (the HMAC signs, it does not hide). With Curve, nothing.
    assert SECRET.encode() in clear_iopub
    assert secret_iopub == b""
    assert SECRET.encode() in clear_bytes, "the relay sees plain traffic"
    assert len(secret_bytes) > 1000
    assert SECRET.encode() not in secret_bytes
    assert b"execute_request" not in secret_bytes and b"model_request" not in secret_bytes
