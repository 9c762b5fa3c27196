"""Kernels on another host, through SSH, against a real OpenSSH server on 127.0.0.1
(tests/ssh_fixtures.py) and a daemon kernel bound to loopback: ``--ssh`` with a name, the short
form ``user@host:NAME`` and ``user@host`` (found by asking the host's ``llmspell kernel list``),
streaming and a cancel through the tunnel, and a server killed mid-stream: a clear
``KernelConnectionError`` within the client's bounds, never a hang."""

from __future__ import annotations

import json
import shlex
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmspell_kernel.client import LLMSpellClient
from llmspell_kernel.tunnel import REMOTE_ENV, SSH_ENV, SSHTarget
from providers.errors import Cancelled, KernelConnectionError
from providers.options import GenerationOptions
from tests import cli_fixtures
from tests.cli_fixtures import GEMMA_SPEC, LLMSPELL, CliSession, run_cli
from tests.ssh_fixtures import SSHServer, sshd, start_sshd

cli_session = cli_fixtures.cli_session
daemon = cli_fixtures.daemon
__all__ = ["cli_session", "daemon", "sshd"]  # fixtures, used by name

pytestmark = [pytest.mark.model, pytest.mark.timeout(300)]

_REMOTE_VARIABLES = ("XDG_", "JUPYTER_", "LLMSPELL_", "HF_", "OLLAMA_", "IPYTHONDIR")


def remote_llmspell(env: dict[str, str]) -> str:
    """The llmspell "on the host": this one, with the session's directories (an SSH session
    starts from the server's environment, not the test's)."""
    kept = [f"{k}={v}" for k, v in env.items() if k.startswith(_REMOTE_VARIABLES)]
    return shlex.join(["env", *kept, str(LLMSPELL)])


@pytest.fixture
def ssh_env(
    cli_session: CliSession, sshd: SSHServer, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """The CLI's environment for the host ``sshd``; this process gets it too (for the client
    API)."""
    env = {
        **cli_session.env,
        SSH_ENV: sshd.ssh_command,
        REMOTE_ENV: remote_llmspell(cli_session.env),
    }
    for key in (SSH_ENV, REMOTE_ENV):
        monkeypatch.setenv(key, env[key])
    return env


def test_the_cli_reaches_the_kernel_by_name_and_by_the_short_forms(
    ssh_env: dict[str, str], daemon: dict[str, Any], sshd: SSHServer
) -> None:
    kernel = str(daemon["id"])
    by_ssh = run_cli(
        ["--ssh", f"root@127.0.0.1:{sshd.port}", "--connect", kernel,
         "-o", "json", "model", "list"],
        ssh_env,
    )  # fmt: skip
    assert by_ssh.returncode == 0, by_ssh.stderr
    assert "gemma3-270m" in [m["id"] for m in json.loads(by_ssh.stdout)["models"]]
    short = run_cli(
        ["--connect", f"root@{sshd.alias}:{kernel}", "prompt", "--raw", "-m", GEMMA_SPEC,
         "--max-tokens", "8", "-t", "0", "The sea is"],
        ssh_env,
    )  # fmt: skip
    assert short.returncode == 0, short.stderr
    assert short.stdout.strip()
    newest = run_cli(["--connect", f"root@{sshd.alias}", "model", "ps"], ssh_env)
    assert newest.returncode == 0, newest.stderr
    missing = run_cli(["--connect", f"root@{sshd.alias}:no-such-kernel", "model", "ps"], ssh_env)
    assert missing.returncode != 0
    assert "no running llmspell kernel named 'no-such-kernel' on llmspell-test-host" in (
        missing.stderr
    )


def long_generation(
    client: LLMSpellClient,
) -> tuple[threading.Thread, threading.Event, list[BaseException]]:
    """A 2,000-token generation on a thread: the thread, an event set at its first text, and
    the list its exception goes to."""
    started = threading.Event()
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            client.generate(
                GEMMA_SPEC,
                prompt="Once upon a time",
                options=GenerationOptions(max_tokens=2000),
                on_text=lambda _: started.set(),
            )
        except BaseException as exc:  # the thread's outcome, checked by the test
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, started, outcome


@pytest.fixture
def tunnelled(
    ssh_env: dict[str, str], daemon: dict[str, Any], sshd: SSHServer
) -> Iterator[LLMSpellClient]:
    target = SSHTarget.parse(f"root@127.0.0.1:{sshd.port}")
    client = LLMSpellClient.connect_ssh(target, str(daemon["id"]))
    try:
        yield client
    finally:
        client.close()


def test_streaming_and_cancel_go_through_the_tunnel(
    tunnelled: LLMSpellClient, daemon: dict[str, Any]
) -> None:
    assert tunnelled.tunnel is not None and not tunnelled.on_this_machine
    local = json.loads(tunnelled.connection_file.read_text())
    remote = json.loads(Path(daemon["connection_file"]).read_text())
    assert local["shell_port"] != remote["shell_port"]  # the client talks to the forwards
    pieces: list[str] = []
    options = GenerationOptions(max_tokens=12, temperature=0.0)
    result = tunnelled.generate(
        GEMMA_SPEC, prompt="The sea is", options=options, on_text=pieces.append
    )
    assert len(pieces) >= 1 and "".join(pieces) == result.text

    thread, started, outcome = long_generation(tunnelled)
    assert started.wait(120)
    assert tunnelled.cancel().cancelled
    thread.join(60)
    assert not thread.is_alive() and isinstance(outcome[0], Cancelled)


def test_a_dropped_tunnel_is_a_clear_error_not_a_hang(
    ssh_env: dict[str, str],
    daemon: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    own = start_sshd(tmp_path / "sshd")  # this test kills its server
    monkeypatch.setenv(SSH_ENV, own.ssh_command)
    try:
        target = SSHTarget.parse(f"root@127.0.0.1:{own.port}")
        client = LLMSpellClient.connect_ssh(target, str(daemon["id"]))
        thread, started, outcome = long_generation(client)
        try:
            assert started.wait(120)
            killed = time.monotonic()
            own.kill()
            thread.join(60)
            assert not thread.is_alive()
            assert time.monotonic() - killed < 30
            assert isinstance(outcome[0], KernelConnectionError)
            assert f"the SSH tunnel to root@127.0.0.1:{own.port} closed" in str(outcome[0])
        finally:
            client.close()
    finally:
        if own.process.poll() is None:
            own.kill()
    # The kernel is fine: the next client (no tunnel) is answered at once.
    with LLMSpellClient.connect(str(daemon["connection_file"])) as direct:
        assert direct.ps().models is not None
