"""``llmspell run``, ``exec`` and ``repl``: code executed by the kernel, output streamed back."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..context import CliState, state
from ..output import strip_ansi

if TYPE_CHECKING:
    from llmspell_kernel.client import ExecuteResult

# Names the wrapper raises to report how the script ended (they become the reply's ename).
SCRIPT_FAILED = "LLMSpellScriptFailed"
SCRIPT_EXIT = "LLMSpellScriptExit"

# Runs a script in the kernel the way `python SCRIPT ARGS` would: its own `__main__` namespace
# (with the kernel's LocalLLM and Agent), sys.argv set, the source registered with linecache so
# tracebacks show its lines even when the kernel is on another machine, and a plain Python
# traceback on stderr that starts at the script's first frame. Everything is restored after.
_RUN_SCRIPT = """\
def __llmspell_run(path, source, argv, model, directory):
    import builtins, linecache, os, sys, traceback

    class LLMSpellScriptFailed(Exception):
        pass

    class LLMSpellScriptExit(Exception):
        pass

    llm = globals().get("LocalLLM")
    previous_model = llm.default_model if llm is not None else None
    namespace = {"__name__": "__main__", "__file__": path, "__builtins__": builtins}
    for name in ("LocalLLM", "Agent"):
        if name in globals():
            namespace[name] = globals()[name]
    saved_argv = sys.argv
    # Like `python SCRIPT`: the script's directory comes first on sys.path (when it exists here).
    added_path = os.path.isdir(directory) and directory not in sys.path
    if added_path:
        sys.path.insert(0, directory)
    failure = None
    try:
        if model is not None:
            if llm is None:
                raise RuntimeError("this kernel has no LocalLLM: --model cannot be applied")
            llm.set_default_model(model)
        linecache.cache[path] = (len(source), None, source.splitlines(True), path)
        sys.argv = argv
        exec(compile(source, path, "exec"), namespace)
    except SystemExit as exc:
        code = exc.code
        if code is not None and not isinstance(code, int):
            print(code, file=sys.stderr)
            code = 1
        if code:
            failure = LLMSpellScriptExit(str(code))
    except BaseException as exc:
        traceback.print_exception(type(exc), exc, exc.__traceback__.tb_next, file=sys.stderr)
        failure = LLMSpellScriptFailed(f"{type(exc).__name__}: {exc}")
    finally:
        sys.argv = saved_argv
        if added_path and directory in sys.path:
            sys.path.remove(directory)
        if llm is not None and model is not None:
            llm.set_default_model(previous_model)
        sys.stdout.flush()
        sys.stderr.flush()
    if failure is not None:
        raise failure from None
"""


def script_code(path: str, source: str, argv: list[str], model: str | None, directory: str) -> str:
    """The cell that runs ``source`` as ``__main__`` with ``sys.argv = argv`` and
    ``directory`` (the script's, absolute) first on ``sys.path``."""
    call = f"__llmspell_run({path!r}, {source!r}, {argv!r}, {model!r}, {directory!r})"
    return f"{_RUN_SCRIPT}\ntry:\n    {call}\nfinally:\n    del __llmspell_run\n"


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


def _execute(cli: CliState, code: str) -> tuple[ExecuteResult, _Collected]:
    collected = _Collected(cli)
    client = cli.client()
    try:
        result = client.execute(code, on_output=collected)
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
    result, collected = _execute(cli, script_code(str(script), source, argv, model, directory))
    _finish(cli, result, collected, script=True)


def exec_code(
    ctx: typer.Context,
    code: Annotated[str, typer.Argument(help="Python (IPython) code; '-' reads stdin.")],
) -> None:
    """Execute code in the kernel and print its output (and its result, like a cell)."""
    cli = state(ctx)
    if code == "-":
        code = sys.stdin.read()
    result, collected = _execute(cli, code)
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
