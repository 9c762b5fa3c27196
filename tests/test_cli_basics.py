"""The CLI without a kernel: help, version, usage errors (exit 2), install-ollama, output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llmspell_cli import ollama_install
from llmspell_cli.output import Output, human_size, one_line, short_time, strip_ansi
from tests.cli_fixtures import invoke, isolated_env, json_of

COMMANDS = ("run", "exec", "repl", "chat", "prompt", "model", "kernel")
MODEL_COMMANDS = (
    "list",
    "pull",
    "remove",
    "info",
    "available",
    "status",
    "import",
    "load",
    "unload",
    "ps",
    "install-ollama",
)
KERNEL_COMMANDS = ("start", "list", "stop", "install")


def test_help_lists_every_command() -> None:
    result = invoke(["--help"])
    assert result.exit_code == 0
    for name in (*COMMANDS, "--connect", "--config", "--output", "--log-level", "--version"):
        assert name in result.stdout
    model = invoke(["model", "--help"])
    assert all(name in model.stdout for name in MODEL_COMMANDS)
    kernel = invoke(["kernel", "--help"])
    assert all(name in kernel.stdout for name in KERNEL_COMMANDS)


def test_version() -> None:
    from importlib.metadata import version

    result = invoke(["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"llmspell {version('llmspell')}"


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["model", "--help"]])
def test_help_and_version_import_no_heavy_module(args: list[str]) -> None:
    heavy = ("llama_cpp", "huggingface_hub", "ipykernel", "zmq", "jupyter_client", "IPython")
    done = run_and_list_modules(args, heavy)
    assert "LOADED []" in done.stderr and "EXIT 0" in done.stderr, done.stderr


def run_and_list_modules(
    args: list[str], heavy: tuple[str, ...], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``llmspell ARGS`` in a fresh Python; its stderr ends with ``EXIT code`` and ``LOADED
    [...]``, the modules of ``heavy`` it imported."""
    code = (
        "import sys, runpy\n"
        f"sys.argv = ['llmspell', *{args!r}]\n"
        "try:\n"
        "    runpy.run_module('llmspell_cli', run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    print('EXIT', exc.code or 0, file=sys.stderr)\n"
        f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r})\n"
        "print('LOADED', loaded, file=sys.stderr)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )


@pytest.mark.parametrize(
    "args",
    [
        ["model", "list"],
        ["model", "status"],
        ["model", "ps"],
        ["model", "available", "--backend", "llamacpp"],
        ["model", "info", "no-such-model@llamacpp"],
    ],
)
def test_read_only_commands_start_no_kernel_without_connect(
    args: list[str], tmp_path: Path
) -> None:
    """They run the kernel's own handlers in the CLI's process (the answers are the same as a
    kernel's: test_cli_subprocess compares a listing of both), so no ipykernel, no ZeroMQ."""
    heavy = ("llama_cpp", "ipykernel", "zmq", "jupyter_client", "IPython")
    env = isolated_env(tmp_path / "home", tmp_path / "models")
    done = run_and_list_modules(args, heavy, env)
    assert "LOADED []" in done.stderr, done.stderr
    expected = "EXIT 1" if args[1] == "info" else "EXIT 0"  # a missing model: its error
    assert expected in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["no-such-command"], "No such command"),
        (["--output", "yaml", "model", "list"], "--output"),
        (["--log-level", "loud", "model", "list"], "--log-level"),
        (["--config", "/no/such/config.toml", "model", "list"], "--config"),
        (["model", "list", "--backend", "no pe"], "invalid backend name"),
        (["model", "info"], "SPEC"),
        (["prompt", "hello"], "--model"),
        (["prompt", "-m", "gemma3-270m", "   "], "the prompt is empty"),
        (["prompt", "-m", "gemma3-270m", "--max-tokens", "0", "hi"], "--max-tokens"),
        (["prompt", "-m", "gemma3-270m", "--temperature", "-1", "hi"], "--temperature"),
        (["run", "/no/such/script.py"], "does not exist"),
        (["kernel", "stop"], "give a kernel ID or --all"),
        (["kernel", "stop", "abc", "--all"], "give a kernel ID or --all"),
        (["kernel", "start", "--ip", "not-an-ip"], "not an IP address"),
        (["kernel", "install", "--user", "--sys-prefix"], "exclude each other"),
        (["kernel", "install", "--gateway", "yarn"], "not a process proxy llmspell supp"),
        (["kernel", "install", "--gateway", "kubernetes"], "needs --image"),
        (["kernel", "install", "--image", "x"], "Invalid value for --image"),
        (["--output", "json", "repl"], "no JSON output"),
    ],
)
def test_usage_errors_exit_2(args: list[str], complaint: str) -> None:
    result = invoke(args)
    assert result.exit_code == 2, result.stdout + result.stderr
    assert complaint in " ".join(result.stderr.split()), result.stderr
    assert "Traceback" not in result.stderr


