"""Interrupts, counted: a streaming generation interrupted 20 times in a row through the
client's ``interrupt()`` (interrupt_request), 20 times by SIGINT to the kernel process, and a
few times by Ctrl-C in the waiting client. Each must stop within a bound with a ``Cancelled``
reply; afterwards the model still answers (a non-empty completion) and was never reloaded
(the backend's load count and the loaded list are unchanged).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from llmspell_kernel.client import LLMSpellClient
from providers.errors import Cancelled
from tests.hardening_faults_fixtures import Ledger
from tests.hardening_kernel_fixtures import kernel_pid
from tests.kernel_fixtures import (
    GEMMA_ID,
    LONG_GENERATION,
    KernelProcess,
    gemma_client,
    gemma_kernel,
    gemma_store,
)

__all__ = ["gemma_client", "gemma_kernel", "gemma_store"]

pytestmark = [pytest.mark.model, pytest.mark.timeout(300)]

ROUNDS = 20
STOP_BOUND = 10.0
"""Seconds from the interrupt to the Cancelled reply (generous: only catches a hang)."""
LONG = LONG_GENERATION
LOAD_COUNT = (
    "print(get_ipython().kernel.manager.backend('llamacpp').load_count)"  # the kernel's own
)


def load_count(client: LLMSpellClient) -> int:
    pieces: list[str] = []
    result = client.execute(LOAD_COUNT, on_output=lambda _, text: pieces.append(text), timeout=20)
    assert result.status == "ok", result
    return int("".join(pieces).strip())


def loaded(client: LLMSpellClient) -> list[str]:
    return sorted(m["id"] for m in client.model_request("ps", timeout=10)["models"])


def answers(client: LLMSpellClient) -> list[str]:
    reply = client.model_request(
        "generate",
        model=GEMMA_ID,
        prompt="The capital of France is",
        options={"max_tokens": 8, "temperature": 0.0},
        timeout=60,
    )
    problems = []
    if not reply["text"].strip():
        problems.append("empty completion after the interrupts")
    if reply["metrics"]["load_seconds"]:
        problems.append(f"the model was loaded again ({reply['metrics']['load_seconds']} s)")
    return problems


def interrupt_rounds(
    ledger: Ledger, client: LLMSpellClient, interrupt: Callable[[], None], rounds: int
) -> None:
    """Start a long streamed generation and interrupt it after 1 to 5 streamed pieces,
    ``rounds`` times."""
    for round_ in range(rounds):
        wanted = 1 + round_ % 5
        started = threading.Event()
        outcome: list[Any] = []
        pieces: list[str] = []

        def on_stream(
            text: str,
            pieces: list[str] = pieces,
            started: threading.Event = started,
            n: int = wanted,
        ) -> None:
            pieces.append(text)
            if len(pieces) >= n:
                started.set()

        def run(outcome: list[Any] = outcome, on_stream: Any = on_stream) -> None:
            try:
                outcome.append(
                    client.model_request("generate", timeout=120, on_stream=on_stream, **LONG)
                )
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=run)
        began = time.perf_counter()
        thread.start()
        problems: list[str] = []
        try:
            if not started.wait(60):
                problems.append(f"the generation never streamed: {outcome}")
            asked = time.perf_counter()
            ledger.time("until_interrupted", asked - began)
            interrupt()
            thread.join(STOP_BOUND)
            ledger.time("stop_after_interrupt", time.perf_counter() - asked)
            if thread.is_alive():
                problems.append(f"still generating {STOP_BOUND} s after the interrupt")
        finally:
            thread.join(120)
        if not (len(outcome) == 1 and isinstance(outcome[0], Cancelled)):
            problems.append(f"not a Cancelled reply: {outcome}"[:300])
        ledger.extra["pieces_before_stop"] = ledger.extra.get("pieces_before_stop", 0) + len(pieces)
        ledger.case(f"interrupt {round_ + 1}", problems)


def test_twenty_interrupts_by_interrupt_request(client: LLMSpellClient) -> None:
    ledger = Ledger("interrupt_request_x20", extra={"rounds": ROUNDS})
    loads, models = load_count(client), loaded(client)

    interrupt_rounds(ledger, client, client.interrupt, ROUNDS)

    problems = answers(client)
    if load_count(client) != loads:
        problems.append(f"load count {loads} → {load_count(client)}")
    if loaded(client) != models:
        problems.append(f"loaded models {models} → {loaded(client)}")
    ledger.case("the model answers after the interrupts, not reloaded", problems)
    ledger.extra["load_count"] = loads
    ledger.assert_nothing_lost()


def test_twenty_interrupts_by_sigint(client: LLMSpellClient, kernel: KernelProcess) -> None:
    ledger = Ledger("interrupt_sigint_x20", extra={"rounds": ROUNDS})
    pid = kernel_pid(kernel)
    loads, models = load_count(client), loaded(client)

    interrupt_rounds(ledger, client, lambda: os.kill(pid, signal.SIGINT), ROUNDS)

    problems = answers(client)
    if not kernel.manager.is_alive():
        problems.append("the kernel process died")
    if load_count(client) != loads:
        problems.append(f"load count {loads} → {load_count(client)}")
    if loaded(client) != models:
        problems.append(f"loaded models {models} → {loaded(client)}")
    ledger.case("the model answers after the signals, not reloaded", problems)
    ledger.assert_nothing_lost()


def test_ctrl_c_in_the_client_repeatedly(client: LLMSpellClient) -> None:
    ledger = Ledger("interrupt_ctrl_c_client")
    loads = load_count(client)
    for round_ in range(5):
        count = [0]

        def on_stream(_: str, count: list[int] = count) -> None:
            count[0] += 1
            if count[0] == 2:
                raise KeyboardInterrupt  # what Ctrl-C does to the waiting CLI

        problems: list[str] = []
        began = time.perf_counter()
        try:
            client.model_request("generate", timeout=120, on_stream=on_stream, **LONG)
            problems.append("the generation was not interrupted")
        except KeyboardInterrupt:
            pass
        ledger.time("ctrl_c_return", time.perf_counter() - began)
        ps = client.model_request("ps", timeout=10)["models"]
        if [m["id"] for m in ps] != [GEMMA_ID]:
            problems.append(f"ps after Ctrl-C: {ps}")
        ledger.case(f"Ctrl-C {round_ + 1}", problems)
    problems = answers(client)
    if load_count(client) != loads:
        problems.append("the model was reloaded")
    ledger.case("the model answers after Ctrl-C", problems)
    ledger.assert_nothing_lost()
