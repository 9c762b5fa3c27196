"""The script runner of ``llmspell run``, without a kernel: ``run_script`` called in this
process with a stand-in user namespace, and the cell the CLI sends (``script_code``) executed
in a namespace of its own."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from llmspell_cli.commands.run import SCRIPT_EXIT, SCRIPT_FAILED, script_code
from llmspell_kernel.script_runner import (
    LLMSpellScriptExit,
    LLMSpellScriptFailed,
    run_script,
)


class FakeLocalLLM:
    default_model: str | None = "kernel-default"
    set_calls: list[str | None] = []  # noqa: RUF012 (reset by the fixture)

    @classmethod
    def set_default_model(cls, model: str | None) -> None:
        cls.set_calls.append(model)
        cls.default_model = model


@pytest.fixture
def user_ns() -> dict[str, Any]:
    FakeLocalLLM.default_model = "kernel-default"
    FakeLocalLLM.set_calls = []
    return {"LocalLLM": FakeLocalLLM, "Agent": "the Agent", "unrelated": 1}


def write(tmp_path: Path, source: str) -> Path:
    path = tmp_path / "job.py"
    path.write_text(textwrap.dedent(source))
    return path


def run(path: Path, user_ns: dict[str, Any], *args: str, model: str | None = None) -> None:
    run_script(
        path=str(path),
        source=path.read_text(),
        argv=[str(path), *args],
        model=model,
        directory=str(path.parent),
        user_ns=user_ns,
    )


def test_the_script_runs_as_main_with_argv_and_the_kernel_names(
    tmp_path: Path, user_ns: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        """\
        import sys
        print(__name__, __file__ == sys.argv[0], sys.argv[1:])
        print(Agent, LocalLLM.default_model, "unrelated" in globals())
        print(sys.path[0])
        """,
    )
    argv, sys_path = sys.argv, list(sys.path)
    run(path, user_ns, "a", "--b", model="chosen")
    assert capsys.readouterr().out.splitlines() == [
        "__main__ True ['a', '--b']",
        "the Agent chosen False",
        str(tmp_path),
    ]
    assert sys.argv is argv and sys.path == sys_path  # given back
    assert FakeLocalLLM.set_calls == ["chosen", "kernel-default"]
    assert "__name__" not in user_ns  # the script had a namespace of its own


def test_no_model_leaves_the_default_alone(tmp_path: Path, user_ns: dict[str, Any]) -> None:
    run(write(tmp_path, "x = 1\n"), user_ns)
    assert FakeLocalLLM.set_calls == []


def test_a_failure_prints_the_scripts_traceback_and_raises(
    tmp_path: Path, user_ns: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        """\
        def explode():
            raise ValueError("on purpose")
        explode()
        """,
    )
    argv, sys_path = sys.argv, list(sys.path)
    with pytest.raises(LLMSpellScriptFailed, match=r"^ValueError: on purpose$") as caught:
        run(path, user_ns, model="chosen")
    assert caught.value.__suppress_context__
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert f'File "{path}", line 3, in <module>' in err
    assert 'raise ValueError("on purpose")' in err  # from linecache
    assert err.rstrip().endswith("ValueError: on purpose")
    assert "script_runner" not in err and "run_script" not in err
    assert sys.argv is argv and sys.path == sys_path
    assert FakeLocalLLM.set_calls == ["chosen", "kernel-default"]


@pytest.mark.parametrize(
    ("statement", "status", "stderr"),
    [
        ("sys.exit(4)", "4", ""),
        ("sys.exit('bye')", "1", "bye\n"),
        ("sys.exit(0)", None, ""),
        ("sys.exit()", None, ""),
    ],
)
def test_sys_exit(
    tmp_path: Path,
    user_ns: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    statement: str,
    status: str | None,
    stderr: str,
) -> None:
    path = write(tmp_path, f"import sys\n{statement}\n")
    if status is None:
        run(path, user_ns)
    else:
        with pytest.raises(LLMSpellScriptExit) as caught:
            run(path, user_ns)
        assert str(caught.value) == status
    assert capsys.readouterr().err == stderr


def test_a_syntax_error_names_the_file_and_line(
    tmp_path: Path, user_ns: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "print('fine')\ndef broken(:\n")
    with pytest.raises(LLMSpellScriptFailed, match=r"^SyntaxError"):
        run(path, user_ns)
    err = capsys.readouterr().err
    assert str(path) in err and "line 2" in err


def test_a_model_without_local_llm_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "print('not run')\n")
    with pytest.raises(LLMSpellScriptFailed, match="this kernel has no LocalLLM"):
        run(path, {}, model="chosen")
    assert capsys.readouterr().out == ""
    run(path, {})  # without --model it runs
    assert capsys.readouterr().out == "not run\n"


def test_a_missing_directory_is_not_put_on_sys_path(tmp_path: Path) -> None:
    path = write(tmp_path, "import sys\nSEEN = list(sys.path)\n")
    sys_path = list(sys.path)
    run_script(
        path=str(path),
        source=path.read_text(),
        argv=[str(path)],
        model=None,
        directory=str(tmp_path / "elsewhere"),
        user_ns={},
    )
    assert sys.path == sys_path


def test_the_cli_cell_calls_the_runner_and_leaves_no_name(
    tmp_path: Path, user_ns: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    source = "import sys\nprint('quote \\' and', sys.argv[1:])\n"
    cell = script_code("job.py", source, ["job.py", "it's"], "m'odel", str(tmp_path))
    before = set(user_ns)
    exec(cell, user_ns)
    assert capsys.readouterr().out == "quote ' and [\"it's\"]\n"
    assert FakeLocalLLM.set_calls == ["m'odel", "kernel-default"]
    assert set(user_ns) - before == {"__builtins__"}  # added by exec() itself

    failing = script_code("job.py", "raise KeyError('k')\n", ["job.py"], None, str(tmp_path))
    with pytest.raises(LLMSpellScriptFailed):
        exec(failing, user_ns)
    assert set(user_ns) - before == {"__builtins__"}
    assert (SCRIPT_FAILED, SCRIPT_EXIT) == ("LLMSpellScriptFailed", "LLMSpellScriptExit")


# What differed from running the script locally (issue 21) ------------------------------------


def test_stdin_lines_come_from_the_client_until_its_end(
    tmp_path: Path,
    user_ns: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``sys.stdin`` reads lines through ``input("")`` (in a kernel: the client's stdin)."""
    lines = iter(["Bob", "second", "third"])

    def client_input(prompt: str = "") -> str:
        assert prompt in ("", "name? ")
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    monkeypatch.setattr("builtins.input", client_input)
    path = write(
        tmp_path,
        """\
        import sys
        print(input("name? "), repr(sys.stdin.readline()), repr(sys.stdin.read()))
        print(repr(sys.stdin.read()), list(sys.stdin))
        """,
    )
    stdin = sys.stdin
    run_script(
        path=str(path),
        source=path.read_text(),
        argv=[str(path)],
        model=None,
        directory=str(tmp_path),
        user_ns=user_ns,
        stdin=True,
    )
    assert capsys.readouterr().out.splitlines() == ["Bob 'second\\n' 'third\\n'", "'' []"]
    assert sys.stdin is stdin


