"""``llmspell logs``: the conversation log (every ``prompt``, ``chat`` turn and ``Agent`` turn).

``logs list`` shows the latest answers, ``logs show ID`` one conversation, ``logs path`` where
the database is; ``llmspell chat --continue`` / ``--cid ID`` goes on with a logged conversation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from ..context import CliState, state

if TYPE_CHECKING:
    from llmspell_kernel.conversation_log import ConversationLog

app = typer.Typer(help="The conversation log: what was asked and answered.", no_args_is_help=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON (as --output json does).")]
EXCERPT = 60


def _log(cli: CliState) -> ConversationLog:
    log = cli.conversation_log()
    if log is None:
        raise typer.BadParameter("the conversation log is off ([logs] enabled = false)")
    return log


def _excerpt(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= EXCERPT else flat[: EXCERPT - 1] + "…"


@app.command("list")
def list_entries(
    ctx: typer.Context,
    count: Annotated[int, typer.Option("-n", "--count", min=1, help="How many answers.")] = 10,
    model: Annotated[
        str | None, typer.Option("--model", "-m", metavar="SPEC", help="Only this model's.")
    ] = None,
    json_flag: JsonFlag = False,
) -> None:
    """The latest answers, oldest first: conversation ID, time, model, question and answer."""
    cli = state(ctx)
    entries = _log(cli).entries(limit=count, model=model)
    if cli.json_mode or json_flag:
        cli.output.document({"entries": [entry.to_dict() for entry in entries]})
        return
    rows = [
        [e.conversation, e.created_at, e.model, e.source, _excerpt(e.question), _excerpt(e.text)]
        for e in entries
    ]
    cli.output.table(
        ["ID", "TIME", "MODEL", "FROM", "ASKED", "ANSWERED"], rows, empty="the log is empty"
    )


@app.command()
def show(
    ctx: typer.Context,
    conversation: Annotated[str, typer.Argument(metavar="ID", help="A conversation ID.")],
    json_flag: JsonFlag = False,
) -> None:
    """One conversation, turn by turn."""
    cli = state(ctx)
    entries = _log(cli).conversation(conversation)
    if cli.json_mode or json_flag:
        cli.output.document(
            {"conversation": conversation, "entries": [e.to_dict() for e in entries]}
        )
        return
    out = cli.output
    first = entries[0]
    out.line(f"conversation {conversation}: {first.model}, {first.source}, {first.created_at}")
    system = next((m.content for m in first.messages or [] if m.role == "system"), None)
    if system:
        out.line(f"system: {system}", style="dim")
    for entry in entries:
        out.line(f"\n>>> {entry.question}", style="bold")
        out.line(entry.text)


@app.command()
def path(ctx: typer.Context) -> None:
    """Where the log database is."""
    cli = state(ctx)
    log = _log(cli)
    if cli.json_mode:
        cli.output.document({"path": str(log.path)})
        return
    cli.output.line(str(log.path))
