"""``llmspell run``, ``exec`` and ``repl``: code executed by the kernel, output streamed back."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import typer

from llmspell_kernel.script_runner import LLMSpellScriptExit, LLMSpellScriptFailed

from ..context import CliState, state
from ..output import strip_ansi

if TYPE_CHECKING:
    from llmspell_kernel.client import ExecuteResult

# Names of the exceptions by which the script runner reports how a script ended (they become
# the reply's ename).
SCRIPT_FAILED = LLMSpellScriptFailed.__name__
SCRIPT_EXIT = LLMSpellScriptExit.__name__


def script_code(
    path: str,
    source: str,
    argv: list[str],
    model: str | None,
    directory: str,
    *,
    cwd: str | None = None,
    stdin: bool = False,
) -> str:
    """The cell that runs ``source`` as ``__main__`` with ``sys.argv = argv`` and
    ``directory`` (the script's, absolute) first on ``sys.path``, in ``cwd`` (when given), and
    with ``stdin`` its ``sys.stdin`` read from the client
    (:func:`llmspell_kernel.script_runner.run_script`); it leaves no name behind."""
    call = (
        f"__llmspell_run_script(path={path!r}, source={source!r}, argv={argv!r}, "
        f"model={model!r}, directory={directory!r}, user_ns=globals(), cwd={cwd!r}, "
        f"stdin={stdin!r})"
    )
    return (
        "from llmspell_kernel.script_runner import run_script as __llmspell_run_script\n"
        f"try:\n    {call}\nfinally:\n    del __llmspell_run_script\n"
    )


@dataclass
class _Collected:
    """Output of code run by the kernel: streamed live (text mode) or kept (JSON mode)."""

    cli: CliState
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)

    def __call__(self, name: str, text: str) -> None:
        if name not in ("stdout", "stderr") and not text.endswith("\n"):
            text += "\n"  # a cell's result (text/plain) is a line of its own
        if name == "stderr":
            self.stderr.append(text)
            if not self.cli.json_mode:
                self.cli.output.write_err(text)
        else:
            self.stdout.append(text)
            if not self.cli.json_mode:
                self.cli.output.write(text)


@dataclass
class _Input:
    """Answers the kernel's input requests with the lines of ``stdin`` (this process's, taken
    before the code runs: an embedded kernel's script swaps ``sys.stdin`` in this process); the
    prompt is output, as ``input()`` writes it to stdout."""

    output: _Collected
    stdin: TextIO

    def __call__(self, prompt: str, password: bool) -> str:
        from llmspell_kernel.client import END_OF_INPUT

        if prompt:
            self.output("stdout", prompt)
        line = self.stdin.readline()
        if not line:
            return END_OF_INPUT
        return line.removesuffix("\n")


def _execute(cli: CliState, code: str, *, stdin: bool = True) -> tuple[ExecuteResult, _Collected]:
    collected = _Collected(cli)
    client = cli.client()
    try:
        on_input = _Input(collected, sys.stdin) if stdin else None
        result = client.execute(code, on_output=collected, on_input=on_input)
    except KeyboardInterrupt:
        client.interrupt()
        raise
    return result, collected


def _finish(cli: CliState, result: ExecuteResult, collected: _Collected, *, script: bool) -> None:
    """Report how the code ended; exits non-zero when it failed."""
    exit_code = 0
    error: dict[str, Any] | None = None
    if result.status != "ok":
        ename = result.ename or "Error"
        if script and ename == SCRIPT_EXIT:
            exit_code = int(result.evalue or 1)
        else:
            exit_code = 1
            traceback = "\n".join(result.traceback or [])
            error = {"ename": ename, "evalue": result.evalue, "traceback": strip_ansi(traceback)}
            if script and ename == SCRIPT_FAILED:
                # The wrapper already printed the script's traceback on stderr.
                error["traceback"] = "".join(collected.stderr)
            elif not cli.json_mode:
                cli.output.ansi_err(traceback or f"{ename}: {result.evalue}")
    if cli.json_mode:
        cli.output.document(
            {
                "status": "ok" if exit_code == 0 else "error",
                "exit_code": exit_code,
                "stdout": "".join(collected.stdout),
                "stderr": "".join(collected.stderr),
                "error": error,
            }
        )
    if exit_code:
        raise typer.Exit(exit_code)


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("exec")(exec_code)
    app.command("repl")(repl)


def run(
    ctx: typer.Context,
    script: Annotated[
        Path,
        typer.Argument(
            exists=True,
            dir_okay=False,
            readable=True,
            metavar="SCRIPT",
            help="The Python script to run.",
        ),
    ],
    args: Annotated[
        list[str] | None,
        typer.Argument(metavar="ARGS", help="Arguments for the script (sys.argv[1:])."),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Model that Agent() uses when none is named."),
    ] = None,
) -> None:
    """Run a Python script in the kernel, with LocalLLM and Agent available.

    Its output streams as it is printed; if it raises, the traceback is shown and the exit
    status is 1 (sys.exit(n) gives n).
    """
    cli = state(ctx)
    try:
        source = script.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise typer.BadParameter(f"cannot read {script}: {exc}", param_hint="SCRIPT") from exc
    argv = [str(script), *(args or [])]
    directory = str(script.resolve().parent)
    client = cli.client()
    # A kernel on this machine runs the script in this directory; one elsewhere in its own.
    cwd = os.getcwd() if client.on_this_machine else None
    code = script_code(str(script), source, argv, model, directory, cwd=cwd, stdin=True)
    result, collected = _execute(cli, code)
    _finish(cli, result, collected, script=True)


def exec_code(
    ctx: typer.Context,
    code: Annotated[str, typer.Argument(help="Python (IPython) code; '-' reads stdin.")],
) -> None:
    """Execute code in the kernel and print its output (and its result, like a cell)."""
    cli = state(ctx)
    from_stdin = code == "-"
    if from_stdin:
        code = sys.stdin.read()
    result, collected = _execute(cli, code, stdin=not from_stdin)
    _finish(cli, result, collected, script=False)


def repl(
    ctx: typer.Context,
    simple_prompt: Annotated[
        bool | None,
        typer.Option(
            "--simple-prompt/--rich-prompt",
            help="Plain input() prompt (the default when stdin is not a terminal).",
        ),
    ] = None,
) -> None:
    """An interactive IPython console (jupyter_console) on the same kernel."""
    from ..console import run_console

    cli = state(ctx)
    if cli.json_mode:
        raise typer.BadParameter("repl is interactive: no JSON output", param_hint="--output")
    client = cli.client()
    interactive = sys.stdin.isatty()
    run_console(
        client,
        simple_prompt=not interactive if simple_prompt is None else simple_prompt,
        confirm_exit=interactive,
    )
