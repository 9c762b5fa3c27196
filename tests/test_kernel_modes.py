"""Embedded and connection-file modes, and standalone kernel processes.

An embedded kernel (a thread of this process) and a kernel process reached through its
connection file give the same replies; a kernel started by ``process.start_kernel`` is found
by name the way ``jupyter console --existing`` finds it, listed, and stopped.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.connect import find_connection_file
from jupyter_core.paths import jupyter_runtime_dir

from llmspell_kernel.client import LLMSpellClient
from llmspell_kernel.process import start_kernel, stop_kernel
from llmspell_kernel.protocol import PROTOCOL_VERSION
from llmspell_kernel.records import KernelRecord, list_kernels
from providers.errors import ConfigError, KernelConnectionError, LLMSpellError
from tests.kernel_fixtures import GEMMA_ID, gemma_store, generate_in_thread

__all__ = ["gemma_store"]


@pytest.fixture
def models(gemma_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's environment (and that of kernels it starts) uses the Gemma store."""
    monkeypatch.setenv("LLMSPELL_MODELS", str(gemma_store))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    return gemma_store


@pytest.fixture
def daemon(models: Path) -> Iterator[KernelRecord]:
    record = start_kernel(daemon=True)
    try:
        yield record
    finally:
        if record.id in [r.id for r in list_kernels()]:
            stop_kernel(record.id)


def replies(client: LLMSpellClient) -> dict[str, Any]:
    """The replies to compare between modes (none of them loads a model)."""
    out: dict[str, Any] = {
        "list": client.model_request("list"),
        "status": client.model_request("status"),
        "info": client.model_request("info", model=GEMMA_ID),
        "available": client.model_request("available", backend="llamacpp"),
        "ps": client.model_request("ps"),
    }
    for name, kwargs in {
        "unknown-model": {"command": "info", "model": "nope@llamacpp"},
        "bad-spec": {"command": "info", "model": "@x"},
        "backend-down": {"command": "list", "backend": "ollama"},
        "bad-field": {"command": "pull", "model": 3},
    }.items():
        try:
            client.model_request(**kwargs)
        except LLMSpellError as exc:
            out[name] = (type(exc).__name__, str(exc).split("\n")[0])
    return out


def test_embedded_and_connection_file_give_the_same_replies(daemon: KernelRecord) -> None:
    with LLMSpellClient.connect(str(daemon.connection_file)) as remote:
        assert not remote.is_embedded
        over_the_file = replies(remote)
    with LLMSpellClient.embedded() as local:
        assert local.is_embedded
        embedded = replies(local)
    assert embedded == over_the_file
    assert GEMMA_ID in [m["id"] for m in embedded["list"]["models"]]
    assert embedded["unknown-model"][0] == "ModelNotFound"
    assert embedded["backend-down"][0] == "BackendUnavailable"
    assert embedded["bad-field"][0] == "InvalidRequest"


def test_started_kernel_is_found_by_name_listed_and_stopped(daemon: KernelRecord) -> None:
    runtime = Path(jupyter_runtime_dir())
    assert daemon.connection_file == runtime / f"llmspell-kernel-{daemon.id}.json"
    assert stat.S_IMODE(daemon.connection_file.stat().st_mode) == 0o600
    assert json.loads(daemon.connection_file.read_text())["ip"] == "127.0.0.1"
    assert [r.id for r in list_kernels()] == [daemon.id]

    # jupyter_client finds it by name, as `jupyter console --existing <id>` would.
    found = find_connection_file(daemon.id, path=[".", str(runtime)])
    assert Path(found) == daemon.connection_file
    plain = BlockingKernelClient(connection_file=found)
    plain.load_connection_file()
    plain.start_channels()
    try:
        plain.wait_for_ready(timeout=30)
        info = plain.kernel_info(reply=True, timeout=10)["content"]
        assert info["llmspell"]["protocol_version"] == PROTOCOL_VERSION
    finally:
        plain.stop_channels()

    with LLMSpellClient.connect(daemon.id) as client:
        assert client.connection_file == daemon.connection_file
        assert client.model_request("status")["backends"]["llamacpp"]["available"]

    stopped = stop_kernel(daemon.id)
    assert stopped.id == daemon.id and not stopped.alive
    assert list_kernels() == []
    assert not daemon.connection_file.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(daemon.pid, 0)


