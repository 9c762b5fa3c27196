"""``llmspell prompt`` (one completion) and ``llmspell chat`` (a conversation).

Both send ``generate`` requests with ``messages`` and ``stream=True`` and print the text as the
kernel streams it. ``chat`` keeps the history on this side and sends it whole with each turn.
``prompt --raw`` sends the text as a plain ``prompt`` instead: the model continues it with no chat
template, as Ollama's ``raw`` mode does (the way to use a base model).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from providers.errors import LLMSpellError

from ..context import CliState, state
from ..generation_flags import with_generation_flags, with_output_format
from ..signals import Terminated

if TYPE_CHECKING:
    from llmspell_kernel.protocol.results import GenerateResult
    from providers.options import GenerationOptions, Message
    from providers.types import Metrics, Progress

CHAT_HELP = (
    "/exit or Ctrl-D ends the chat, /clear forgets the history, /history shows it, /system TEXT"
    ' sets the system prompt, /save FILE writes the conversation as JSON, """ starts and ends'
    " a multi-line message, Ctrl-C stops an answer."
)
MULTILINE = '"""'

ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        metavar="SPEC",
        help="Model spec, e.g. gemma3-270m@llamacpp (default: $LLMSPELL_MODEL, else"
        " default_model in the config).",
    ),
]
SystemOption = Annotated[str | None, typer.Option("--system", "-s", help="System prompt.")]
NoLogOption = Annotated[
    bool, typer.Option("--no-log", help="Keep this out of the conversation log (`logs list`).")
]


def _generate(
    cli: CliState,
    model: str,
    messages: list[Message] | str,
    options: GenerationOptions,
    *,
    on_stream: Callable[[str], None] | None = None,
    stream: bool = True,
) -> GenerateResult:
    """One generation (a chat turn, or a raw completion when given a string); streamed to
    stdout in text mode (unless not ``stream``), whole in JSON mode."""
    on_text = None if cli.json_mode or not stream else (on_stream or cli.output.write)
    waiting = _Waiting(cli)
    if isinstance(messages, str):
        return cli.kernel().generate(
            model, prompt=messages, options=options, on_text=on_text, on_progress=waiting
        )
    return cli.kernel().generate(
        model, messages=messages, options=options, on_text=on_text, on_progress=waiting
    )


class _Waiting:
    """Says on stderr when the model is busy with other requests: ``waiting for gemma3-270m
    (1 ahead)``, once per change."""

    def __init__(self, cli: CliState) -> None:
        self.cli = cli
        self.ahead: int | None = None

    def __call__(self, progress: Progress) -> None:
        if progress.phase == "queued" and progress.ahead != self.ahead:
            self.ahead = progress.ahead
            self.cli.output.note(f"waiting for {progress.model} ({progress.ahead} ahead)")


class _StreamedAnswer:
    """Prints an answer's pieces as they arrive and keeps them (for an interrupted answer)."""

    def __init__(self, cli: CliState) -> None:
        self.cli = cli
        self.pieces: list[str] = []

    def __call__(self, piece: str) -> None:
        self.pieces.append(piece)
        self.cli.output.write(piece)


def register(app: typer.Typer) -> None:
    app.command("prompt")(prompt)
    app.command("chat")(chat)


@with_generation_flags
def prompt(
    ctx: typer.Context,
    text: Annotated[str, typer.Argument(metavar="TEXT", help="The prompt; '-' reads stdin.")],
    options: GenerationOptions,
    model: ModelOption = None,
    system: SystemOption = None,
    stats: Annotated[
        bool, typer.Option("--stats", help="Then print token counts and speed on stderr.")
    ] = False,
    raw: Annotated[
        bool,
        typer.Option(
            "--raw",
            help="Continue TEXT as plain text, without the chat template (for base models).",
        ),
    ] = False,
    output_format: Annotated[
        str | None,
        typer.Option(
            "--format",
            metavar="json",
            help="Answer with one JSON object, printed alone on stdout once it is complete.",
        ),
    ] = None,
    schema: Annotated[
        str | None,
        typer.Option(
            "--schema",
            metavar="JSON_OR_FILE",
            help="Answer with JSON that satisfies this JSON Schema (inline, or a file), printed"
            " alone on stdout once it is complete and checked.",
        ),
    ] = None,
    no_log: NoLogOption = False,
) -> None:
    """Generate one answer to TEXT, streamed as it is produced (with --format or --schema:
    printed once it is complete and checked)."""
    cli = state(ctx)
    cli.no_log = no_log
    options = with_output_format(options, output_format, schema)
    model = cli.model(model)
    if text == "-":
        text = sys.stdin.read()
    if not text.strip():
        raise typer.BadParameter("the prompt is empty", param_hint="TEXT")
    if raw and system:
        raise typer.BadParameter("--system needs the chat template; drop --raw", param_hint="--raw")
    from providers.options import Message

    request: list[Message] | str
    if raw:
        request = text
    else:
        _base_model_notice(cli, model)
        request = [Message("system", system)] if system else []
        request.append(Message("user", text))
    structured = options.format is not None
    result = _generate(cli, model, request, options, stream=not structured)
    _log_answer(cli, _ChatLog(cli, "prompt"), result, options, request)
    if cli.json_mode:
        cli.output.document(result.content())
        return
    cli.output.write(result.text.strip() + "\n" if structured else "\n")
    if stats:
        cli.output.note(metrics_line(result.metrics))


