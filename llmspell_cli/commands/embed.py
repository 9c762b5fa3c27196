"""``llmspell embed``: embedding vectors of texts (an ``embed`` request).

Text mode prints one JSON array of floats per input, one per line, in order (what ``llm
embed`` prints for one text); ``--output json`` prints the whole reply: ``{"model",
"embeddings", "dimensions", "metrics"}``.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from ..context import state
from .chat import ModelOption


def register(app: typer.Typer) -> None:
    app.command("embed")(embed)


def embed(
    ctx: typer.Context,
    texts: Annotated[
        list[str],
        typer.Argument(
            metavar="TEXT",
            help="The texts to embed; '-' reads stdin, one text per line (blank lines skipped).",
        ),
    ],
    model: ModelOption = None,
    no_truncate: Annotated[
        bool,
        typer.Option(
            "--no-truncate",
            help="Refuse a text longer than the model's embedding context instead of cutting it.",
        ),
    ] = False,
    no_normalize: Annotated[
        bool, typer.Option("--no-normalize", help="Keep the vectors' lengths (not scaled to 1).")
    ] = False,
) -> None:
    """Print an embedding vector for each TEXT: a JSON array of floats per line, in order."""
    cli = state(ctx)
    model = cli.model(model)
    inputs: list[str] = []
    for text in texts:
        if text == "-":
            inputs += [line for line in sys.stdin.read().splitlines() if line.strip()]
        elif not text.strip():
            raise typer.BadParameter(f"text {len(inputs) + 1} is empty", param_hint="TEXT")
        else:
            inputs.append(text)
    if not inputs:
        raise typer.BadParameter("stdin had no text to embed", param_hint="TEXT")
    result = cli.kernel().embed(model, inputs, truncate=not no_truncate, normalize=not no_normalize)
    if cli.json_mode:
        cli.output.document(result.content())
        return
    cli.output.write("".join(json.dumps(vector) + "\n" for vector in result.embeddings))
    if result.metrics.truncated_inputs:
        cli.output.note(
            f"{result.metrics.truncated_inputs} of {len(inputs)} texts were cut to fit the"
            " model's embedding context (--no-truncate refuses them instead)"
        )