def test_list_prunes_dead_kernels(daemon: KernelRecord) -> None:
    os.kill(daemon.pid, 9)
    for _ in range(100):  # SIGKILL is asynchronous: give the process a moment to die
        if not list_kernels():
            break
        time.sleep(0.05)
    assert list_kernels() == []
    records = Path(jupyter_runtime_dir()) / "llmspell"
    assert not (records / f"{daemon.id}.json").exists()
    assert (records / f"{daemon.id}.log").exists(), "the log of a dead kernel is kept"


def test_a_kernel_with_its_own_connection_file_is_found_by_id(models: Path, tmp_path: Path) -> None:
    chosen = tmp_path / "elsewhere" / "my-kernel.json"
    record = start_kernel(daemon=True, connection_file=chosen)
    try:
        assert record.connection_file == chosen and chosen.exists()
        with LLMSpellClient.connect(record.id) as client:
            assert client.connection_file == chosen
            assert client.model_request("ps")["status"] == "ok"
    finally:
        stop_kernel(str(chosen))
    assert list_kernels() == [] and not chosen.exists()


def test_foreground_kernel_runs_until_stopped(models: Path) -> None:
    seen: list[KernelRecord] = []

    def ready(record: KernelRecord) -> None:
        seen.append(record)
        with LLMSpellClient.connect(record.id) as client:
            assert client.model_request("ps")["status"] == "ok"
        threading.Thread(target=stop_kernel, args=(record.id,)).start()

    finished = start_kernel(daemon=False, on_ready=ready)
    assert seen and finished.id == seen[0].id and not finished.alive
    assert list_kernels() == []


def test_stop_unknown_kernel() -> None:
    with pytest.raises(KernelConnectionError, match="no llmspell kernel 'nope'"):
        stop_kernel("nope")


def test_connect_to_nothing(tmp_path: Path) -> None:
    with pytest.raises(KernelConnectionError, match="no kernel connection file matching"):
        LLMSpellClient.connect("no-such-kernel")
    dead = tmp_path / "dead.json"
    dead.write_text(
        json.dumps(
            {
                "ip": "127.0.0.1",
                "transport": "tcp",
                "shell_port": 9,
                "iopub_port": 9,
                "stdin_port": 9,
                "control_port": 9,
                "hb_port": 9,
                "key": "k",
                "signature_scheme": "hmac-sha256",
            }
        )
    )
    with pytest.raises(KernelConnectionError, match="did not answer within 1 s"):
        LLMSpellClient.connect(str(dead), timeout=1.0)


