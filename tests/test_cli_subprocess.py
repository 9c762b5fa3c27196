"""The installed ``llmspell`` program in subprocesses, against the real model, in both modes:
embedded (the kernel inside the CLI process) and connected (``--connect`` to a daemon kernel
started with ``llmspell kernel start --daemon``). Both must print the same thing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import cli_fixtures, hub_fixtures
from tests.cli_fixtures import (
    GEMMA,
    GEMMA_SPEC,
    LLMSPELL,
    SUBPROCESS_TIMEOUT,
    CliSession,
    isolated_env,
    run_cli,
)
from tests.hub_standin import HubStandin

cli_session = cli_fixtures.cli_session
daemon = cli_fixtures.daemon
hub = hub_fixtures.hub

pytestmark = [pytest.mark.model, pytest.mark.slow]

CATALOG_REPO = "unsloth/gemma-3-270m-it-GGUF"
CATALOG_FILE = "gemma-3-270m-it-Q4_K_M.gguf"
# Makes rich treat the pipe as an interactive terminal: the live progress bar is drawn.
FORCE_TERMINAL = {"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1", "COLUMNS": "120"}


def both_modes(
    args: list[str],
    session: CliSession,
    kernel: dict[str, Any],
    *,
    input: str | None = None,
    cwd: Path | None = None,
) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    embedded = run_cli(args, session.env, input=input, cwd=cwd)
    connected = run_cli(["--connect", kernel["id"], *args], session.env, input=input, cwd=cwd)
    return embedded, connected


def test_model_commands_print_the_same_in_both_modes(
    cli_session: CliSession, daemon: dict[str, Any]
) -> None:
    # Nothing loaded in the daemon, as in a fresh embedded kernel.
    run_cli(["--connect", daemon["id"], "model", "unload", GEMMA], cli_session.env)
    for args in (
        ["--output", "json", "model", "list"],
        ["--output", "json", "model", "info", GEMMA],
        ["--output", "json", "model", "status"],
        ["model", "list", "-v"],
        ["model", "info", GEMMA_SPEC],
    ):
        embedded, connected = both_modes(args, cli_session, daemon)
        assert embedded.returncode == connected.returncode == 0, embedded.stderr + connected.stderr
        assert embedded.stdout == connected.stdout, args
        if "json" in args:
            json.loads(embedded.stdout)  # one document
    listed = json.loads(run_cli(["-o", "json", "model", "list"], cli_session.env).stdout)
    assert [m["id"] for m in listed["models"]] == [GEMMA]


def test_errors_are_the_same_in_both_modes(cli_session: CliSession, daemon: dict[str, Any]) -> None:
    embedded, connected = both_modes(
        ["--output", "json", "model", "info", "missing@llamacpp"], cli_session, daemon
    )
    assert embedded.returncode == connected.returncode == 1
    assert json.loads(embedded.stdout) == json.loads(connected.stdout)
    assert json.loads(embedded.stdout)["error"]["ename"] == "ModelNotFound"
    for result in (embedded, connected):
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1


def read_chunks(args: list[str], env: dict[str, str]) -> tuple[list[bytes], int, str]:
    """Run llmspell and read its stdout as it comes: the pieces read, exit status, stderr."""
    process = subprocess.Popen(
        [str(LLMSPELL), *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    chunks: list[bytes] = []
    deadline = time.monotonic() + SUBPROCESS_TIMEOUT
    try:
        while time.monotonic() < deadline:
            piece = os.read(process.stdout.fileno(), 65536)
            if not piece:
                break
            chunks.append(piece)
        status = process.wait(timeout=30)
        stderr = process.stderr.read().decode()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()
    return chunks, status, stderr


@pytest.mark.parametrize("connected", [False, True], ids=["embedded", "connected"])
def test_prompt_streams_the_completion(
    cli_session: CliSession, daemon: dict[str, Any], connected: bool
) -> None:
    args = ["prompt", "-m", GEMMA_SPEC, "--max-tokens", "24", "Write a sentence about the sea."]
    if connected:
        args = ["--connect", daemon["id"], *args]
    chunks, status, stderr = read_chunks(args, cli_session.env)
    assert status == 0, stderr
    text = b"".join(chunks).decode()
    assert text.endswith("\n") and text.strip()
    # Printed piece by piece as the kernel streams it, not all at once at the end.
    assert len(chunks) >= 2, chunks


SCRIPT = textwrap.dedent(
    """\
    import sys

    print("args", sys.argv[1:], flush=True)
    reply = Agent(max_tokens=8, temperature=0, seed=1).complete("Name a colour.")
    print("reply", bool(reply.strip()))
    if "--fail" in sys.argv:
        raise RuntimeError("failing on request")
    """
)


def test_run_a_script_in_both_modes(
    cli_session: CliSession, daemon: dict[str, Any], tmp_path: Path
) -> None:
    script = tmp_path / "agent_job.py"
    script.write_text(SCRIPT)
    embedded, connected = both_modes(
        ["run", str(script), "--model", GEMMA_SPEC, "--", "one", "two"], cli_session, daemon
    )
    for result in (embedded, connected):
        assert result.returncode == 0, result.stderr
        assert result.stdout == "args ['one', 'two']\nreply True\n"
    failed = run_cli(
        ["--connect", daemon["id"], "run", str(script), "-m", GEMMA_SPEC, "--", "--fail"],
        cli_session.env,
    )
    assert failed.returncode == 1
    assert f'File "{script}", line 7, in <module>' in failed.stderr
    assert failed.stderr.rstrip().endswith("RuntimeError: failing on request")


READS_STDIN_AND_A_FILE = """\
import sys
name = input("name? ")
print("hello", name, repr(sys.stdin.read()))
with open(sys.argv[1]) as data:
    print(data.read().strip())