def metrics_line(metrics: Metrics) -> str:
    """``24 tokens in 1.25 s (19.2 tokens/s), first token after 0.31 s, stop: length``."""
    speed = metrics.tokens_per_second
    first = metrics.time_to_first_token
    parts = [
        f"{metrics.generated_tokens} tokens in {metrics.total_seconds:.2f} s"
        + (f" ({speed:.1f} tokens/s)" if speed else ""),
    ]
    if first is not None:
        parts.append(f"first token after {first:.2f} s")
    parts.append(f"stop: {metrics.stop_reason or '-'}")
    return ", ".join(parts)


@with_generation_flags
def chat(
    ctx: typer.Context,
    options: GenerationOptions,
    model: ModelOption = None,
    system: SystemOption = None,
    resume: Annotated[
        bool, typer.Option("--continue", "-c", help="Go on with the latest logged chat.")
    ] = False,
    conversation: Annotated[
        str | None,
        typer.Option("--cid", metavar="ID", help="Go on with this logged conversation."),
    ] = None,
    no_log: NoLogOption = False,
) -> None:
    """Talk with a model; every turn is kept in the conversation log (`logs list`).

    /exit or Ctrl-D ends the chat, /clear forgets the history, /history shows it, /system TEXT
    sets the system prompt, /save FILE writes it as JSON, three double quotes start and end a
    multi-line message; Ctrl-C stops the current answer (Ctrl-C at the prompt leaves). A
    conversation longer than the context goes on without its oldest turns. With --output
    json, lines are read from stdin without prompts and the whole transcript is printed at
    the end.
    """
    cli = state(ctx)
    out = cli.output
    cli.no_log = no_log
    from providers.options import CONVERSATION_DEFAULTS, Message, with_defaults

    options = with_defaults(options, CONVERSATION_DEFAULTS)
    chat_log = _ChatLog(cli, "chat")
    earlier: list[Message] = []
    if resume or conversation is not None:
        logged_model, earlier = chat_log.resume(conversation)
        model = model or logged_model
    model = cli.model(model)

    base = [Message("system", system)] if system else []
    if earlier and earlier[0].role == "system":
        base = base or [earlier[0]]
        earlier = earlier[1:]
    history: list[Message] = [*base, *earlier]
    turns: list[dict[str, Any]] = []
    resolved = model  # the spec the kernel resolved it to, once a turn has said
    if cli.json_mode:
        cli.kernel().load(model)
    else:
        from ..progress import ModelProgress

        with ModelProgress(out.err, model, transfer=False) as progress:
            loaded = cli.kernel().load(model, on_progress=progress)
        out.note(f"chatting with {loaded.model.id}. {CHAT_HELP}")
        _base_model_notice(cli, model)
        if earlier:
            out.note(f"continuing conversation {chat_log.conversation} ({len(earlier)} messages)")
    while True:
        try:
            text = _read_message(cli)
        except Terminated:
            raise
        except (EOFError, KeyboardInterrupt):
            if not cli.json_mode:
                out.write("\n")
            break
        if not text:
            continue
        if text in ("/exit", "/quit", "/bye"):
            break
        if text.startswith("/"):
            base, history = _slash_command(cli, text, base, history, resolved)
            continue
        history.append(Message("user", text))
        answer = _StreamedAnswer(cli)
        try:
            result = _generate(cli, model, history, options, on_stream=answer)
            if not cli.json_mode:
                out.write("\n")
        except Terminated:
            raise  # SIGTERM/SIGHUP end the chat (the request is cancelled already)
        except LLMSpellError as exc:
            if cli.json_mode:
                raise  # a script reads one error document
            # The conversation is kept: the question that failed is taken back.
            history.pop()
            if answer.pieces:
                out.write("\n")
            out.error(type(exc).__name__, exc.message)
            continue
        except KeyboardInterrupt:
            # The client has cancelled the generation; the chat goes on. The user sees the
            # partial answer, so it stays in the history (an empty one drops the question).
            partial = "".join(answer.pieces)
            if partial:
                history.append(Message("assistant", partial))
            else:
                history.pop()
            out.write("\n")
            out.note("[answer interrupted]")
            continue
        if result.metrics.dropped_messages:
            dropped = result.metrics.dropped_messages
            out.note(
                f"[{dropped} earlier message{'' if dropped == 1 else 's'} left out to fit the"
                " context: --num-ctx gives it more room]",
                style="dim",
            )
        if result.metrics.stop_reason == "length":
            count = result.metrics.generated_tokens
            out.note(f"[answer cut by --max-tokens after {count} token{'' if count == 1 else 's'}]")
        _log_answer(cli, chat_log, result, options, history)
        history.append(Message("assistant", result.text))
        turns.append({"user": text, "assistant": result.text, "metrics": result.metrics.to_dict()})
        resolved = result.model
    if cli.json_mode:
        out.document(_transcript(resolved, history) | {"turns": turns})


