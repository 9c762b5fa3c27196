"""Load: 8 clients x 500 model requests on one kernel while a pull, a generation and a cell run.

Each of the 8 client threads has its own jupyter_client connection and its own subshell, and
sends ``list``/``status``/``ps``/``info`` requests one after another; every reply must come
back to the request that caused it (parent ``msg_id``; an ``info`` for a missing model carries
that request's own unique name), none lost, none duplicated. Meanwhile the real Gemma streams a
long generation, a pull from the Hub stand-in crawls (slowed, then let finish), and a cell runs
on the main shell; all three must finish correctly. The kernel's RSS may not grow by more than
100 MB over the run. Throughput and p50/p95 latency are recorded as figures.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from llmspell_kernel.client import LLMSpellClient
from providers.errors import Cancelled, ModelNotFound
from tests.hardening_kernel_fixtures import (
    RawShell,
    kernel_pid,
    memory_of,
    percentile,
    record_figures,
)
from tests.hub_standin import HubStandin
from tests.kernel_fixtures import (
    GEMMA_ID,
    KernelProcess,
    kernel_environment,
    make_store,
    start_kernel_process,
)

pytestmark = pytest.mark.model

CLIENTS = 8
REQUESTS = 500
MAX_RSS_GROWTH = 100 << 20
SLOW_REPO = "example-org/Load-Gemma-GGUF"
KINDS = ("list", "status", "ps", "info", "missing")


@pytest.fixture(scope="module")
def hub(gemma_path: Path) -> Iterator[HubStandin]:
    server = HubStandin()
    server.add_repo(SLOW_REPO, {"load-gemma-Q4_K_M.gguf": gemma_path})
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def kernel(
    tmp_path_factory: pytest.TempPathFactory, gemma_path: Path, hub: HubStandin
) -> Iterator[KernelProcess]:
    base = tmp_path_factory.mktemp("load")
    store = make_store(base, gemma_path)
    process = start_kernel_process(base, kernel_environment(base, store, HF_ENDPOINT=hub.url))
    try:
        yield process
    finally:
        process.stop()


@dataclass
class ClientRun:
    sent: int = 0
    matched: int = 0
    wrong: list[str] = field(default_factory=list)
    strays: int = 0
    late: int = 0
    latencies: list[float] = field(default_factory=list)
    by_kind: dict[str, list[float]] = field(default_factory=dict)
    error: BaseException | None = None


def request_for(kind: str, tag: str) -> dict[str, Any]:
    if kind == "info":
        return {"command": "info", "model": GEMMA_ID}
    if kind == "missing":
        return {"command": "info", "model": f"missing-{tag}@llamacpp"}
    return {"command": kind}


def check(kind: str, tag: str, content: dict[str, Any]) -> str | None:
    """Why ``content`` is not the reply to the request ``(kind, tag)``, or None."""
    if kind == "missing":
        if content.get("ename") != "ModelNotFound" or f"missing-{tag}" not in content["evalue"]:
            return f"missing-{tag}: {content.get('ename')} {content.get('evalue')}"
        return None
    if content.get("status") != "ok":
        return f"{kind}: {content.get('ename')} {content.get('evalue')}"
    expected = "info" if kind == "info" else kind
    if content.get("command") != expected:
        return f"{kind}: a reply to {content.get('command')}"
    if kind == "info" and content["model"]["id"] != GEMMA_ID:
        return f"info: {content['model']['id']}"
    return None


def hammer(
    connection_file: str,
    number: int,
    run: ClientRun,
    start: threading.Event,
    requests: int = REQUESTS,
) -> None:
    """One client: its own connection and subshell, ``REQUESTS`` requests one after another."""
    shell = RawShell(connection_file)
    # Its control socket: another identity (two sockets under one identity would steal each
    # other's replies at the kernel's ROUTER).
    control = shell.kc.connect_control()
    try:
        shell.session.send(control, "create_subshell_request", {})
        assert control.poll(30_000), "no reply to create_subshell_request"
        _, frames = shell.session.feed_identities(control.recv_multipart())
        subshell = shell.session.deserialize(frames)["content"]["subshell_id"]
        seen: set[str] = set()
        start.wait(60)
        for index in range(requests):
            kind = KINDS[(index + number) % len(KINDS)]
            tag = f"{number}-{index}-{uuid.uuid4().hex[:6]}"
            msg = shell.message("model_request", request_for(kind, tag))
            msg["header"]["subshell_id"] = subshell
            msg_id = msg["header"]["msg_id"]
            sent_at = time.perf_counter()
            shell.session.send(shell.socket, msg)
            run.sent += 1
            while True:
                reply = shell.recv(60)
                if reply is None:
                    raise AssertionError(f"client {number}: no reply to request {index} in 60 s")
                parent = reply["parent_header"].get("msg_id")
                if parent == msg_id:
                    break
                if parent in seen:
                    run.late += 1  # a second reply to an earlier request
                else:
                    run.strays += 1
            run.latencies.append(time.perf_counter() - sent_at)
            run.by_kind.setdefault(kind, []).append(time.perf_counter() - sent_at)
            seen.add(msg_id)
            problem = check(kind, tag, reply["content"])
            if problem is None:
                run.matched += 1
            else:
                run.wrong.append(problem)
        while (extra := shell.recv(1.0)) is not None:  # after the last reply: duplicates?
            if extra["parent_header"].get("msg_id") in seen:
                run.late += 1
            else:
                run.strays += 1
        shell.session.send(control, "delete_subshell_request", {"subshell_id": subshell})
        control.poll(10_000)
    except BaseException as exc:
        run.error = exc
    finally:
        control.close(linger=0)
        shell.close()


def in_thread(target: Any, *args: Any) -> tuple[threading.Thread, list[Any]]:
    outcome: list[Any] = []

    def body() -> None:
        try:
            outcome.append(target(*args))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, outcome


def run_clients(connection_file: str, requests: int) -> tuple[list[ClientRun], float]:
    """``CLIENTS`` threads, each sending ``requests`` requests; returns their runs and the
    seconds from the common start to the last reply."""
    runs = [ClientRun() for _ in range(CLIENTS)]
    go = threading.Event()
    threads = [
        threading.Thread(target=hammer, args=(connection_file, n, runs[n], go, requests))
        for n in range(CLIENTS)
    ]
    for thread in threads:
        thread.start()
    time.sleep(1.0)  # every client connected and holding its subshell
    started = time.perf_counter()
    go.set()
    for thread in threads:
        thread.join(timeout=240)
    assert not any(t.is_alive() for t in threads), "a client thread hangs"
    return runs, time.perf_counter() - started


def totals_of(runs: list[ClientRun]) -> Counter[str]:
    totals = Counter[str]()
    for run in runs:
        totals.update(
            sent=run.sent, matched=run.matched, strays=run.strays, late=run.late,
            wrong=len(run.wrong), errors=int(run.error is not None),
        )  # fmt: skip
    return totals


def assert_all_matched(runs: list[ClientRun], requests: int) -> None:
    errors = [run.error for run in runs if run.error is not None]
    assert not errors, errors
    wrong = [w for run in runs for w in run.wrong]
    assert not wrong, wrong[:10]
    totals = totals_of(runs)
    assert totals["matched"] == CLIENTS * requests
    assert totals["late"] == 0 and totals["strays"] == 0


def test_eight_clients_by_500_requests_during_a_pull_a_generation_and_a_cell(
    kernel: KernelProcess, hub: HubStandin, tmp_path: Path
) -> None:
    cf = kernel.connection_file
    pid = kernel_pid(kernel)
    with (
        LLMSpellClient(cf) as puller,
        LLMSpellClient(cf) as generator,
        LLMSpellClient(cf) as cells,
    ):
        # Warm up what the run uses for the first time (the model, the Hub client, the
        # subshells' code paths), so that what is measured is the load, not the imports.
        generator.model_request("load", model=GEMMA_ID, timeout=60)
        warm = generator.model_request(
            "generate", model=GEMMA_ID, prompt="Hello", options={"max_tokens": 8}, timeout=60
        )
        assert warm["text"]
        with pytest.raises(ModelNotFound):
            puller.model_request("pull", model="hf:example-org/Nothing-Here-GGUF", timeout=60)
        assert_all_matched(run_clients(cf, 25)[0], 25)
        memory_before = memory_of(pid)

        # The background work: a crawling pull, a streamed generation, a busy cell.
        hub.faults.delay = 0.05  # ~1.3 MB/s for the 253 MB file: it cannot finish meanwhile
        downloading = threading.Event()
        pull_thread, pulled = in_thread(
            lambda: puller.model_request(
                "pull",
                model=f"hf:{SLOW_REPO}",
                force=True,  # the store has the file: a download only when forced
                timeout=300,
                on_progress=lambda e: downloading.set() if e.get("completed") else None,
            )
        )
        pieces: list[str] = []
        gen_thread, generated = in_thread(
            lambda: generator.model_request(
                "generate",
                model=GEMMA_ID,
                prompt="Count from one to one hundred, in words, one number per line:",
                options={"max_tokens": 48, "temperature": 0.0},
                stream=True,
                on_stream=pieces.append,
                timeout=300,
            )
        )
        release = tmp_path / "release"
        cell_code = (
            "import os, time\nticks = 0\n"
            f"while not os.path.exists({str(release)!r}) and ticks < 3000:\n"
            "    time.sleep(0.05); ticks += 1\n"
            "print('cell done after', ticks, 'ticks')"
        )
        cell_thread, celled = in_thread(lambda: cells.execute(cell_code, timeout=300))
        assert downloading.wait(60), f"the pull never started: {pulled}"
        assert pieces or gen_thread.is_alive()

        streamed_before = len(pieces)
        runs, elapsed = run_clients(cf, REQUESTS)
        streamed_during = len(pieces) - streamed_before
        background_busy = {
            "pull": pull_thread.is_alive(),
            "cell": cell_thread.is_alive(),
            "generation": gen_thread.is_alive(),
        }
        memory_after_load = memory_of(pid)

        # The background work ends: the cell is released, the generation runs to its end,
        # then the pull (still crawling) is interrupted.
        release.touch()
        cell_thread.join(timeout=60)
        gen_thread.join(timeout=180)
        puller.interrupt()
        pull_thread.join(timeout=60)
        hub.faults.delay = 0.0

        # The same load again with nothing else running: steady state, no growth.
        steady_runs, steady_elapsed = run_clients(cf, REQUESTS)
        memory_after_steady = memory_of(pid)
        listed = puller.model_request("list", backend="llamacpp")

    latencies = [lat for run in runs for lat in run.latencies]
    by_kind: dict[str, list[float]] = {}
    for run in runs:
        for kind, values in run.by_kind.items():
            by_kind.setdefault(kind, []).extend(values)
    steady_latencies = [lat for run in steady_runs for lat in run.latencies]
    totals = totals_of(runs)
    steady_totals = totals_of(steady_runs)
    load_growth = memory_after_load["anon"] - memory_before["anon"]
    steady_growth = memory_after_steady["anon"] - memory_after_load["anon"]
    record_figures(
        "load",
        {
            "clients": CLIENTS,
            "requests_per_client": REQUESTS,
            "tried": CLIENTS * REQUESTS,
            "sent": totals["sent"],
            "matched": totals["matched"],
            "lost": CLIENTS * REQUESTS - totals["matched"] - totals["wrong"],
            "duplicates": totals["late"],
            "strays": totals["strays"],
            "wrong": totals["wrong"],
            "seconds": round(elapsed, 2),
            "requests_per_second": round(totals["sent"] / elapsed, 1),
            "latency_ms_p50": round(percentile(latencies, 0.50) * 1000, 2),
            "latency_ms_p95": round(percentile(latencies, 0.95) * 1000, 2),
            "latency_ms_max": round(max(latencies, default=0.0) * 1000, 2),
            "latency_ms_by_kind": {
                kind: {
                    "p50": round(percentile(values, 0.5) * 1000, 2),
                    "p95": round(percentile(values, 0.95) * 1000, 2),
                    "max": round(max(values) * 1000, 2),
                }
                for kind, values in by_kind.items()
            },
            "background_still_running_after_load": background_busy,
            "generated_tokens": (
                generated[0]["metrics"]["generated_tokens"]
                if generated and isinstance(generated[0], dict)
                else None
            ),
            "generation_pieces_streamed_while_clients_connected_and_ran": streamed_during,
            "pull_outcome": type(pulled[0]).__name__ if pulled else None,
            "steady": {
                "tried": CLIENTS * REQUESTS,
                "matched": steady_totals["matched"],
                "lost": CLIENTS * REQUESTS - steady_totals["matched"] - steady_totals["wrong"],
                "seconds": round(steady_elapsed, 2),
                "requests_per_second": round(steady_totals["sent"] / steady_elapsed, 1),
                "latency_ms_p50": round(percentile(steady_latencies, 0.50) * 1000, 2),
                "latency_ms_p95": round(percentile(steady_latencies, 0.95) * 1000, 2),
            },
            "memory_mb": {
                when: {k: round(v / 2**20, 1) for k, v in memory.items()}
                for when, memory in (
                    ("before", memory_before),
                    ("after_load", memory_after_load),
                    ("after_steady", memory_after_steady),
                )
            },
            "anon_rss_growth_mb_load": round(load_growth / 2**20, 1),
            "anon_rss_growth_mb_steady": round(steady_growth / 2**20, 1),
        },
    )
    assert_all_matched(runs, REQUESTS)
    assert_all_matched(steady_runs, REQUESTS)

    # The work that ran alongside was really running all along, and ended correctly.
    assert background_busy["pull"] and background_busy["cell"], background_busy
    assert len(celled) == 1 and not isinstance(celled[0], BaseException), celled
    assert celled[0].status == "ok" and "cell done" in celled[0].outputs[0]["text"]
    assert len(generated) == 1 and isinstance(generated[0], dict), generated
    assert generated[0]["text"] == "".join(pieces) and generated[0]["text"]
    assert len(pulled) == 1 and isinstance(pulled[0], Cancelled), pulled
    assert f"hf:{SLOW_REPO}:Q4_K_M" not in [m["id"] for m in listed["models"]]

    # Heap and stacks (anonymous RSS) are what a leak grows; total RSS also counts the pages
    # of the mmapped model that generation touches.
    assert load_growth < MAX_RSS_GROWTH
    assert steady_growth < MAX_RSS_GROWTH // 4
