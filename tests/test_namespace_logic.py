"""LocalLLM, Agent and %llm logic inside a real IPython shell, over a scripted backend.

What generates real text is tested against the real model in test_namespace_model.py; here the
backend is scripted so that history, options, defaults, parsing, progress and error display can
be checked exactly.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from IPython.core.error import UsageError

from llmspell_kernel.agent import Agent
from llmspell_kernel.local_llm import LocalLLM
from llmspell_kernel.magics import parse_magic
from llmspell_kernel.namespace import install_namespace
from llmspell_kernel.progress_view import ProgressLine, describe_progress, format_seconds
from llmspell_kernel.views import format_bytes
from providers import (
    GenerationError,
    GenerationOptions,
    InvalidModelSpec,
    InvalidRequest,
    ModelNotFound,
    Progress,
    ProviderManager,
)
from providers.options import generation_options
from tests.namespace_fixtures import GEMMA_ID, ScriptedBackend, scripted, scripted_manager, shell

__all__ = ["scripted", "scripted_manager", "shell"]  # fixtures used by name


@pytest.fixture
def ns(shell: Any, scripted_manager: ProviderManager) -> dict[str, Any]:
    install_namespace(shell, scripted_manager)
    return shell.user_ns  # type: ignore[no-any-return]


# Namespace -------------------------------------------------------------------------------------


def test_install_puts_localllm_agent_and_magic_in_the_shell(shell: Any, ns: dict[str, Any]) -> None:
    assert isinstance(ns["LocalLLM"], LocalLLM)
    assert issubclass(ns["Agent"], Agent)
    assert ns["Agent"].__name__ == "Agent"
    assert shell.find_line_magic("llm") is not None
    assert shell.find_cell_magic("llm") is not None
    assert "LocalLLM" in repr(ns["LocalLLM"]) and "llamacpp" in repr(ns["LocalLLM"])


def test_unbound_agent_class_says_where_to_get_one() -> None:
    with pytest.raises(InvalidRequest, match="not bound to a kernel"):
        Agent(model=GEMMA_ID)


# Default model ---------------------------------------------------------------------------------


def test_no_model_is_a_clear_error(ns: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest) as info:
        ns["Agent"]()
    assert info.value.message == (
        "no model: pass Agent(model=...) or LocalLLM.set_default_model(...)"
    )


def test_default_model_from_env_then_set_default_model(
    ns: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    llm = ns["LocalLLM"]
    assert llm.default_model is None
    monkeypatch.setenv("LLMSPELL_MODEL", " gemma3-270m ")
    assert llm.default_model == GEMMA_ID
    assert ns["Agent"]().model == GEMMA_ID
    llm.set_default_model("tinyllama:Q4_K_M@llamacpp")
    assert ns["Agent"]().model == "tinyllama:Q4_K_M@llamacpp"
    assert ns["Agent"](model="phi3").model == "phi3"
    llm.set_default_model(None)
    assert llm.default_model == GEMMA_ID
    with pytest.raises(InvalidModelSpec):
        llm.set_default_model("../etc/passwd")


def test_the_configs_default_model_comes_after_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from llmspell_kernel.local_llm import LocalLLM
    from providers.config import Config
    from providers.manager import ProviderManager

    monkeypatch.delenv("LLMSPELL_MODEL", raising=False)
    manager = ProviderManager(Config.from_dict({"default_model": "gemma3-270m@llamacpp"}))
    try:
        llm = LocalLLM(manager)
        assert llm.default_model == "gemma3-270m@llamacpp"
        monkeypatch.setenv("LLMSPELL_MODEL", "phi3@ollama")
        assert llm.default_model == "phi3@ollama"
    finally:
        manager.close()


# Options ---------------------------------------------------------------------------------------


def test_unknown_options_are_named(ns: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest) as info:
        ns["Agent"](GEMMA_ID, temprature=0.5, max_token=3)
    message = info.value.message
    assert "Agent: unknown options 'max_token', 'temprature'" in message
    assert "temperature" in message.split("accepted:")[1]


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"temperature": "hot"}, "'temperature' must be a number"),
        ({"max_tokens": 2.5}, "'max_tokens' must be an integer"),
        ({"max_tokens": True}, "'max_tokens' must be an integer"),
        ({"max_tokens": 0}, "'max_tokens' must be >= 1"),
        ({"top_p": 1.5}, "'top_p' must be > 0 and <= 1, not 1.5"),
        ({"top_p": 0}, "'top_p' must be > 0 and <= 1, not 0"),
        ({"repeat_penalty": 0}, "'repeat_penalty' must be > 0, not 0"),
        ({"temperature": -1}, "'temperature' must be >= 0, not -1"),
        ({"temperature": float("nan")}, "'temperature' must be a finite number"),
        ({"stop": [""]}, "'stop' must not hold an empty string"),
        ({"num_ctx": 2**32}, "'num_ctx' must be >= 1 and <= 16777216"),
        ({"stop": [1]}, "'stop' must be a string or a list of strings"),
    ],
)
def test_bad_option_values_are_named(options: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidRequest, match=fragment):
        generation_options(options, what="Agent")


def test_options_are_converted() -> None:
    options = generation_options(
        {"temperature": 1, "stop": "\n", "max_tokens": 8, "seed": None}, what="x"
    )
    assert options == GenerationOptions(temperature=1.0, stop=("\n",), max_tokens=8)
    assert isinstance(options.temperature, float)


# Agent -----------------------------------------------------------------------------------------


def test_chat_keeps_history_and_the_second_turn_sees_it(
    ns: dict[str, Any], scripted: ScriptedBackend
) -> None:
    agent = ns["Agent"](GEMMA_ID, system_prompt="Be brief.", max_tokens=16, temperature=0)
    assert agent.chat("Hi") == "Hello, world!"
    scripted.pieces = ["Second", " answer"]
    assert agent.chat("And then?") == "Second answer"
    assert scripted.chats[1][1] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello, world!"},
        {"role": "user", "content": "And then?"},
    ]
    # an Agent's conversation truncates by default (overflow), the rest is what it was given
    assert scripted.chats[1][2] == GenerationOptions(
        max_tokens=16, temperature=0.0, overflow="truncate"
    )
    assert agent.history[-1] == {"role": "assistant", "content": "Second answer"}
    assert len(agent.history) == 5
    assert agent.last_metrics is not None and agent.last_metrics["generated_tokens"] == 2
    agent.reset()
    assert agent.history == [{"role": "system", "content": "Be brief."}]
    assert "turns=0" in repr(agent)


def test_complete_is_single_turn(ns: dict[str, Any], scripted: ScriptedBackend) -> None:
    agent = ns["Agent"](GEMMA_ID, system_prompt="Sys")
    agent.chat("first")
    assert agent.complete("alone") == "Hello, world!"
    assert scripted.chats[-1][1] == [
        {"role": "system", "content": "Sys"},
        {"role": "user", "content": "alone"},
    ]
    assert len(agent.history) == 3  # system + the chat turn; complete added nothing


def test_stream_yields_pieces_and_records_the_turn(
    ns: dict[str, Any], scripted: ScriptedBackend
) -> None:
    agent = ns["Agent"](GEMMA_ID)
    stream = agent.stream("Hi")
    assert scripted.chats == []  # lazy: nothing runs before the first piece is asked for
    assert list(stream) == ["Hello", ",", " world", "!"]
    assert agent.history == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello, world!"},
    ]
    assert scripted.finished == 1 and scripted.closed == 0


def test_stopping_a_stream_early_closes_the_generation(
    ns: dict[str, Any], scripted: ScriptedBackend
) -> None:
    agent = ns["Agent"](GEMMA_ID)
    for piece in agent.stream("Hi"):
        assert piece == "Hello"
        break
    assert scripted.closed == 1
    assert agent.history[-1] == {"role": "assistant", "content": "Hello"}
    # the same agent keeps working
    assert agent.chat("again") == "Hello, world!"


def test_interrupt_while_streaming_closes_the_generation(
    ns: dict[str, Any], scripted: ScriptedBackend
) -> None:
    agent = ns["Agent"](GEMMA_ID)
    stream = agent.stream("Hi")
    with pytest.raises(KeyboardInterrupt):
        for count, _piece in enumerate(stream, 1):
            if count == 2:
                raise KeyboardInterrupt
    stream.close()
    assert scripted.closed == 1
    assert agent.chat("again") == "Hello, world!"


def test_a_failed_generation_adds_nothing_to_history(
    ns: dict[str, Any], scripted: ScriptedBackend
) -> None:
    agent = ns["Agent"](GEMMA_ID)
    scripted.fail_after = 2
    with pytest.raises(GenerationError):
        agent.chat("Hi")
    assert agent.history == []
    assert agent.last_metrics is None


@pytest.mark.parametrize("text", ["", "   ", None, 3])
def test_agent_rejects_empty_or_non_text(ns: dict[str, Any], text: Any) -> None:
    agent = ns["Agent"](GEMMA_ID)
    with pytest.raises(InvalidRequest, match=r"Agent\.chat: text"):
        agent.chat(text)
    with pytest.raises(InvalidRequest, match=r"Agent\.stream: text"):
        agent.stream(text)


# LocalLLM --------------------------------------------------------------------------------------


def test_localllm_returns_plain_data(
    ns: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    llm = ns["LocalLLM"]
    status = llm.status()
    assert status["llamacpp"]["available"] is True
    assert status["ollama"] == {
        "name": "ollama",
        "available": False,
        "version": None,
        "models": 0,
        "loaded": 0,
        "reason": "disabled",
        "details": {},
    }
    assert [row["id"] for row in llm.list()] == [GEMMA_ID]
    assert llm.info(GEMMA_ID)["context_length"] == 32768
    assert llm.available()[0]["variants"] == ["Q4_K_M"]
    assert llm.load(GEMMA_ID)["id"] == GEMMA_ID
    assert llm.ps() == []
    assert llm.unload(GEMMA_ID) == {"unloaded": GEMMA_ID, "was_loaded": False}  # ps() was []
    assert llm.remove(GEMMA_ID) == {"removed": GEMMA_ID}
    assert llm.list() == []
    assert capsys.readouterr().out == ""


def test_pull_shows_a_throttled_progress_line(
    ns: dict[str, Any], scripted: ScriptedBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    result = ns["LocalLLM"].pull("tinyllama")
    assert result["model"]["id"] == "tinyllama"
    assert result["bytes"] == 5_000_000
    out = capsys.readouterr().out
    assert scripted.pull_events == 5000
    # one line redrawn with \r: every phase once, not thousands of download updates
    updates = out.count("\r")
    assert 4 <= updates <= 20, out
    assert out.endswith("\n") and "\n" not in out[:-1]
    assert "\rtinyllama: done 5.0 MB / 5.0 MB (100%)" in out
    # the summary replaces the line at the end; the result shows a few fields, not the manifest
    assert out.split("\r")[-1].rstrip().startswith("pulled tinyllama@llamacpp: 5.0 MB in ")
    assert result.line in out
    assert result.line not in repr(result)  # shown once, by the progress line
    assert repr(result).splitlines()[1].split() == ["model", "tinyllama@llamacpp"]
    assert len(repr(result).splitlines()) <= 8


def test_progress_line_redraws_within_a_phase_at_most_every_interval() -> None:
    now = [0.0]
    stream = io.StringIO()
    line = ProgressLine(stream, interval=0.25, clock=lambda: now[0])
    for step in range(100):
        now[0] = step * 0.01  # one second in all
        line(Progress("m", "downloading", step * 10_000, 1_000_000))
    line.finish()
    assert line.updates == 4  # at 0.0, 0.25, 0.5, 0.75 s
    assert stream.getvalue().endswith("\n")
    line.finish()
    assert stream.getvalue().count("\n") == 1


def test_progress_text() -> None:
    progress = Progress("gemma3-270m", "downloading", 45_200_000, 253_100_000)
    assert describe_progress(progress, 12_000_000.0) == (
        "gemma3-270m: downloading 45.2 MB / 253.1 MB (18%), 12.0 MB/s, 17 s left"
    )
    assert format_seconds(4.24) == "4.2 s"
    assert format_seconds(185) == "3 min 05 s"
    assert format_seconds(3720) == "1 h 02 min"
    assert describe_progress(Progress("m", "resolving")) == "m: resolving"
    assert format_bytes(999) == "999 B"
    assert format_bytes(1_500) == "1.5 kB"
    assert format_bytes(3_000_000_000) == "3.0 GB"


# Errors in cells -------------------------------------------------------------------------------


def test_llmspell_errors_show_as_one_line(
    shell: Any, ns: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    result = shell.run_cell("LocalLLM.info('no-such-model')")
    assert isinstance(result.error_in_exec, ModelNotFound)
    captured = capsys.readouterr()
    shown = (captured.out + captured.err).strip()
    # one line (routing, issue 21 item 2: "not installed anywhere", with each backend's state)
    assert "\n" not in shown
    assert shown.startswith("ModelNotFound: model 'no-such-model' is not installed anywhere")


def test_other_errors_keep_their_traceback(
    shell: Any, ns: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    shell.run_cell("1/0")
    captured = capsys.readouterr()
    assert "Traceback" in captured.out + captured.err or "----> 1" in captured.out


# Magics ----------------------------------------------------------------------------------------


def test_cell_magic_streams_the_answer(
    shell: Any, ns: dict[str, Any], scripted: ScriptedBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    result = shell.run_cell(
        '%%llm -m gemma3-270m --system "Be brief." --max-tokens 12 --temperature 0.2\n'
        "Say hello\nto the world.\n"
    )
    assert result.success, result.error_in_exec
    assert result.result is None
    assert capsys.readouterr().out == "Hello, world!\n"
    model, messages, options = scripted.chats[-1]
    assert model == GEMMA_ID
    assert messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hello\nto the world."},
    ]
    assert options == GenerationOptions(max_tokens=12, temperature=0.2)


def test_raw_magic_continues_the_text_without_the_template(
    shell: Any, ns: dict[str, Any], scripted: ScriptedBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    result = shell.run_cell("%%llm -m gemma3-270m --raw --max-tokens 8\nThe sea is\n")
    assert result.success, result.error_in_exec
    assert scripted.prompts == ["The sea is"]
    assert capsys.readouterr().out == "Hello, world!\n"
    result = shell.run_cell("%llm -m gemma3-270m --raw --system 'Be brief.' The sea is")
    assert isinstance(result.error_in_exec, UsageError)
    assert "--system needs the chat template: drop --raw" in capsys.readouterr().err


def test_line_magic_uses_the_default_model(
    shell: Any, ns: dict[str, Any], scripted: ScriptedBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    result = shell.run_cell("%llm Why is the sky blue?")
    assert isinstance(result.error_in_exec, InvalidRequest)
    assert "no model: pass %llm -m SPEC or LocalLLM.set_default_model(...)" in (
        capsys.readouterr().out
    )
    ns["LocalLLM"].set_default_model(GEMMA_ID)
    assert shell.run_cell("%llm Why is the 'sky' blue?").success
    assert capsys.readouterr().out == "Hello, world!\n"
    assert scripted.chats[-1][1] == [{"role": "user", "content": "Why is the 'sky' blue?"}]


def test_line_magic_prompts_reach_the_magic_verbatim(
    shell: Any, ns: dict[str, Any], scripted: ScriptedBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    ns["LocalLLM"].set_default_model(GEMMA_ID)
    cell = "topic = 'tea'\nif True:\n    %llm what's {topic}? Isn't it \"great\"?\n"
    result = shell.run_cell(cell)
    assert result.success, result.error_in_exec
    assert scripted.chats[-1][1] == [{"role": "user", "content": "what's tea? Isn't it \"great\"?"}]
    capsys.readouterr()
    shell.run_cell("%llm?")  # help on the magic itself still works
    assert "%llm [OPTIONS] PROMPT" in capsys.readouterr().out
    assert shell.run_cell("%llm --help").success  # and its --help, with every option
    shown = capsys.readouterr().out
    assert "--format FORMAT" in shown and "--top-k" in shown and "--raw" in shown


def test_bad_magic_options_are_usage_errors(
    shell: Any, ns: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    result = shell.run_cell("%llm --max-tokens many hi")
    assert isinstance(result.error_in_exec, UsageError)
    assert "--max-tokens must be an integer, not 'many'" in capsys.readouterr().err
    result = shell.run_cell("%llm -m gemma3-270m --max-tokens 0 hi")
    assert isinstance(result.error_in_exec, InvalidRequest)
    assert capsys.readouterr().out.strip() == (
        "InvalidRequest: %llm: option 'max_tokens' must be >= 1, not 0"
    )


@pytest.mark.parametrize(
    ("line", "cell", "expected"),
    [
        ("hello there", None, {"prompt": "hello there"}),
        ("-m phi3 hello", None, {"model": "phi3", "prompt": "hello"}),
        ("--model=phi3 -- -1 is odd?", None, {"model": "phi3", "prompt": "-1 is odd?"}),
        (
            "--system 'You are terse.' --temperature 0.5 what's up",
            None,
            {"system": "You are terse.", "options": {"temperature": 0.5}, "prompt": "what's up"},
        ),
        ("--max-tokens 8", "  body\n", {"options": {"max_tokens": 8}, "prompt": "body"}),
        ("", "body", {"prompt": "body"}),
        ("--raw -m phi3 The sea is", None, {"raw": True, "model": "phi3", "prompt": "The sea is"}),
        # the options of `llmspell prompt`: every generation option, -t, --stop, -o
        (
            "-t 1 --top-k 5 --seed=3 --stop . --stop '!' -o min_p=0.1 -o num_ctx 512",
            "body",
            {
                "options": {
                    "temperature": 1.0,
                    "top_k": 5,
                    "seed": 3,
                    "stop": [".", "!"],
                    "min_p": 0.1,
                    "num_ctx": 512,
                },
                "prompt": "body",
            },
        ),
        ("--format markdown", "body", {"format": "markdown", "prompt": "body"}),
        ("--help", None, {"help": True, "prompt": ""}),
    ],
)
def test_parse_magic(line: str, cell: str | None, expected: dict[str, Any]) -> None:
    args = parse_magic(line, cell)
    for key, value in expected.items():
        assert getattr(args, key) == value
    assert all(getattr(args, key) is None for key in ("model", "system") if key not in expected)
    if "options" not in expected:
        assert args.options == {}


@pytest.mark.parametrize(
    ("line", "cell", "fragment"),
    [
        ("", None, "%llm needs a prompt"),
        ("-m phi3", None, "%llm needs a prompt"),
        ("-x hi", None, "unknown option '-x'"),
        ("-m", None, "option -m needs a value"),
        ("--system 'unclosed hi", None, "No closing quotation"),
        ("-m phi3 stray words", "body", "takes only options on its first line"),
        ("-m phi3", "  \n", "needs a prompt in the cell body"),
        ("--temperature warm", "body", "--temperature must be a number"),
        ("--top-k 1.5", "body", "--top-k must be an integer"),
        ("--format html", "body", "--format must be one of text, markdown, json"),
        ("-o top_k", "body", "-o needs KEY=VALUE"),
    ],
)
def test_parse_magic_errors(line: str, cell: str | None, fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment):
        parse_magic(line, cell)
