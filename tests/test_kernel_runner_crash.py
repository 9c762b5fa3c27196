"""A model runner killed mid-generation, through a kernel subprocess: the request gets an error
reply naming the model and how its runner ended, and the kernel lives on — it answers
``kernel_info``, the notebook's variables are still there, and the next generation starts a new
runner (what Ollama does when its "llama runner process has terminated").
"""

from __future__ import annotations

import os
import signal

import pytest

from llmspell_kernel.client import LLMSpellClient
from providers.errors import GenerationError
from providers.options import generation_options
from tests.kernel_fixtures import (
    GEMMA_ID,
    KernelProcess,
    gemma_client,
    gemma_kernel,
    gemma_store,
    generate_in_thread,
    raw_client,
)

__all__ = ["gemma_client", "gemma_kernel", "gemma_store"]

pytestmark = pytest.mark.model

HANG = 120.0  # seconds: only catches a hang


def test_a_runner_killed_mid_generation_is_an_error_reply_and_the_kernel_lives_on(
    client: LLMSpellClient, kernel: KernelProcess
) -> None:
    assert client.execute("notebook_state = 41", timeout=HANG).ok
    pid = client.info(GEMMA_ID, timeout=HANG).model.details["runner_pid"]
    thread, started, outcome = generate_in_thread(client)
    assert started.wait(HANG), outcome
    os.kill(pid, signal.SIGKILL)
    thread.join(HANG)
    assert not thread.is_alive()
    [error] = outcome
    assert isinstance(error, GenerationError), error
    assert f"the llama.cpp runner for {GEMMA_ID} crashed (killed by SIGKILL)" in error.message

    fresh = raw_client(kernel.connection_file)
    try:
        assert fresh.kernel_info(reply=True, timeout=HANG)["content"]["status"] == "ok"
    finally:
        fresh.stop_channels()
    output: list[str] = []
    shown = client.execute(
        "print(notebook_state + 1)", on_output=lambda _s, text: output.append(text)
    )
    assert shown.ok and "".join(output).strip() == "42"
    result = client.generate(
        GEMMA_ID,
        prompt="The capital of France is",
        options=generation_options({"max_tokens": 8, "temperature": 0.0}, what="test"),
        timeout=HANG,
    )
    assert result.text.strip()
    assert client.info(GEMMA_ID, timeout=HANG).model.details["runner_pid"] != pid
    assert kernel.manager.is_alive()
