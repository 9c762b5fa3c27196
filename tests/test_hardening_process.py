"""A kernel process killed (SIGKILL) mid-request, and daemon kernels that die and come back.

The client must report a dead kernel clearly (``KernelConnectionError`` saying it died) within a
bounded time, whatever it was waiting for: a pull crawling from the Hub stand-in, a streamed
generation, a request sent after the death. A daemon kernel killed outright is reported dead
and pruned by ``list_kernels``; a new one starts and is found again by name, the way
``jupyter console --existing`` finds kernels.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from jupyter_client.connect import find_connection_file
from jupyter_core.paths import jupyter_runtime_dir

from llmspell_kernel.client import LLMSpellClient
from llmspell_kernel.process import start_kernel, stop_all
from llmspell_kernel.records import list_kernels, records_dir
from providers.errors import KernelConnectionError
from tests.hardening_kernel_fixtures import record_figures
from tests.hub_standin import HubStandin
from tests.kernel_fixtures import GEMMA_ID, LONG_GENERATION, gemma_store

__all__ = ["gemma_store"]

pytestmark = pytest.mark.model

SLOW_REPO = "example-org/Killed-Gemma-GGUF"
REPORT_BOUND = 20.0  # seconds: only catches a hang (the heartbeat grace is set to 1 s)


@pytest.fixture
def environment(
    gemma_store: Path, gemma_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[HubStandin]:
    """Kernels started here use the Gemma store and a Hub stand-in that serves slowly."""
    hub = HubStandin()
    hub.add_repo(SLOW_REPO, {"killed-gemma-Q4_K_M.gguf": gemma_path})
    hub.faults.delay = 0.05
    hub.start()
    monkeypatch.setenv("LLMSPELL_MODELS", str(gemma_store))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    try:
        yield hub
    finally:
        stop_all()
        hub.stop()


def kill_during(
    request: Callable[[LLMSpellClient, threading.Event], Any],
) -> tuple[BaseException | Any, float]:
    """Start a daemon kernel, run ``request`` in a thread, SIGKILL the kernel once the request
    signals it is under way; returns what the request ended with and how long that took."""
    record = start_kernel(daemon=True)
    outcome: list[Any] = []
    under_way = threading.Event()
    with LLMSpellClient.connect(record.id) as client:
        client.heartbeat_grace = 1.0

        def run() -> None:
            try:
                outcome.append(request(client, under_way))
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        assert under_way.wait(60), f"the request never got under way: {outcome}"
        children = psutil.Process(record.pid).children(recursive=True)
        runners = [c for c in children if "runner_process" in " ".join(c.cmdline())]
        os.kill(record.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        thread.join(REPORT_BOUND + 10)
        reported_after = time.monotonic() - killed_at
        assert not thread.is_alive(), "the client hangs on a dead kernel"
        # Nothing goes on working for the dead kernel: a runner ends when its socket closes.
        _, left = psutil.wait_procs(children, timeout=REPORT_BOUND)
        assert not left, f"still running after the kernel died: {left}"
        if request.__name__ == "generate":
            assert runners, "the generation's model runner was not found"
        # Asking again after the death: reported too, not a hang.
        started = time.monotonic()
        with pytest.raises(KernelConnectionError, match="died"):
            client.model_request("ps", timeout=60)
        assert time.monotonic() - started < REPORT_BOUND
    return outcome[0], reported_after


def test_a_kernel_killed_mid_request_is_reported_not_waited_for(environment: HubStandin) -> None:
    def pull(client: LLMSpellClient, under_way: threading.Event) -> Any:
        return client.model_request(
            "pull",
            model=f"hf:{SLOW_REPO}",
            on_progress=lambda e: under_way.set() if e.get("completed") else None,
        )

    def generate(client: LLMSpellClient, under_way: threading.Event) -> Any:
        return client.model_request(
            "generate", on_stream=lambda _: under_way.set(), **LONG_GENERATION
        )

    def cell(client: LLMSpellClient, under_way: threading.Event) -> Any:
        threading.Timer(0.5, under_way.set).start()
        return client.execute("import time\nfor _ in range(600): time.sleep(0.1)")

    requests = {"pull": pull, "generate": generate, "cell": cell}
    results = {name: kill_during(request) for name, request in requests.items()}
    record_figures(
        "process_kill",
        {
            "tried": len(results),
            "reported": sum(isinstance(r, KernelConnectionError) for r, _ in results.values()),
            "seconds_to_report": {name: round(s, 2) for name, (_, s) in results.items()},
            "heartbeat_grace_seconds": 1.0,
        },
    )
    for name, (outcome, seconds) in results.items():
        assert isinstance(outcome, KernelConnectionError), (name, outcome)
        assert "died" in str(outcome), (name, outcome)
        assert seconds < REPORT_BOUND, (name, seconds)
    assert list_kernels() == []  # every killed kernel is pruned


def test_a_killed_daemon_is_pruned_and_a_new_one_is_found_again(environment: HubStandin) -> None:
    runtime = Path(jupyter_runtime_dir())
    first = start_kernel(daemon=True)
    assert [r.id for r in list_kernels()] == [first.id]
    os.kill(first.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while list_kernels() and time.monotonic() < deadline:  # SIGKILL is asynchronous
        time.sleep(0.05)
    assert list_kernels() == [], "a dead kernel is not listed"
    assert not (records_dir() / f"{first.id}.json").exists()
    assert not first.connection_file.exists(), "its connection file is gone"
    with pytest.raises(KernelConnectionError, match=first.id):
        LLMSpellClient.connect(first.id, timeout=3)

    second = start_kernel(daemon=True)
    try:
        assert [r.id for r in list_kernels()] == [second.id]
        found = find_connection_file(second.id, path=[".", str(runtime)])
        assert Path(found) == second.connection_file
        with LLMSpellClient.connect(second.id) as client:
            assert client.connection_file == second.connection_file
            assert GEMMA_ID in [m["id"] for m in client.model_request("list")["models"]]
    finally:
        stop_all()
    record_figures(
        "process_restart",
        {
            "killed": 1,
            "pruned": 1,
            "restarted_and_found": 1,
            "listed_after_stop": len(list_kernels()),
        },
    )
    assert list_kernels() == []
