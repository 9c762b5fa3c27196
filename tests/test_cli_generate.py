"""``prompt``, ``chat``, ``run``, ``exec`` and ``kernel ...`` through CliRunner, with the real
Gemma model: streamed text, JSON documents, scripts and their failures, kernel processes."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests import cli_fixtures
from tests.cli_fixtures import GEMMA_SPEC, CliSession, invoke, json_of

cli_session = cli_fixtures.cli_session
daemon = cli_fixtures.daemon
gemma_store = cli_fixtures.gemma_store

SMALL = ["--max-tokens", "8", "--temperature", "0", "--seed", "1"]


# prompt ---------------------------------------------------------------------------------------


@pytest.mark.model
def test_prompt_streams_text_then_a_newline(gemma_store: CliSession) -> None:
    result = invoke(["prompt", "-m", GEMMA_SPEC, *SMALL, "--stats", "Name a colour."])
    assert result.exit_code == 0, result.stderr
    assert re.search(r"^\d tokens in [0-9.]+ s .*stop: (length|stop)$", result.stderr, re.M)
    assert result.stdout.endswith("\n")
    assert result.stdout.strip(), "the model said nothing"
    assert "Traceback" not in result.stderr
    # the GGUF has no chat template of its own: one line says so and points at --raw
    assert "no chat template of its own (a base model?)" in result.stderr
    assert "--raw" in result.stderr


@pytest.mark.model
def test_prompt_json_from_stdin(gemma_store: CliSession) -> None:
    result = invoke(
        ["--output", "json", "prompt", "-m", GEMMA_SPEC, "-s", "Be brief.", *SMALL, "-"],
        input="Name a colour.\n",
    )
    assert result.exit_code == 0, result.stderr
    document = json_of(result)  # the text is not streamed before the document
    assert set(document) == {"model", "text", "metrics"}
    assert document["model"].startswith("gemma3-270m")
    assert document["text"].strip()
    assert 0 < document["metrics"]["generated_tokens"] <= 8


@pytest.mark.model
def test_prompt_raw_continues_the_text_without_a_chat_template(gemma_store: CliSession) -> None:
    args = ["--output", "json", "prompt", "-m", GEMMA_SPEC, *SMALL]
    raw = json_of(invoke([*args, "--raw", "The capital of France is"]))
    chat = json_of(invoke([*args, "The capital of France is"]))
    # greedy: the same model gives different text only because the prompt differs
    assert raw["text"].strip() and raw["text"] != chat["text"]
    # the chat template wraps the text in turn markers: many more prompt tokens
    assert raw["metrics"]["prompt_tokens"] < chat["metrics"]["prompt_tokens"]
    refused = invoke(["prompt", "-m", GEMMA_SPEC, "--raw", "-s", "Be brief.", "Hi"])
    assert refused.exit_code == 2
    assert "--raw" in refused.stderr


@pytest.mark.model
def test_prompt_with_an_unknown_model_exits_1(gemma_store: CliSession) -> None:
    result = invoke(["prompt", "-m", "nope@llamacpp", "hello"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "nope" in result.stderr


@pytest.mark.model
def test_prompt_takes_every_option_and_the_default_model_of_the_config(
    gemma_store: CliSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LLMSPELL_MODEL", raising=False)
    config = tmp_path / "config.toml"
    config.write_text(f'default_model = "{GEMMA_SPEC}"\n', encoding="utf-8")
    args = ["--config", str(config), "--output", "json", "prompt", "--raw", "One, two, three,"]
    flags = ["-t", "0", "--top-k", "40", "--top-p", "0.9", "--min-p", "0.05"]
    flags += ["--repeat-penalty", "1.1", "--num-ctx", "512", "--seed", "7"]
    whole = json_of(invoke([*args, *flags, "-o", "max_tokens", "6"]))  # llm's -o KEY VALUE
    assert (
        whole["model"].startswith("gemma3-270m") and 0 < whole["metrics"]["generated_tokens"] <= 6
    )
    word = whole["text"].split()[0].strip(",.")
    cut = json_of(invoke([*args, *flags, "-o", "max_tokens=6", "--stop", word]))
    assert word not in cut["text"] and cut["metrics"]["stop_reason"] == "stop"


def test_prompt_without_a_model_or_with_a_bad_option_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LLMSPELL_MODEL", raising=False)
    monkeypatch.setenv("LLMSPELL_CONFIG", str(tmp_path / "empty.toml"))
    (tmp_path / "empty.toml").write_text("", encoding="utf-8")
    missing = invoke(["prompt", "hello"])
    assert missing.exit_code == 2 and "LLMSPELL_MODEL" in missing.stderr
    shapeless = invoke(["prompt", "-m", GEMMA_SPEC, "hello", "-o", "temperature"])
    assert shapeless.exit_code == 2 and "KEY=VALUE" in shapeless.stderr


def test_option_pairs_are_joined_only_after_prompt_or_chat() -> None:
    from llmspell_cli.generation_flags import join_option_pairs

    given = ["-o", "json", "prompt", "-o", "top_k", "3", "-o", "seed=1", "hi"]
    assert join_option_pairs(given, ["-o"]) == [
        "-o", "json", "prompt", "-o", "top_k=3", "-o", "seed=1", "hi",
    ]  # fmt: skip
    assert join_option_pairs(["model", "list", "-o", "a", "b"]) == ["model", "list", "-o", "a", "b"]
    assert join_option_pairs(["chat", "--", "-o", "a", "b"]) == ["chat", "--", "-o", "a", "b"]
    # a script's arguments that happen to hold the word: not a command of llmspell's
    run = ["run", "x.py", "--", "prompt", "-o", "a", "b"]
    assert join_option_pairs(run) == run


def test_option_flags_are_checked_by_the_one_options_validator() -> None:
    import typer

    from llmspell_cli.generation_flags import options_from_flags

    options = options_from_flags(
        {"option": ["frequency_penalty=0.5", 'stop=["a", "b"]', "top_k=3"], "top_k": 9}
    )
    assert (options.frequency_penalty, options.stop, options.top_k) == (0.5, ("a", "b"), 9)
    with pytest.raises(typer.BadParameter, match="'top_p' must be > 0 and <= 1") as bad:
        options_from_flags({"top_p": 5.0})
    assert bad.value.param_hint == "--top-p"
    with pytest.raises(typer.BadParameter, match="unknown option 'nope'") as bad:
        options_from_flags({"option": ["nope=1"]})
    assert bad.value.param_hint == "-o"


# chat -----------------------------------------------------------------------------------------


@pytest.mark.model
def test_chat_keeps_history_until_exit(daemon: dict[str, Any]) -> None:
    connect = ["--connect", daemon["connection_file"]]
    result = invoke(
        [*connect, "chat", "-m", GEMMA_SPEC, *SMALL],
        input="Hello!\n/help\nAnd again?\n/exit\nnever read\n",
    )
    assert result.exit_code == 0, result.stderr
    assert "chatting with gemma3-270m" in result.stderr
    assert "/exit" in result.stderr  # the /help text

    transcript = invoke(
        [*connect, "--output", "json", "chat", "-m", GEMMA_SPEC, "-s", "Be brief.", *SMALL],
        input="Hello!\n\n/reset\nWhat did I say?\n",  # ends at EOF
    )
    assert transcript.exit_code == 0, transcript.stderr
    document = json_of(transcript)
    assert [turn["user"] for turn in document["turns"]] == ["Hello!", "What did I say?"]
    # /reset forgot the first exchange: the history is the system prompt and the last turn.
    roles = [message["role"] for message in document["messages"]]
    assert roles == ["system", "user", "assistant"]
    assert document["messages"][1]["content"] == "What did I say?"
    assert all(turn["metrics"]["generated_tokens"] <= 8 for turn in document["turns"])


@pytest.mark.model
def test_chat_commands_and_multi_line_messages(daemon: dict[str, Any], tmp_path: Path) -> None:
    saved = tmp_path / "chat.json"
    lines = [
        "/system Answer in one word.",
        '"""Line one',
        "line two",
        '"""',
        "/history",
        f"/save {saved}",
        "/clear",
        "/nonsense",
        "/history",
    ]
    one_token = ["-m", GEMMA_SPEC, "-t", "0", "--max-tokens", "1"]
    result = invoke(
        ["--connect", daemon["connection_file"], "chat", *one_token],
        input="\n".join(lines) + "\n",
    )
    assert result.exit_code == 0, result.stderr
    err = " ".join(result.stderr.split())
    assert "system prompt set" in err and "user: Line one line two" in err
    assert "[answer cut by --max-tokens after 1 token]" in err
    assert "unknown command /nonsense" in err
    # /clear keeps the system prompt: the last /history shows it alone
    assert err.endswith("system: Answer in one word."), err
    document = json.loads(saved.read_text(encoding="utf-8"))
    assert [m["role"] for m in document["messages"]] == ["system", "user", "assistant"]
    assert document["messages"][0]["content"] == "Answer in one word."
    assert document["messages"][1]["content"] == "Line one\nline two"
    assert document["model"].startswith("gemma3-270m")


