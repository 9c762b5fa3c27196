"""The conversation log: entries, conversations, concurrent writers, and what continues from it
(``chat --continue``, ``Agent.resume``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from llmspell_kernel.conversation_log import ConversationLog
from llmspell_kernel.namespace import install_namespace
from providers.config import Config
from providers.errors import InvalidRequest
from providers.manager import ProviderManager
from providers.options import GenerationOptions, Message
from providers.types import Metrics
from tests import cli_fixtures, namespace_fixtures
from tests.cli_fixtures import GEMMA_SPEC, CliSession, invoke, json_of
from tests.namespace_fixtures import GEMMA_ID, ScriptedBackend

cli_session = cli_fixtures.cli_session
gemma_store = cli_fixtures.gemma_store
shell = namespace_fixtures.shell
scripted = namespace_fixtures.scripted

WRITES = 200
WRITER = """
import sys
from pathlib import Path
from llmspell_kernel.conversation_log import ConversationLog
from providers.options import GenerationOptions, Message
from providers.types import Metrics

log = ConversationLog(Path(sys.argv[1]))
for n in range(int(sys.argv[3])):
    log.record(conversation=sys.argv[2], source="chat", model="m@llamacpp", text=f"a{n}",
               options=GenerationOptions(), metrics=Metrics(),
               messages=[Message("user", f"q{n}")])
"""


def test_two_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "logs.db"
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), name, str(WRITES)])
        for name in ("first", "second")
    ]
    for writer in writers:
        assert writer.wait(timeout=120) == 0
    log = ConversationLog(path)
    entries = log.entries()
    assert len(entries) == 2 * WRITES and len({e.id for e in entries}) == 2 * WRITES
    for name in ("first", "second"):
        texts = [e.text for e in log.conversation(name)]
        assert texts == [f"a{n}" for n in range(WRITES)]


def test_entries_conversations_and_history(tmp_path: Path) -> None:
    log = ConversationLog(tmp_path / "logs.db")
    assert log.entries() == [] and log.latest_conversation() is None
    asked = [Message("system", "Be brief."), Message("user", "Hi")]
    options = GenerationOptions(temperature=0.0, max_tokens=8)
    log.record(
        conversation="c1",
        source="chat",
        model="g@llamacpp",
        text="Hello",
        options=options,
        metrics=Metrics(generated_tokens=1),
        messages=asked,
    )
    log.record(
        conversation="c2",
        source="prompt",
        model="h@ollama",
        text=" sea",
        options=options,
        metrics=Metrics(),
        prompt="The",
    )
    assert [e.conversation for e in log.entries(limit=1)] == ["c2"]
    assert [e.question for e in log.entries(model="g")] == ["Hi"]
    assert log.latest_conversation("chat") == "c1"
    model, messages = log.history("c1")
    assert model == "g@llamacpp" and messages == [*asked, Message("assistant", "Hello")]
    entry = log.conversation("c1")[0]
    assert entry.options == {"temperature": 0.0, "max_tokens": 8}
    assert entry.metrics["generated_tokens"] == 1
    with pytest.raises(InvalidRequest, match="raw completion"):
        log.history("c2")
    with pytest.raises(InvalidRequest, match="no conversation 'nope'"):
        log.conversation("nope")
    assert ConversationLog.of(Config.from_dict({"logs": {"enabled": False}})) is None
    (tmp_path / "not-a-folder").write_text("", encoding="utf-8")
    unwritable = ConversationLog(tmp_path / "not-a-folder" / "logs.db")
    problem = unwritable.keep(
        conversation="c3", source="chat", model="g", text="x", options=options, metrics=Metrics()
    )
    assert problem is not None and "cannot be written" in problem
    moved = ConversationLog.of(Config.from_dict({"logs": {"path": str(tmp_path / "x.db")}}))
    assert moved is not None and moved.path == tmp_path / "x.db"


@pytest.fixture
def manager(shell: Any, scripted: ScriptedBackend) -> ProviderManager:
    """A manager on the scripted backend, installed in the shell's namespace."""
    made = ProviderManager(
        Config.from_dict({"default_backend": "llamacpp"}), backends={"llamacpp": scripted}
    )
    install_namespace(shell, made)
    return made


def test_an_agents_turns_are_logged_and_resume_continues_them(
    shell: Any, scripted: ScriptedBackend, manager: ProviderManager
) -> None:
    agent_class = shell.user_ns["Agent"]
    agent = agent_class(GEMMA_ID, system_prompt="Be brief.", max_tokens=4)
    agent.chat("Hi")
    agent.chat("And?")
    again = agent_class.resume(agent.conversation_id)
    assert again.history == agent.history and again.system_prompt == "Be brief."
    again.chat("Third?")
    assert scripted.chats[-1][1][-1] == {"role": "user", "content": "Third?"}
    assert len(scripted.chats[-1][1]) == 6  # system, two turns, the new question
    log = ConversationLog.of(manager.config)
    assert log is not None
    assert [e.question for e in log.conversation(agent.conversation_id)] == [
        "Hi",
        "And?",
        "Third?",
    ]


@pytest.mark.model
def test_chat_continue_goes_on_with_the_logged_conversation(gemma_store: CliSession) -> None:
    flags = ["-m", GEMMA_SPEC, "-t", "0", "--max-tokens", "3"]
    first = invoke(["-o", "json", "chat", *flags, "-s", "Be brief."], input="Hi\nAnd?\n")
    assert first.exit_code == 0, first.stderr
    listed = json_of(invoke(["logs", "list", "--json"]))["entries"]
    assert [e["messages"][-1]["content"] for e in listed] == ["Hi", "And?"]
    conversation = listed[-1]["conversation"]
    resumed = invoke(
        ["-o", "json", "chat", "--continue", "-t", "0", "--max-tokens", "3"], input="Third?\n"
    )
    assert resumed.exit_code == 0, resumed.stderr
    document = json_of(resumed)
    assert [m["role"] for m in document["messages"]] == ["system"] + ["user", "assistant"] * 3
    assert document["messages"][0]["content"] == "Be brief."
    shown = json_of(invoke(["logs", "show", conversation, "--json"]))
    assert [e["messages"][-1]["content"] for e in shown["entries"]] == ["Hi", "And?", "Third?"]
    skipped = invoke(["prompt", *flags, "--no-log", "Unlogged"])
    assert skipped.exit_code == 0, skipped.stderr
    assert len(json_of(invoke(["logs", "list", "--json"]))["entries"]) == 3
    assert json.dumps(json_of(invoke(["logs", "list", "--json"]))).count("Unlogged") == 0


def test_a_stopped_agent_stream_keeps_and_logs_the_partial_turn(
    shell: Any, scripted: ScriptedBackend, manager: ProviderManager
) -> None:
    agent = shell.user_ns["Agent"](GEMMA_ID)
    scripted.interrupt_after = 2  # Stop after "Hello" ","
    received = []
    with pytest.raises(KeyboardInterrupt):
        for piece in agent.stream("Hi"):
            received.append(piece)
    assert received == ["Hello", ","]
    assert agent.history[-1] == {"role": "assistant", "content": "Hello,"}
    log = ConversationLog.of(manager.config)
    assert log is not None
    [entry] = log.conversation(agent.conversation_id)
    assert (entry.text, entry.metrics["stop_reason"]) == ("Hello,", "cancelled")