def test_embedded_kernel_keeps_the_host_output(
    models: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outputs: list[tuple[str, str]] = []
    with LLMSpellClient.embedded() as client:
        info = json.loads(client.connection_file.read_text())
        assert info["ip"] == "127.0.0.1"
        assert stat.S_IMODE(client.connection_file.stat().st_mode) == 0o600
        print("from the host")
        result = client.execute(
            "import sys\nprint('from the kernel')\nprint('kernel error', file=sys.stderr)\n6 * 7",
            on_output=lambda name, text: outputs.append((name, text)),
        )
        print("host again", file=sys.stderr)
        connection_file = client.connection_file
    assert result.status == "ok"
    assert ("stdout", "from the kernel\n") in outputs
    assert ("stderr", "kernel error\n") in outputs
    assert ("stdout", "42\n") in outputs
    captured = capsys.readouterr()
    assert captured.out == "from the host\n"
    assert captured.err == "host again\n"
    assert not connection_file.exists()


def test_embedded_cell_errors_come_back(models: Path) -> None:
    with LLMSpellClient.embedded() as client:
        result = client.execute("1 / 0")
        assert result.status == "error" and result.ename == "ZeroDivisionError"
        assert result.traceback
        assert client.execute("2 + 2").outputs[0]["data"]["text/plain"] == "4"


def test_embedded_with_a_broken_config(tmp_path: Path) -> None:
    broken = tmp_path / "config.toml"
    broken.write_text("[providers.llamacpp]\nnope = 1\n")
    with pytest.raises(ConfigError, match="nope"):
        LLMSpellClient.embedded(broken)


def test_embedded_interrupt_stops_a_generation_without_signalling_the_host(
    models: Path,
) -> None:
    from providers.errors import Cancelled

    with LLMSpellClient.embedded() as client:
        thread, started, outcome = generate_in_thread(client)
        try:
            assert started.wait(60), outcome
            client.interrupt()  # a SIGINT here would raise KeyboardInterrupt in this test
            thread.join(10)
        finally:
            thread.join(120)
        assert len(outcome) == 1 and isinstance(outcome[0], Cancelled), outcome
        again = client.model_request(
            "generate", model=GEMMA_ID, prompt="Hi", options={"max_tokens": 4}
        )
        assert again["text"]


def test_embedded_interrupt_stops_a_busy_cell(models: Path) -> None:
    with LLMSpellClient.embedded() as client:
        running = threading.Event()
        results: list[Any] = []
        code = (
            "import time\nprint('running', flush=True)\nstarted = time.monotonic()\n"
            "while time.monotonic() - started < 60: pass"
        )

        def run() -> None:
            results.append(client.execute(code, on_output=lambda *_: running.set(), timeout=90))

        cell = threading.Thread(target=run)
        cell.start()
        try:
            assert running.wait(30)
            client.interrupt()
            cell.join(10)
        finally:
            cell.join(90)
        assert results and results[0].status == "error", results
        assert results[0].ename == "KeyboardInterrupt"
        assert client.execute("3 * 3").outputs[0]["data"]["text/plain"] == "9"


def test_a_kernel_that_dies_mid_request_is_reported(daemon: KernelRecord) -> None:
    outcome: list[BaseException | Any] = []
    with LLMSpellClient.connect(daemon.id) as client:
        client.heartbeat_grace = 1.0

        def run() -> None:
            try:
                outcome.append(client.execute("import time; time.sleep(60)", timeout=50))
            except BaseException as exc:
                outcome.append(exc)

        waiting = threading.Thread(target=run)
        waiting.start()
        time.sleep(0.5)
        os.kill(daemon.pid, 9)
        waiting.join(30)
        assert not waiting.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], KernelConnectionError), outcome
    assert "died" in str(outcome[0])


def test_a_kernel_with_a_broken_config_answers_with_the_config_error(
    models: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "config.toml"
    broken.write_text('default_backend = "llamacpp"\n[providers.ollama]\ntimeout_seconds = "x"\n')
    record = start_kernel(daemon=True, config_path=broken)
    try:
        with LLMSpellClient.connect(record.id) as client:
            with pytest.raises(ConfigError, match=r"providers\.ollama\.timeout_seconds"):
                client.model_request("list")
            assert client.execute("1 + 1").status == "ok"  # the kernel itself works
    finally:
        stop_kernel(record.id)


def test_timeouts_raise_and_late_replies_are_dropped(models: Path) -> None:
    with LLMSpellClient.embedded() as client:
        with pytest.raises(KernelConnectionError, match=r"no reply to execute .* within 0\.3 s"):
            client.execute("import time; time.sleep(1.5)", timeout=0.3)
        # The late reply of that cell is not taken for the reply of the next request.
        result = client.execute("'next'", timeout=30)
        assert result.outputs[0]["data"]["text/plain"] == "'next'"
        assert client.model_request("ps", timeout=10)["status"] == "ok"


def test_embedded_kernel_leaves_the_host_environment_alone(models: Path) -> None:
    before = dict(os.environ)
    with LLMSpellClient.embedded() as client:
        assert dict(os.environ) == before  # no FORCE_COLOR, TERM, PAGER... for the host
        assert client.execute("1").status == "ok"
    assert dict(os.environ) == before