@pytest.mark.model
def test_chat_outgrowing_its_context_goes_on_without_its_oldest_turns(
    gemma_store: CliSession,
) -> None:
    flags = ["-m", GEMMA_SPEC, "-t", "0", "--max-tokens", "4", "--num-ctx", "256"]
    long_line = "Tell me about the sea. " * 20  # about 120 tokens: the third turn overflows
    result = invoke(["chat", *flags], input=f"{long_line}\n" * 3)
    assert result.exit_code == 0, result.stderr
    assert "earlier messages left out to fit the context" in result.stderr
    refused = invoke(["chat", *flags, "-o", "overflow=error"], input=f"{long_line}\n" * 3)
    # the refused turn is an error line; the chat goes on with its history
    assert refused.exit_code == 0, refused.stderr
    assert "set overflow to truncate" in " ".join(refused.stderr.split())


@pytest.mark.model
def test_chat_with_an_unknown_model_fails_before_the_first_prompt(gemma_store: CliSession) -> None:
    result = invoke(["chat", "-m", "nope@llamacpp"], input="hello\n")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")
    assert ">>>" not in result.stdout


# run and exec ---------------------------------------------------------------------------------

SCRIPT = textwrap.dedent(
    """\
    import sys

    print("argv:", sys.argv[1:])
    print("main:", __name__ == "__main__")
    if "--generate" in sys.argv:
        text = Agent(max_tokens=8, temperature=0).complete("Name a colour.")
        print("generated:", bool(text.strip()))
    if "--fail" in sys.argv:
        def explode():
            raise ValueError("script failed on purpose")
        explode()
    if "--exit" in sys.argv:
        print("leaving", file=sys.stderr)
        sys.exit(4)
    """
)


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "job.py"
    path.write_text(SCRIPT)
    return path


