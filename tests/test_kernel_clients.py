"""One kernel, many clients (issue 16): a cancel stops one request and nothing else, the work of
a client that is gone stops (its lease runs out), and nothing is left behind per client.

All against a real kernel subprocess with the real Gemma model; clients are LLMSpellClients in
this process or ``llmspell --connect`` CLIs and small client processes that are SIGKILLed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from llmspell_kernel.client import LLMSpellClient
from providers.errors import Cancelled, InvalidRequest
from tests.kernel_fixtures import (
    GEMMA_ID,
    KernelProcess,
    gemma_client,
    gemma_kernel,
    gemma_store,
    generate_in_thread,
)

__all__ = ["gemma_client", "gemma_kernel", "gemma_store"]

pytestmark = [pytest.mark.model, pytest.mark.timeout(600)]

VENV_BIN = Path(sys.executable).parent
GONE_BOUND = 30.0
"""Seconds within which the work of a dead client must have stopped (its lease is 10 s, looked
at every second; the rest is for a busy machine)."""


def requests_of(client: LLMSpellClient, session: str | None = None) -> list[Any]:
    rows = client.ps(timeout=30).requests
    return [row for row in rows if session is None or row.session == session]


def session_of(client: LLMSpellClient) -> str:
    return str(client.kc.session.session)


def wait_until(condition: Any, bound: float, step: float = 0.2) -> float:
    """Seconds until ``condition()`` held; fails after ``bound``."""
    began = time.monotonic()
    while not condition():
        if time.monotonic() - began > bound:
            pytest.fail(f"not within {bound} s")
        time.sleep(step)
    return time.monotonic() - began


@pytest.fixture
def second(kernel: KernelProcess) -> Iterator[LLMSpellClient]:
    with LLMSpellClient(kernel.connection_file, timeout=30) as other:
        yield other


@pytest.fixture
def observer(kernel: KernelProcess) -> Iterator[LLMSpellClient]:
    """A client that only looks (``ps``): a client's own subshell answers its requests one
    after another, so the one that generates cannot also ask what runs."""
    with LLMSpellClient(kernel.connection_file, timeout=30) as looking:
        yield looking


def test_a_cancel_stops_one_request_and_the_other_clients_generation_completes(
    client: LLMSpellClient, second: LLMSpellClient, observer: LLMSpellClient
) -> None:
    thread, started, outcome = generate_in_thread(client)
    theirs: list[Any] = []
    other = threading.Thread(
        target=lambda: theirs.append(
            second.generate(
                GEMMA_ID,
                prompt="The capital of France is",
                options=_options(max_tokens=16, temperature=0.0),
                timeout=120,
            )
        )
    )
    try:
        assert started.wait(60), outcome
        other.start()
        [mine] = wait_for_rows(observer, session_of(client))
        began = time.monotonic()
        result = second.cancel("no-such-request")
        assert result.cancelled is False and result.requests == []
        result = client.cancel(mine.request)
        answered = time.monotonic() - began
        assert result.cancelled and result.requests == [mine.request]
        thread.join(60)
        other.join(120)
    finally:
        thread.join(120)
        other.join(120)
    assert answered < 10  # on the control channel, while the shells are busy
    assert len(outcome) == 1 and isinstance(outcome[0], Cancelled), outcome
    [done] = theirs
    assert done.text.strip() and done.metrics.generated_tokens == 16
    assert done.metrics.stop_reason == "length"


def wait_for_rows(client: LLMSpellClient, session: str) -> list[Any]:
    rows: list[Any] = []

    def found() -> bool:
        rows[:] = requests_of(client, session)
        return bool(rows)

    wait_until(found, 30)
    return rows


def _options(**values: Any) -> Any:
    from providers.options import generation_options

    return generation_options(values, what="test")


def test_ps_lists_running_requests_with_their_client(
    client: LLMSpellClient, observer: LLMSpellClient
) -> None:
    thread, started, outcome = generate_in_thread(client)
    try:
        assert started.wait(60), outcome
        [row] = wait_for_rows(observer, session_of(client))
        assert (row.command, row.state, row.model) == (
            "generate",
            "running",
            f"{GEMMA_ID}@llamacpp",
        )
        assert row.seconds >= 0
        client.cancel(row.request)
    finally:
        thread.join(120)
    assert requests_of(observer, session_of(client)) == []


def test_the_control_channel_answers_only_cancel_and_lease(client: LLMSpellClient) -> None:
    reply = client._request(
        "control", "model_request", {"command": "ps"}, timeout=30, wait_idle=False
    )
    assert reply["content"]["ename"] == "InvalidRequest"
    assert "send it on the shell channel" in reply["content"]["evalue"]
    with pytest.raises(InvalidRequest, match="'request' must not be empty"):
        client.cancel("  ")


CLIENT_PROCESS = textwrap.dedent(
    """
    import sys, time
    from llmspell_kernel.client import LLMSpellClient
    client = LLMSpellClient(sys.argv[1], timeout=60)
    print("connected", client.subshell_id, flush=True)
    time.sleep(600)
    """
)


def test_dead_clients_leave_no_threads_or_subshells(kernel: KernelProcess) -> None:
    """20 client processes (each with its subshell and lease) SIGKILLed: the kernel deletes
    their subshells when their leases run out, and its thread count is back to its baseline."""
    process = psutil.Process(kernel.manager.provisioner.process.pid)  # type: ignore[union-attr]
    baseline_threads = process.num_threads()
    baseline_rss = process.memory_info().rss
    clients = [
        subprocess.Popen(
            [sys.executable, "-c", CLIENT_PROCESS, kernel.connection_file],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(20)
    ]
    try:
        for spawned in clients:
            assert spawned.stdout is not None
            assert spawned.stdout.readline().startswith("connected"), "a client did not connect"
        grown = process.num_threads()
        assert grown >= baseline_threads + 20  # a thread per subshell
    finally:
        for spawned in clients:
            spawned.kill()
            spawned.wait(30)
            if spawned.stdout is not None:
                spawned.stdout.close()
    seconds = wait_until(lambda: process.num_threads() <= baseline_threads, 60)
    rss_growth = process.memory_info().rss - baseline_rss
    print(
        f"FIGURES dead_clients: 20 killed, threads {grown} -> {process.num_threads()} "
        f"(baseline {baseline_threads}) in {seconds:.1f} s, rss +{rss_growth / 1e6:.1f} MB"
    )
    assert rss_growth < 40e6


def cli(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(VENV_BIN / "llmspell"), *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def streaming_prompt(env: dict[str, str], connection_file: str) -> subprocess.Popen[str]:
    """A connected ``llmspell prompt`` with a long answer, once it has streamed some text."""
    prompt = cli(
        {**env, "COLUMNS": "100"},
        "--connect",
        connection_file,
        "prompt",
        "--raw",
        "-m",
        GEMMA_ID,
        "--max-tokens",
        "4000",
        "Once upon a time",
    )
    assert prompt.stdout is not None
    assert prompt.stdout.read(8), "no text streamed"
    return prompt


def test_a_killed_connected_cli_stops_its_generation(
    client: LLMSpellClient, kernel: KernelProcess, observer: LLMSpellClient
) -> None:
    prompt = streaming_prompt(kernel.env, kernel.connection_file)
    try:
        wait_until(lambda: bool(requests_of(observer)), 30)  # the CLI's request, running
    finally:
        prompt.kill()
        prompt.communicate(timeout=30)
    began = time.monotonic()
    stopped = wait_until(lambda: not requests_of(observer), GONE_BOUND)
    first: list[float] = []
    started = time.monotonic()
    result = client.generate(
        GEMMA_ID,
        prompt="The capital of France is",
        options=_options(max_tokens=4, temperature=0.0),
        on_text=lambda _: first.append(time.monotonic() - started) if not first else None,
        timeout=60,
    )
    print(
        f"FIGURES dead_cli: generation stopped {stopped:.1f} s after the kill, "
        f"next first token after {first[0]:.2f} s"
    )
    assert time.monotonic() - began < GONE_BOUND + 60
    assert result.text.strip() and first and first[0] < 5


def test_ctrl_c_in_a_connected_cli_cancels_only_its_own_request(
    client: LLMSpellClient, kernel: KernelProcess, observer: LLMSpellClient
) -> None:
    """Another client's cell keeps running while a connected CLI's prompt is stopped by
    Ctrl-C (SIGINT) and by SIGTERM: exit 130 and 143, the cell finishes untouched."""
    cell: list[Any] = []
    runner = threading.Thread(
        target=lambda: cell.append(
            client.execute(
                "import time\nfor _ in range(40): time.sleep(0.25)\nprint('cell done')", timeout=120
            )
        )
    )
    runner.start()
    try:
        for signum, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
            prompt = streaming_prompt(kernel.env, kernel.connection_file)
            prompt.send_signal(signum)
            _, stderr = prompt.communicate(timeout=60)
            assert prompt.returncode == code, stderr
            wait_until(lambda: not requests_of(observer), 30)
    finally:
        runner.join(180)
    [done] = cell
    assert done.ok and "cell done" in "".join(o.get("text", "") for o in done.outputs)


def test_sigterm_to_a_foreground_kernel_start_leaves_no_process(tmp_path: Path) -> None:
    from tests.isolation import private_dirs

    env = {**os.environ, **private_dirs(tmp_path)}
    started = cli(env, "kernel", "start")
    try:
        assert started.stdout is not None
        line = started.stdout.readline()
        assert line.startswith("kernel "), line
        pid = int(line.split("(pid ")[1].rstrip(")\n"))
        assert psutil.pid_exists(pid)
        started.send_signal(signal.SIGTERM)
        _, stderr = started.communicate(timeout=60)
    finally:
        if started.poll() is None:
            started.kill()
            started.communicate(timeout=30)
    assert started.returncode in (0, 143), stderr
    assert "Ctrl-C will not work" not in stderr
    wait_until(lambda: not psutil.pid_exists(pid) or _zombie(pid), 30)


def _zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_kernel_stop_in_the_middle_of_a_generation_is_quick(
    tmp_path: Path, gemma_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmspell_kernel.process import start_kernel, stop_kernel
    from tests.isolation import private_dirs

    for name, value in private_dirs(tmp_path).items():
        monkeypatch.setenv(name, value)
    config = tmp_path / "config.toml"
    config.write_text(
        f'[providers.llamacpp.options]\nmodel_directory = "{gemma_store}"\n'
        "[providers.ollama]\nenabled = false\n",
        encoding="utf-8",
    )
    record = start_kernel(daemon=True, config_path=config)
    try:
        with LLMSpellClient(record.connection_file, timeout=60) as client:
            thread, started, outcome = generate_in_thread(client)
            try:
                assert started.wait(90), outcome
                began = time.monotonic()
                stop_kernel(record.id)
                seconds = time.monotonic() - began
            finally:
                thread.join(60)
    finally:
        if psutil.pid_exists(record.pid):
            os.kill(record.pid, signal.SIGKILL)
    print(f"FIGURES stop_mid_generation: {seconds:.2f} s")
    assert seconds < 5
    assert not psutil.pid_exists(record.pid) or _zombie(record.pid)


def test_a_suspended_agent_stream_does_not_hold_the_model_for_another_client(
    client: LLMSpellClient, second: LLMSpellClient
) -> None:
    """A half-read ``Agent.stream()`` in one client's namespace (its generator suspended at a
    yield) gives the model up to another client's prompt after ``stall_seconds``; the other
    client sees its wait as ``queued`` progress and ``queue_seconds``; reading the stopped
    stream again says what happened."""
    held = client.execute(
        f"g = Agent({GEMMA_ID!r}, max_tokens=400, temperature=0).stream('Tell a long story.')\n"
        "print(repr(next(g)))",
        timeout=120,
    )
    assert held.ok, held.evalue
    events: list[Any] = []
    began = time.monotonic()
    result = second.generate(
        GEMMA_ID,
        prompt="The capital of France is",
        options=_options(max_tokens=8, temperature=0.0),
        on_progress=events.append,
        timeout=120,
    )
    waited = time.monotonic() - began
    assert result.text.strip()
    queued = [event for event in events if event.phase == "queued"]
    assert queued and queued[0].ahead == 1, events
    assert result.metrics.queue_seconds > 5  # the stall bound (10 s by default), give or take
    assert result.metrics.time_to_first_token is not None
    assert result.metrics.time_to_first_token >= result.metrics.queue_seconds
    print(
        f"FIGURES suspended_stream: the other client waited {waited:.1f} s "
        f"(queue_seconds {result.metrics.queue_seconds:.1f})"
    )
    again = client.execute("next(g)", timeout=60)
    assert again.ename == "GenerationError" and "not read" in (again.evalue or ""), again
    assert client.execute("del g", timeout=60).ok


def test_ctrl_c_in_a_connected_cli_leaves_another_clients_pull_running(
    tmp_path: Path, gemma_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pull (slowed by the Hub stand-in) runs for one client while another client's CLI
    prompt is stopped by Ctrl-C: the CLI exits 130, the pull goes on to its end."""
    from llmspell_kernel.process import start_kernel, stop_kernel
    from tests.hub_standin import HubStandin
    from tests.kernel_fixtures import make_store

    store = make_store(tmp_path / "store", gemma_path)
    config = tmp_path / "config.toml"
    config.write_text(
        f'[providers.llamacpp.options]\nmodel_directory = "{store}"\n'
        "[providers.ollama]\nenabled = false\n",
        encoding="utf-8",
    )
    hub = HubStandin()
    hub.add_repo("test/slow-GGUF", {"slow-Q4_K_M.gguf": gemma_path})
    with hub:
        hub.faults.delay = 0.003  # ~3,900 chunks of 64 KiB: a pull of 12 s or more
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        record = start_kernel(daemon=True, config_path=config)
        try:
            with LLMSpellClient(record.connection_file, timeout=60) as puller:
                downloading = threading.Event()
                pulled: list[Any] = []

                def progress(event: Any) -> None:
                    if event.phase == "downloading" and (event.completed or 0) > 0:
                        downloading.set()

                def pull() -> None:
                    try:
                        # force: the store has the file (imported), a pull would reuse it
                        pulled.append(
                            puller.pull(
                                "hf:test/slow-GGUF:Q4_K_M", force=True, on_progress=progress
                            )
                        )
                    except BaseException as exc:
                        pulled.append(exc)

                worker = threading.Thread(target=pull)
                worker.start()
                try:
                    assert downloading.wait(120), pulled
                    prompt = streaming_prompt(dict(os.environ), str(record.connection_file))
                    prompt.send_signal(signal.SIGINT)
                    _, stderr = prompt.communicate(timeout=60)
                    assert prompt.returncode == 130, stderr
                    assert worker.is_alive(), f"the pull ended with the CLI: {pulled}"
                    worker.join(300)
                finally:
                    hub.faults.delay = 0.0
                    worker.join(300)
        finally:
            stop_kernel(record.id)
    [result] = pulled
    assert not isinstance(result, BaseException), result
    assert result.model.size_bytes == gemma_path.stat().st_size