def _base_model_notice(cli: CliState, model: str) -> None:
    """One dim line when ``model`` has no chat template of its own (the template is its
    family's): such GGUFs are mostly base models, which continue text rather than answer."""
    if cli.json_mode:
        return
    source = cli.kernel().info(model).model.chat_template or ""
    if source.startswith("family:"):
        cli.output.note(
            f"{model} has no chat template of its own (a base model?): its answers follow the"
            f" {source.removeprefix('family:')} format; `llmspell prompt --raw` continues text",
            style="dim",
        )


class _ChatLog:
    """Where this invocation's answers are logged: one conversation (a new one, or the one
    continued)."""

    def __init__(self, cli: CliState, source: Literal["prompt", "chat"]) -> None:
        from llmspell_kernel.conversation_log import new_conversation_id

        self.log = cli.conversation_log()
        self.source: Literal["prompt", "chat"] = source
        self.conversation = new_conversation_id()

    def resume(self, conversation: str | None) -> tuple[str, list[Message]]:
        """The model and messages of ``conversation`` (None: the latest chat's), which this
        log then goes on with."""
        if self.log is None:
            raise typer.BadParameter(
                "the conversation log is off ([logs] enabled = false, or --no-log)",
                param_hint="--continue",
            )
        chosen = conversation or self.log.latest_conversation("chat")
        if chosen is None:
            raise typer.BadParameter("no chat in the log yet", param_hint="--continue")
        model, messages = self.log.history(chosen)
        self.conversation = chosen
        return model, messages


def _log_answer(
    cli: CliState,
    chat_log: _ChatLog,
    result: GenerateResult,
    options: GenerationOptions,
    request: list[Message] | str,
) -> None:
    """Keep one answer in the conversation log; a log that cannot be written is a warning."""
    if chat_log.log is None:
        return
    problem = chat_log.log.keep(
        conversation=chat_log.conversation,
        source=chat_log.source,
        model=result.model,
        text=result.text,
        options=options,
        metrics=result.metrics,
        messages=None if isinstance(request, str) else list(request),
        prompt=request if isinstance(request, str) else None,
    )
    if problem is not None:
        cli.output.warn(problem)


def _transcript(model: str, history: list[Message]) -> dict[str, Any]:
    return {"model": model, "messages": [message.to_dict() for message in history]}


def _slash_command(
    cli: CliState, text: str, base: list[Message], history: list[Message], model: str
) -> tuple[list[Message], list[Message]]:
    """Carry out a ``/command`` of the chat; returns the new system messages and history."""
    from providers.options import Message

    out = cli.output
    command, _, argument = text.partition(" ")
    argument = argument.strip()
    if command in ("/clear", "/reset"):
        out.note("history cleared")
        return base, list(base)
    if command == "/system":
        if not argument:
            out.warn("/system needs the text of the system prompt")
            return base, history
        system = [Message("system", argument)]
        out.note("system prompt set")
        return system, system + [m for m in history if m.role != "system"]
    if command == "/history":
        for message in history:
            out.note(f"{message.role}: {message.content}")
        if not history:
            out.note("(no messages yet)")
        return base, history
    if command == "/save":
        if not argument:
            out.warn("/save needs a file name")
            return base, history
        import json

        path = Path(argument).expanduser()
        try:
            path.write_text(json.dumps(_transcript(model, history), indent=2) + "\n", "utf-8")
        except OSError as exc:
            out.warn(f"cannot save to {path}: {exc.strerror or exc}")
        else:
            out.note(f"saved {len(history)} messages to {path}")
        return base, history
    if command not in ("/help", "/?"):
        out.warn(f"unknown command {command}")
    out.note(CHAT_HELP)
    return base, history


def _read_message(cli: CliState) -> str:
    """One message: a line, or the lines between two ``\"\"\"`` (as in Ollama's REPL)."""
    first = _read_line(cli).strip()
    if not first.startswith(MULTILINE):
        return first
    lines = [first.removeprefix(MULTILINE)]
    while not lines[-1].rstrip().endswith(MULTILINE):
        lines.append(_read_line(cli, continued=True).rstrip("\n"))
    lines[-1] = lines[-1].rstrip().removesuffix(MULTILINE)
    return "\n".join(lines).strip()


def _read_line(cli: CliState, *, continued: bool = False) -> str:
    if cli.json_mode:
        line = sys.stdin.readline()
        if not line:
            raise EOFError
        return line
    return cli.output.out.input("[bold green]... [/]" if continued else "[bold green]>>> [/]")