def test_prompt_reads_an_empty_stdin_as_a_usage_error() -> None:
    result = invoke(["prompt", "-m", "gemma3-270m", "-"], input="")
    assert result.exit_code == 2
    assert "the prompt is empty" in result.stderr


# install-ollama ------------------------------------------------------------------------------


@pytest.fixture
def no_installer(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Linux, no ollama on PATH until a run "installs" it, and a recorder instead of running
    anything."""
    ran: list[list[str]] = []
    just_installed: list[bool] = []

    def record(plan: ollama_install.InstallPlan) -> int:
        assert plan.command is not None
        ran.append(plan.command)
        just_installed.append(True)
        return 0

    def installed() -> str | None:
        return "/usr/local/bin/ollama" if just_installed and just_installed.pop() else None

    monkeypatch.setattr(
        ollama_install, "plan_for_this_system", lambda: ollama_install.plan_for("Linux")
    )
    monkeypatch.setattr(ollama_install, "run", record)
    monkeypatch.setattr(ollama_install, "installed", installed)
    return ran


def test_install_ollama_prints_the_steps_and_runs_nothing_without_a_yes(
    no_installer: list[list[str]],
) -> None:
    result = invoke(["model", "install-ollama"])  # stdin at EOF: nobody said yes
    assert result.exit_code == 0
    assert ollama_install.LINUX_SCRIPT in result.stdout
    assert "not run" in result.stderr
    refused = invoke(["model", "install-ollama"], input="n\n")
    assert refused.exit_code == 0
    assert "not run" in refused.stderr
    assert no_installer == []


def test_install_ollama_runs_the_official_script_after_a_yes(
    no_installer: list[list[str]],
) -> None:
    result = invoke(["model", "install-ollama"], input="y\n")
    assert result.exit_code == 0
    assert no_installer == [["sh", "-c", ollama_install.LINUX_COMMAND]]
    assert "ollama installed (/usr/local/bin/ollama)" in result.stderr
    forced = invoke(["--output", "json", "model", "install-ollama", "-y"])
    document = json_of(forced)
    assert document["ran"] is True
    assert document["returncode"] == 0
    assert len(no_installer) == 2


def test_install_ollama_json_documents_the_plan(no_installer: list[list[str]]) -> None:
    result = invoke(["--output", "json", "model", "install-ollama"])
    assert result.exit_code == 0
    document = json_of(result)
    assert document["system"] == "Linux"
    assert document["command"] == ["sh", "-c", ollama_install.LINUX_COMMAND]
    assert document["ran"] is False
    assert no_installer == []


def test_install_ollama_cannot_run_the_windows_installer(
    monkeypatch: pytest.MonkeyPatch, no_installer: list[list[str]]
) -> None:
    monkeypatch.setattr(
        ollama_install, "plan_for_this_system", lambda: ollama_install.plan_for("Windows")
    )
    printed = invoke(["model", "install-ollama"])
    assert printed.exit_code == 0
    assert ollama_install.WINDOWS_INSTALLER in printed.stdout
    forced = invoke(["model", "install-ollama", "-y"])
    assert forced.exit_code == 1
    assert forced.stderr.count("\n") == 1
    assert forced.stderr.startswith("error: ")
    assert no_installer == []


def test_install_ollama_failure_exits_1(
    monkeypatch: pytest.MonkeyPatch, no_installer: list[list[str]]
) -> None:
    monkeypatch.setattr(ollama_install, "run", lambda plan: 7)
    result = invoke(["model", "install-ollama", "-y"])
    assert result.exit_code == 1
    assert "exit status 7" in result.stderr


def _fake_curl(bin_dir: Path, body: str) -> None:
    """A ``curl`` first on PATH: ``body`` is its shell script."""
    bin_dir.mkdir(exist_ok=True)
    curl = bin_dir / "curl"
    curl.write_text(f"#!/bin/sh\n{body}\n", encoding="utf-8")
    curl.chmod(0o755)


@pytest.fixture
def linux_without_ollama(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Linux, the real command run, a PATH of a private bin directory and the system's own
    (``sh``, ``mktemp``), and no ``ollama`` anywhere on it; returns the private bin directory."""
    import os
    import shutil

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    system = [d for d in ("/usr/bin", "/bin") if Path(d).is_dir()]
    monkeypatch.setenv("PATH", os.pathsep.join([str(bin_dir), *system]))
    monkeypatch.setattr(
        ollama_install, "plan_for_this_system", lambda: ollama_install.plan_for("Linux")
    )
    if shutil.which("ollama") is not None:
        pytest.skip("an ollama is installed in the system directories")
    return bin_dir


def test_install_ollama_fails_when_the_download_fails(linux_without_ollama: Path) -> None:
    """Offline, curl fails with 6: the install failed (``curl | sh`` used to say it worked)."""
    _fake_curl(
        linux_without_ollama, "echo 'curl: (6) Could not resolve host: ollama.com' >&2; exit 6"
    )
    result = invoke(["model", "install-ollama", "-y"])
    assert result.exit_code == 1, result.stderr
    assert "exit status 6" in result.stderr
    assert "ollama installed" not in result.stderr
    document = json_of(invoke(["--output", "json", "model", "install-ollama", "-y"]))
    assert (document["ran"], document["returncode"]) == (True, 6)


def test_install_ollama_fails_when_no_ollama_is_on_path_after(linux_without_ollama: Path) -> None:
    _fake_curl(linux_without_ollama, 'printf "exit 0\\n" > "$4"')  # curl -fsSL URL -o FILE
    result = invoke(["model", "install-ollama", "-y"])
    assert result.exit_code == 1, result.stderr
    assert "no 'ollama' on PATH" in result.stderr
    assert "ollama installed" not in result.stderr


def test_install_ollama_succeeds_when_ollama_is_on_path_after(linux_without_ollama: Path) -> None:
    ollama = linux_without_ollama / "ollama"
    script = f'printf "printf \'#!/bin/sh\\\\n\' > {ollama}; chmod 755 {ollama}\\n" > "$4"'
    _fake_curl(linux_without_ollama, script)
    result = invoke(["--output", "json", "model", "install-ollama", "-y"])
    assert result.exit_code == 0, result.stderr
    document = json_of(result)
    assert (document["ran"], document["returncode"]) == (True, 0)
    assert document["installed_at"] == str(ollama)
    assert f"ollama installed ({ollama})" in result.stderr


def test_install_plans_per_system() -> None:
    assert ollama_install.plan_for("Darwin", has_brew=True).command == ["brew", "install", "ollama"]
    assert ollama_install.plan_for("Darwin").command is None
    assert ollama_install.plan_for("Darwin").steps[0].startswith("download ")
    assert ollama_install.plan_for("Linux").command_text == ollama_install.LINUX_SCRIPT
    assert ollama_install.plan_for("Plan9").command is None


# output helpers -----------------------------------------------------------------------------


def test_output_helpers() -> None:
    assert human_size(253_113_024) == "253.1 MB"
    assert human_size(None) == "-"
    assert short_time("2026-11-25T23:01:02.5+00:00") == "2026-11-25 23:01"
    assert strip_ansi("\x1b[0;31mZeroDivisionError\x1b[0m") == "ZeroDivisionError"
    assert one_line("first\n\n  second  \n") == "first; second"


def test_json_errors_are_one_document_and_one_line(tmp_path: Path) -> None:
    out_file = tmp_path / "out"
    err_file = tmp_path / "err"
    with out_file.open("w") as out, err_file.open("w") as err:
        output = Output(json_mode=True, stdout=out, stderr=err)
        output.error("ModelNotFound", "model 'x' is not installed\n(try pull)")
    assert json.loads(out_file.read_text()) == {
        "error": {"ename": "ModelNotFound", "evalue": "model 'x' is not installed\n(try pull)"}
    }
    assert err_file.read_text() == "error: model 'x' is not installed; (try pull)\n"
