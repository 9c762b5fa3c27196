"""The ``llmspell`` command: global options, sub-command groups and exit codes.

Exit codes: 0 ok; 1 the operation failed (one ``error: ...`` line on stderr, the traceback only
with ``--log-level debug``); 2 a usage error (unknown command or option, bad option value);
130 interrupted by Ctrl-C; 143 ended by SIGTERM or SIGHUP (a closed terminal or SSH session,
``systemctl stop``, a CI timeout). Every way out cancels this command's own model request in the
kernel first (only that one: another client's work goes on).
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from providers.errors import LLMSpellError

from . import signals
from .commands import chat, embed, kernel, logs, model, run
from .context import CliState
from .generation_flags import join_option_pairs
from .help_format import hide_flag_types
from .output import Output

log = logging.getLogger("llmspell_cli")
hide_flag_types()


class OutputFormat(StrEnum):
    text = "text"
    json = "json"


class LogLevel(StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


class LLMSpellGroup(TyperGroup):
    """The root group: turns failures of any sub-command into one error line and exit 1."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:  # type: ignore[override]
        valued = [
            name
            for param in self.params
            if isinstance(param, typer.core.TyperOption) and not param.is_flag
            for name in param.opts
        ]
        return super().parse_args(ctx, join_option_pairs(args, valued))

    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except LLMSpellError as exc:
            _fail(ctx, type(exc).__name__, exc.message, exc)
        except signals.Terminated as exc:
            # The client has already cancelled the kernel-side operation.
            _output(ctx).note(f"\nended by {exc.signal_name}")
            raise typer.Exit(143) from exc
        except KeyboardInterrupt as exc:
            _output(ctx).note("\ninterrupted")
            raise typer.Exit(130) from exc
        except (typer.Exit, typer.Abort, typer.TyperException, BrokenPipeError):
            raise
        except Exception as exc:
            _fail(ctx, type(exc).__name__, f"unexpected {type(exc).__name__}: {exc}", exc)


def _output(ctx: typer.Context) -> Output:
    cli = ctx.obj if isinstance(ctx.obj, CliState) else None
    return cli.output if cli else Output(json_mode=False, stdout=sys.stdout, stderr=sys.stderr)


def _fail(ctx: typer.Context, ename: str, message: str, exc: BaseException) -> None:
    cli = ctx.obj if isinstance(ctx.obj, CliState) else None
    output = _output(ctx)
    if cli is not None and cli.debug:
        output.write_err("".join(traceback.format_exception(exc)))
    output.error(ename, message)
    raise typer.Exit(1) from exc


EPILOG = (
    "Without --connect the kernel runs inside this process; with it, the command runs on the"
    " kernel given by connection file or name (see 'llmspell kernel start'). Output is the"
    " same in both modes. With --output json every command prints one JSON document on stdout;"
    ' a failure prints {"error": {"ename": ..., "evalue": ...}} there. Errors are also one line'
    " on stderr. Exit codes: 0 ok, 1 failed, 2 usage error, 130 interrupted."
)

app = typer.Typer(
    cls=LLMSpellGroup,
    name="llmspell",
    help="Local LLMs behind a Jupyter kernel: manage models, run scripts, chat.",
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(model.app, name="model")
app.add_typer(kernel.app, name="kernel")
app.add_typer(logs.app, name="logs")
run.register(app)
chat.register(app)
embed.register(app)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            text = version("llmspell")
        except PackageNotFoundError:  # running from a checkout that was never installed
            text = "unknown"
        typer.echo(f"llmspell {text}")
        raise typer.Exit()


@app.callback()
def _global_options(
    ctx: typer.Context,
    connect: Annotated[
        str | None,
        typer.Option(
            "--connect",
            metavar="FILE_OR_NAME",
            help="Use a running kernel: its connection file, or a name found in the Jupyter"
            " runtime directory (like 'jupyter console --existing'); user@host:NAME (or"
            " user@host: the newest) is an llmspell kernel on that host, through SSH.",
        ),
    ] = None,
    ssh: Annotated[
        str | None,
        typer.Option(
            "--ssh",
            metavar="[USER@]HOST[:PORT]",
            help="Reach the --connect kernel through an SSH tunnel to this host (like 'jupyter"
            " console --ssh'); without --connect, the newest llmspell kernel there.",
        ),
    ] = None,
    ssh_key: Annotated[
        Path | None,
        typer.Option("--ssh-key", metavar="PATH", help="The SSH key file for --ssh."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            exists=True,
            dir_okay=False,
            help="Configuration file for the embedded kernel (default: $LLMSPELL_CONFIG, then"
            " the user config file).",
        ),
    ] = None,
    output: Annotated[
        OutputFormat,
        typer.Option("--output", "-o", case_sensitive=False, help="text or json."),
    ] = OutputFormat.text,
    log_level: Annotated[
        LogLevel,
        typer.Option(
            "--log-level", case_sensitive=False, help="Logging level (debug shows tracebacks)."
        ),
    ] = LogLevel.warning,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Local LLMs behind a Jupyter kernel: manage models, run scripts, chat."""
    out = Output(json_mode=output is OutputFormat.json, stdout=sys.stdout, stderr=sys.stderr)
    cli = CliState(
        output=out,
        connect=connect,
        ssh=ssh,
        ssh_key=ssh_key,
        config=config,
        debug=log_level is LogLevel.debug,
    )
    ctx.obj = cli
    restore_logging = _configure_logging(log_level, sys.stderr)
    ctx.call_on_close(cli.close)
    ctx.call_on_close(restore_logging)


def _configure_logging(level: LogLevel, stream: Any) -> Callable[[], None]:
    """Send log records to ``stream`` at ``level``; returns the function that undoes it."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.value.upper()))

    def restore() -> None:
        root.removeHandler(handler)
        root.setLevel(previous)

    return restore


def main() -> None:
    """Console-script entry point."""
    signals.install()
    app(prog_name="llmspell")


__all__ = ["app", "main"]