def test_the_script_runs_in_the_given_directory(
    tmp_path: Path, user_ns: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    (tmp_path / "data.csv").write_text("a,b\n")
    path = write(tmp_path, "from pathlib import Path\nprint(Path('data.csv').read_text())")
    here = os.getcwd()
    for cwd in (str(tmp_path), str(tmp_path / "not-on-this-machine")):
        try:
            run_script(
                path=str(path),
                source=path.read_text(),
                argv=[str(path)],
                model=None,
                directory=str(tmp_path),
                user_ns=user_ns,
                cwd=cwd,
            )
        except LLMSpellScriptFailed:
            assert cwd.endswith("not-on-this-machine")  # stays in the kernel's directory
        assert os.getcwd() == here
    output = capsys.readouterr()
    assert output.out == "a,b\n\n"
    assert "FileNotFoundError" in output.err


def test_an_llmspell_error_shows_the_scripts_frames_only(
    tmp_path: Path, user_ns: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """`run` with an unknown model printed frames of agent.py, manager.py, backend.py."""
    settings = {
        "providers": {
            "llamacpp": {"options": {"model_directory": str(tmp_path / "models")}},
            "ollama": {"enabled": False},
        }
    }
    path = write(
        tmp_path,
        f"""\
        from providers import Config, ProviderManager

        def ask():
            return ProviderManager(Config.from_dict({settings!r})).info("no-such-model")

        ask()
        """,
    )
    with pytest.raises(LLMSpellScriptFailed, match="ModelNotFound"):
        run_script(
            path=str(path),
            source=path.read_text(),
            argv=[str(path)],
            model=None,
            directory=str(tmp_path),
            user_ns=user_ns,
        )
    err = capsys.readouterr().err
    assert f'File "{path}", line 6, in <module>' in err
    assert f'File "{path}", line 4, in ask' in err
    assert 'File "' + str(Path(__file__).parent.parent / "providers") not in err
    assert err.count('File "') == 2  # the script's two frames, nothing below them
    assert (
        err.rstrip()
        .splitlines()[-1]
        .startswith(
            "providers.errors.ModelNotFound: model 'no-such-model' is not installed anywhere"
        )
    )
