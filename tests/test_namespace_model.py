"""Agent and %%llm generating with the real Gemma 3 270M inside a real IPython shell.

The llamacpp backend is wrapped in a recorder only to see the messages each turn sends; the
generation itself is llama.cpp's.
"""

from __future__ import annotations

import os
import re
import signal
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from llmspell_kernel.namespace import install_namespace
from providers import Cancelled, ModelNotFound, ProviderManager
from tests.namespace_fixtures import (
    GEMMA_ID,
    RecordingBackend,
    gemma_manager,
    gemma_store,
    make_shell,
)

__all__ = ["gemma_manager", "gemma_store"]  # fixtures used by name

pytestmark = pytest.mark.model

INTERRUPT_DELAY = 0.05
"""Seconds from the first streamed piece to the SIGINT: well inside a 400-token answer."""


@pytest.fixture
def real(
    gemma_manager: tuple[ProviderManager, RecordingBackend],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
) -> Iterator[tuple[Any, RecordingBackend]]:
    """A fresh IPython shell with the namespace over the shared real-model manager."""
    monkeypatch.delenv("LLMSPELL_MODEL", raising=False)
    manager, recording = gemma_manager
    recording.chats.clear()
    recording.generations.clear()
    shell = make_shell(monkeypatch, tmp_path)
    install_namespace(shell, manager)
    try:
        yield shell, recording
    finally:
        shell.cleanup()


def test_chat_keeps_history_and_the_second_turn_sees_it(
    real: tuple[Any, RecordingBackend],
) -> None:
    shell, recording = real
    agent = shell.user_ns["Agent"](
        GEMMA_ID, system_prompt="You are a helpful assistant.", max_tokens=16, temperature=0
    )
    first = agent.chat("My name is Ada. Say hello to me.")
    assert first.strip()
    second = agent.chat("What is my name?")
    assert second.strip()
    assert recording.chats[1] == [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "My name is Ada. Say hello to me."},
        {"role": "assistant", "content": first},
        {"role": "user", "content": "What is my name?"},
    ]
    assert agent.history[-1] == {"role": "assistant", "content": second}
    metrics = agent.last_metrics
    assert metrics is not None
    assert 0 < metrics["generated_tokens"] <= 16
    assert metrics["prompt_tokens"] > 20  # the second prompt carries the first turn


def test_stream_yields_several_pieces(real: tuple[Any, RecordingBackend]) -> None:
    shell, _ = real
    agent = shell.user_ns["Agent"](GEMMA_ID, max_tokens=24, temperature=0)
    pieces = list(agent.stream("Count from one to ten in words."))
    assert len(pieces) >= 3
    assert all(isinstance(piece, str) and piece for piece in pieces)
    assert agent.history[-1] == {"role": "assistant", "content": "".join(pieces)}
    assert agent.complete("Say yes.").strip()


def test_cell_magic_prints_the_streamed_text(
    real: tuple[Any, RecordingBackend], capsys: pytest.CaptureFixture[str]
) -> None:
    shell, recording = real
    shell.user_ns["LocalLLM"].set_default_model(GEMMA_ID)
    result = shell.run_cell("%%llm --max-tokens 16 --temperature 0\nName three colours.\n")
    assert result.success, result.error_in_exec
    out = capsys.readouterr().out
    assert out.strip()
    assert out.endswith("\n")
    assert recording.chats[-1] == [{"role": "user", "content": "Name three colours."}]


class InterruptingStdout:
    """Stands in for a cell's stdout: sends SIGINT to this process shortly after the first
    write, as a front end's "interrupt kernel" does."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.timer: threading.Timer | None = None

    def write(self, text: str) -> int:
        self.text.append(text)
        if self.timer is None:
            self.timer = threading.Timer(INTERRUPT_DELAY, os.kill, (os.getpid(), signal.SIGINT))
            self.timer.start()
        return len(text)

    def flush(self) -> None:
        pass


def test_cell_interrupt_stops_the_magic_and_leaves_the_model_usable(
    real: tuple[Any, RecordingBackend],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shell, recording = real
    out = InterruptingStdout()
    monkeypatch.setattr("sys.stdout", out)
    try:
        result = shell.run_cell(
            "%%llm -m gemma3-270m --max-tokens 400 --temperature 0\n"
            "Write a very long story about a dragon and a knight.\n"
        )
    finally:
        monkeypatch.undo()
        if out.timer is not None:
            out.timer.cancel()  # never let a late SIGINT hit the rest of the session
    assert out.timer is not None
    # One line, not llama_cpp's frames: "generation stopped after N tokens"
    assert isinstance(result.error_in_exec, Cancelled)
    report = "".join(out.text).splitlines()[-1]
    assert re.fullmatch(r"generation stopped after \d+ tokens?", report), out.text
    assert "Traceback" not in "".join(out.text) + capsys.readouterr().err
    interrupted = recording.generations[-1]
    assert interrupted["closed"] and not interrupted["done"]  # stopped before its end
    assert out.text[0].strip()  # the first piece was streamed before the interrupt
    result = shell.run_cell("%%llm -m gemma3-270m --max-tokens 8 --temperature 0\nSay hi.\n")
    assert result.success, result.error_in_exec
    assert capsys.readouterr().out.strip()


def test_interrupt_while_streaming_stops_and_leaves_the_model_usable(
    real: tuple[Any, RecordingBackend], capsys: pytest.CaptureFixture[str]
) -> None:
    """A real SIGINT (what a cell interrupt sends) during Agent.stream, then the model works."""
    shell, recording = real
    agent = shell.user_ns["Agent"](GEMMA_ID, max_tokens=400, temperature=0)
    timer: threading.Timer | None = None
    pieces: list[str] = []
    try:
        with pytest.raises(KeyboardInterrupt):
            for piece in agent.stream("Write a very long story about a dragon and a knight."):
                pieces.append(piece)
                if timer is None:
                    timer = threading.Timer(INTERRUPT_DELAY, os.kill, (os.getpid(), signal.SIGINT))
                    timer.start()
    finally:
        if timer is not None:
            timer.cancel()  # never let a late SIGINT hit the rest of the session
    assert pieces
    interrupted = recording.generations[-1]
    assert interrupted["closed"] and not interrupted["done"]  # stopped before its end
    # the model is free again: a new generation runs to its end
    again = shell.user_ns["Agent"](GEMMA_ID, max_tokens=8, temperature=0)
    assert again.chat("Say hi.").strip()
    assert again.last_metrics is not None
    assert again.last_metrics["stop_reason"] in ("stop", "length")


def test_model_errors_show_one_line_in_the_cell(
    real: tuple[Any, RecordingBackend], capsys: pytest.CaptureFixture[str]
) -> None:
    shell, _ = real
    result = shell.run_cell("Agent('no-such-model', max_tokens=4).chat('hi')")
    assert isinstance(result.error_in_exec, ModelNotFound)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("ModelNotFound: ")
    assert "no-such-model" in lines[0]