print(input())
"""


def test_run_reads_stdin_and_relative_paths_like_python(
    cli_session: CliSession, daemon: dict[str, Any], tmp_path: Path
) -> None:
    """`echo Bob | llmspell run ask.py` raised StdinNotImplementedError; with --connect,
    sys.stdin was empty and `-- data.csv` was looked for in the kernel's directory."""
    (tmp_path / "ask.py").write_text(READS_STDIN_AND_A_FILE)
    (tmp_path / "data.csv").write_text("a,b\n1,2\n")
    lines = "Bob\nline 2\nline 3\n"
    local = subprocess.run(
        [sys.executable, "ask.py", "data.csv"],
        input=lines,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "EOFError" in local.stderr  # the last input() finds the end of stdin
    for result in both_modes(
        ["run", "ask.py", "--", "data.csv"], cli_session, daemon, input=lines, cwd=tmp_path
    ):
        assert result.returncode == 1, result.stderr
        assert result.stdout == local.stdout
        assert result.stdout == "name? hello Bob 'line 2\\nline 3\\n'\na,b\n1,2\n"
        assert result.stderr.rstrip().endswith("EOFError")


@pytest.mark.parametrize("connected", [False, True], ids=["embedded", "connected"])
def test_repl_runs_jupyter_console_on_the_kernel(
    cli_session: CliSession, daemon: dict[str, Any], connected: bool
) -> None:
    args = ["repl"] if not connected else ["--connect", daemon["id"], "repl"]
    result = run_cli(args, cli_session.env, input="print(6 * 7)\n'Loca' + 'lLLM' in dir()\n")
    assert result.returncode == 0, result.stderr
    assert "42" in result.stdout
    assert "True" in result.stdout  # the kernel's namespace, with LocalLLM in it
    if connected:  # leaving the console does not stop a kernel others use
        alive = run_cli(["--connect", daemon["id"], "exec", "print('alive')"], cli_session.env)
        assert alive.stdout == "alive\n"


@pytest.fixture
def pull_env(hub: HubStandin, gemma_path: Path, tmp_path: Path) -> Iterator[dict[str, str]]:
    hub.add_repo(CATALOG_REPO, {CATALOG_FILE: gemma_path})
    env = isolated_env(tmp_path / "pull", tmp_path / "pull" / "models")
    env["HF_ENDPOINT"] = hub.url
    yield env


def test_pull_shows_a_live_progress_bar(pull_env: dict[str, str], hub: HubStandin) -> None:
    hub.faults.delay = 0.0005  # ~2 s for the 253 MB: long enough for several redraws
    result = run_cli(["model", "pull", "gemma3-270m@llamacpp"], {**pull_env, **FORCE_TERMINAL})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("pulled gemma3-270m:Q4_K_M (253.1 MB")
    frames = result.stderr.split("\x1b[2K")  # erase line: each redraw
    assert len(frames) > 2  # redrawn in place as bytes arrive
    final = frames[-1]
    assert "253.1/253.1 MB" in final
    assert "done" in final
    assert any("MB/s" in frame or "GB/s" in frame for frame in frames)
    assert len(hub.downloads(CATALOG_FILE)) >= 1
    # nothing but the bar: e.g. tqdm's "IProgress not found" warning inside the kernel
    assert "Warning" not in result.stderr


def test_pull_on_a_connected_kernel_then_the_same_listing(pull_env: dict[str, str]) -> None:
    started = run_cli(["--output", "json", "kernel", "start", "--daemon"], pull_env)
    assert started.returncode == 0, started.stderr
    kernel = json.loads(started.stdout)
    try:
        connect = ["--connect", kernel["id"]]
        pulled = run_cli([*connect, "model", "pull", "gemma3-270m@llamacpp"], pull_env)
        assert pulled.returncode == 0, pulled.stderr
        assert "gemma3-270m@llamacpp: 253.1 MB of 253.1 MB (100%)" in pulled.stderr
        as_json = run_cli(
            [*connect, "-o", "json", "model", "pull", "gemma3-270m@llamacpp"], pull_env
        )
        assert json.loads(as_json.stdout)["model"]["id"] == "gemma3-270m:Q4_K_M"
        connected = run_cli([*connect, "-o", "json", "model", "list"], pull_env)
        embedded = run_cli(["-o", "json", "model", "list"], pull_env)
        assert connected.stdout == embedded.stdout
        assert [m["id"] for m in json.loads(embedded.stdout)["models"]] == ["gemma3-270m:Q4_K_M"]
    finally:
        run_cli(["kernel", "stop", kernel["id"]], pull_env, timeout=60)


@pytest.mark.parametrize("connected", [False, True], ids=["embedded", "connected"])
def test_ctrl_c_stops_only_the_current_chat_answer(
    cli_session: CliSession, daemon: dict[str, Any], connected: bool
) -> None:
    args = ["chat", "-m", GEMMA_SPEC, "--max-tokens", "400", "--temperature", "0.8"]
    if connected:
        args = ["--connect", daemon["id"], *args]
    process = subprocess.Popen(
        [str(LLMSPELL), *args],
        env=cli_session.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        process.stdin.write(b"Tell me a very long story about a lighthouse keeper.\n")
        process.stdin.flush()
        seen = b""
        deadline = time.monotonic() + SUBPROCESS_TIMEOUT
        while b">>> " not in seen and time.monotonic() < deadline:  # the prompt is printed
            seen += os.read(process.stdout.fileno(), 4096)
        # Wait for the answer to start streaming, then press Ctrl-C in the middle of it.
        while len(seen.split(b">>> ", 1)[1]) < 20 and time.monotonic() < deadline:
            seen += os.read(process.stdout.fileno(), 4096)
        process.send_signal(signal.SIGINT)
        process.stdin.write(b"/exit\n")
        process.stdin.flush()
        rest, stderr = process.communicate(timeout=60)  # closes stdin: EOF after /exit
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr.decode()
    assert "[answer interrupted]" in stderr.decode()
    assert (seen + rest).count(b">>> ") == 2  # the chat went on to the next prompt


def test_ctrl_c_during_a_prompt_exits_130(cli_session: CliSession, daemon: dict[str, Any]) -> None:
    args = ["--connect", daemon["id"], "prompt", "-m", GEMMA_SPEC, "--max-tokens", "400"]
    process = subprocess.Popen(
        [str(LLMSPELL), *args, "Tell me a very long story about a lighthouse keeper."],
        env=cli_session.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        os.read(process.stdout.fileno(), 4096)  # the answer has started
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130
    # one line for the interrupt, after the base-model notice (this GGUF has no chat template)
    lines = stderr.decode().strip().splitlines()
    assert lines[-1] == "interrupted" and "Traceback" not in stderr.decode()
    assert all("no chat template of its own" in line for line in lines[:-1] if line), lines
    # The kernel stopped generating and answers the next request at once.
    again = run_cli(
        ["--connect", daemon["id"], "exec", "print('still serving')"], cli_session.env, timeout=30
    )
    assert again.stdout == "still serving\n"


def test_kernel_start_in_the_foreground_until_ctrl_c(tmp_path: Path) -> None:
    env = isolated_env(tmp_path / "fg", tmp_path / "fg" / "models")
    process = subprocess.Popen(
        [str(LLMSPELL), "kernel", "start"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    try:
        # stdout has our two lines only: the kernel process's own banner goes to stderr
        lines = [process.stdout.readline(), process.stdout.readline()]
        assert lines[0].startswith("kernel "), lines
        assert lines[1].startswith("connection file: "), lines
        kernel_id = lines[0].split()[1]
        listed = json.loads(run_cli(["-o", "json", "kernel", "list"], env).stdout)["kernels"]
        assert [k["id"] for k in listed] == [kernel_id]
        ran = run_cli(["--connect", kernel_id, "exec", "print(1 + 1)"], env)
        assert ran.stdout == "2\n"
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr
    assert f"kernel {kernel_id} stopped" in stderr
    assert json.loads(run_cli(["-o", "json", "kernel", "list"], env).stdout) == {"kernels": []}


def test_model_commands_refuse_a_kernel_that_is_not_llmspell(tmp_path: Path) -> None:
    env = isolated_env(tmp_path / "ipy", tmp_path / "ipy" / "models")
    connection_file = tmp_path / "ipython-kernel.json"
    kernel = subprocess.Popen(
        [sys.executable, "-m", "ipykernel_launcher", "-f", str(connection_file)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not connection_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        listed = run_cli(["--connect", str(connection_file), "model", "list"], env, timeout=60)
        assert listed.returncode == 1
        assert "is not an llmspell kernel" in listed.stderr
        ran = run_cli(["--connect", str(connection_file), "exec", "print(2 ** 5)"], env)
        assert ran.stdout == "32\n"  # code runs on any Jupyter kernel
    finally:
        kernel.kill()
        kernel.wait()
