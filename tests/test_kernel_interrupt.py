"""Interrupting a generation: by interrupt_request, by Ctrl-C in the client, by SIGINT.

Each stops the generation (an error reply ``Cancelled``) and leaves the kernel and the model
usable: the next generation works. The bounds on elapsed time only catch a hang.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from llmspell_kernel.client import LLMSpellClient
from providers.errors import Cancelled
from tests.kernel_fixtures import (
    GEMMA_ID,
    LONG_GENERATION,
    KernelProcess,
    gemma_client,
    gemma_kernel,
    gemma_store,
    generate_in_thread,
)

__all__ = ["gemma_client", "gemma_kernel", "gemma_store"]

pytestmark = pytest.mark.model

LONG = LONG_GENERATION
HANG_BOUND = 10.0


def assert_next_generation_works(client: LLMSpellClient) -> None:
    reply = client.model_request(
        "generate", model=GEMMA_ID, prompt="Hello", options={"max_tokens": 8}, timeout=60
    )
    assert reply["text"]
    assert reply["metrics"]["generated_tokens"] > 0


def test_interrupt_request_stops_a_generation(client: LLMSpellClient) -> None:
    thread, started, outcome = generate_in_thread(client)
    try:
        assert started.wait(60), outcome
        interrupted_at = time.monotonic()
        client.interrupt()
        thread.join(HANG_BOUND)
        stopped_after = time.monotonic() - interrupted_at
    finally:
        thread.join(120)
    assert len(outcome) == 1 and isinstance(outcome[0], Cancelled), outcome
    assert "interrupted" in str(outcome[0])
    assert stopped_after < HANG_BOUND
    assert_next_generation_works(client)


def test_ctrl_c_in_the_client_interrupts_then_reraises(client: LLMSpellClient) -> None:
    pieces: list[str] = []

    def on_stream(text: str) -> None:
        pieces.append(text)
        if len(pieces) == 2:
            raise KeyboardInterrupt  # what Ctrl-C does to the waiting CLI

    began = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        client.model_request("generate", timeout=120, on_stream=on_stream, **LONG)
    assert time.monotonic() - began < 60
    # The kernel-side generation was stopped: nothing is running, the model is still there.
    ps = client.model_request("ps")
    assert GEMMA_ID in [m["id"] for m in ps["models"]]
    assert_next_generation_works(client)


def test_sigint_from_the_kernel_manager_stops_a_generation(
    client: LLMSpellClient, kernel: KernelProcess
) -> None:
    thread, started, outcome = generate_in_thread(client)
    try:
        assert started.wait(60), outcome
        kernel.manager.interrupt_kernel()  # interrupt_mode "message": an interrupt_request
        thread.join(HANG_BOUND)
    finally:
        thread.join(120)
    assert len(outcome) == 1 and isinstance(outcome[0], Cancelled), outcome
    assert kernel.manager.is_alive()
    assert_next_generation_works(client)


def test_interrupt_reaches_a_cell_too(client: LLMSpellClient) -> None:
    results: list[Any] = []
    cell = threading.Thread(
        target=lambda: results.append(
            client.execute("import time\nfor _ in range(600): time.sleep(0.1)", timeout=120)
        )
    )
    cell.start()
    try:
        time.sleep(0.5)  # let the cell start; an interrupt before it would find nothing to stop
        client.interrupt()
        cell.join(HANG_BOUND)
    finally:
        cell.join(120)
    assert results and results[0].status == "error"
    assert results[0].ename == "KeyboardInterrupt"
    assert client.execute("1 + 1").outputs[0]["data"]["text/plain"] == "2"