@pytest.mark.model
def test_run_sets_argv_and_the_default_model(gemma_store: CliSession, script: Path) -> None:
    result = invoke(["run", str(script), "--model", GEMMA_SPEC, "--", "--generate", "x"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        "argv: ['--generate', 'x']",
        "main: True",
        "generated: True",
    ]


def test_run_shows_the_traceback_and_exits_1(gemma_store: CliSession, script: Path) -> None:
    result = invoke(["run", str(script), "--", "--fail"])
    assert result.exit_code == 1
    assert "argv: ['--fail']" in result.stdout
    assert result.stderr.startswith("Traceback (most recent call last):")
    assert f'File "{script}", line 11, in <module>' in result.stderr
    assert 'raise ValueError("script failed on purpose")' in result.stderr
    assert result.stderr.rstrip().endswith("ValueError: script failed on purpose")
    assert "__llmspell_run" not in result.stderr


def test_run_passes_sys_exit_status_through(gemma_store: CliSession, script: Path) -> None:
    result = invoke(["run", str(script), "--", "--exit"])
    assert result.exit_code == 4
    assert result.stderr == "leaving\n"


def test_run_json(gemma_store: CliSession, script: Path) -> None:
    ok = json_of(invoke(["--output", "json", "run", str(script), "a"]))
    assert ok == {
        "status": "ok",
        "exit_code": 0,
        "stdout": "argv: ['a']\nmain: True\n",
        "stderr": "",
        "error": None,
    }
    failed = invoke(["--output", "json", "run", str(script), "--", "--fail"])
    assert failed.exit_code == 1
    document = json_of(failed)
    assert document["status"] == "error"
    assert document["error"]["ename"] == "LLMSpellScriptFailed"
    assert "ValueError: script failed on purpose" in document["error"]["traceback"]


def test_run_imports_modules_next_to_the_script(daemon: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "helper_for_cli_test.py").write_text("VALUE = 'from the helper'\n")
    main = tmp_path / "main.py"
    main.write_text("import helper_for_cli_test\nprint(helper_for_cli_test.VALUE)\n")
    connect = ["--connect", daemon["connection_file"]]
    result = invoke([*connect, "run", str(main)])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "from the helper\n"
    # The kernel's sys.path and sys.argv are given back afterwards.
    check = f"import sys; print({str(tmp_path)!r} in sys.path, sys.argv)"
    after = invoke([*connect, "exec", check])
    assert after.stdout.startswith("False ")
    assert str(main) not in after.stdout


def test_run_reports_a_syntax_error_in_the_script(gemma_store: CliSession, tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("print('fine')\ndef broken(:\n")
    result = invoke(["run", str(bad)])
    assert result.exit_code == 1
    assert "SyntaxError" in result.stderr
    assert "bad.py" in result.stderr and "line 2" in result.stderr


def test_exec_prints_output_and_results(gemma_store: CliSession) -> None:
    result = invoke(["exec", "print('hi'); 6 * 7"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "hi\n42\n"
    from_stdin = invoke(["exec", "-"], input="import sys\nprint(len(sys.argv) >= 0)\n")
    assert from_stdin.stdout == "True\n"


def test_exec_error_shows_the_traceback(gemma_store: CliSession) -> None:
    result = invoke(["exec", "1 / 0"])
    assert result.exit_code == 1
    assert "ZeroDivisionError" in result.stderr
    document = json_of(invoke(["--output", "json", "exec", "print('x'); 1 / 0"]))
    assert document["stdout"] == "x\n"
    assert document["error"]["ename"] == "ZeroDivisionError"
    assert "\x1b[" not in document["error"]["traceback"]


def test_exec_on_a_connected_kernel_keeps_state(daemon: dict[str, Any]) -> None:
    connect = ["--connect", daemon["connection_file"]]
    assert invoke([*connect, "exec", "kept = 'still here'"]).exit_code == 0
    result = invoke([*connect, "exec", "print(kept)"])
    assert result.stdout == "still here\n"


# kernel ---------------------------------------------------------------------------------------


def test_kernel_start_list_connect_stop(gemma_store: CliSession) -> None:
    assert "no kernels running" in invoke(["kernel", "list"]).stderr
    started = invoke(["--output", "json", "kernel", "start", "--daemon"])
    assert started.exit_code == 0, started.stderr
    record = json_of(started)
    try:
        listed = json_of(invoke(["--output", "json", "kernel", "list"]))["kernels"]
        assert [(k["id"], k["alive"]) for k in listed] == [(record["id"], True)]
        table = invoke(["kernel", "list"])
        assert record["id"] in table.stdout and "CONNECTION FILE" in table.stdout
        by_name = invoke(["--connect", record["id"], "exec", "print('connected')"])
        assert by_name.stdout == "connected\n"
    finally:
        stopped = invoke(["kernel", "stop", record["id"]])
    assert stopped.exit_code == 0
    assert stopped.stdout == f"stopped kernel {record['id']} (pid {record['pid']})\n"
    assert json_of(invoke(["--output", "json", "kernel", "stop", "--all"])) == {"stopped": []}
    text = invoke(["kernel", "start", "--daemon"])
    assert text.exit_code == 0, text.stderr
    kernel_id = text.stdout.split()[1]
    assert text.stdout.splitlines()[1].startswith("connection file: ")
    assert f"llmspell --connect {kernel_id}" in text.stderr
    all_stopped = invoke(["kernel", "stop", "--all"])
    assert all_stopped.stdout.startswith(f"stopped kernel {kernel_id} ")
    missing = invoke(["kernel", "stop", record["id"]])
    assert missing.exit_code == 1
    assert missing.stderr.startswith("error: no llmspell kernel")


def test_kernel_install_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter"))
    result = invoke(["--output", "json", "kernel", "install", "--user"])
    assert result.exit_code == 0, result.stderr
    location = Path(json_of(result)["kernelspec"])
    assert location.is_relative_to(tmp_path / "jupyter")
    assert (location / "kernel.json").is_file()
    text = invoke(["kernel", "install"])
    assert text.stdout.startswith("installed kernelspec 'llmspell' in ")
