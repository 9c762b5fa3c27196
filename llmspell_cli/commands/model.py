"""``llmspell model ...``: every model operation, sent to the kernel as a ``model_request``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from providers.errors import InvalidModelSpec
from providers.spec import normalize_backend

from .. import ollama_install
from ..context import state
from ..output import Output, human_size, short_time
from ..progress import ModelProgress

if TYPE_CHECKING:
    from llmspell_kernel.protocol.results import PullResult

app = typer.Typer(help="List, pull, inspect, load and remove models.", no_args_is_help=True)


def _backend_option(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return normalize_backend(value)
    except InvalidModelSpec as exc:
        raise typer.BadParameter(exc.message) from exc


BackendOption = Annotated[
    str | None,
    typer.Option(
        "--backend",
        "-b",
        callback=_backend_option,
        help="llamacpp, ollama, or a [providers.NAME] endpoint of the config.",
    ),
]
SpecArgument = Annotated[
    str, typer.Argument(metavar="SPEC", help="Model spec: [provider/]model[:variant][@backend].")
]


def _yes_no(value: Any) -> str:
    return "yes" if value else "no"


@app.command("list")
def list_models(
    ctx: typer.Context,
    backend: BackendOption = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Also show family and parameter size.")
    ] = False,
) -> None:
    """Installed models of every backend (or of one)."""
    cli = state(ctx)
    result = cli.queries().list(backend)
    if cli.json_mode:
        cli.output.document(result.content())
        return
    columns = ["ID", "BACKEND", "SIZE", "QUANTIZATION", "MODIFIED", "LOADED"]
    if verbose:
        columns += ["FAMILY", "PARAMETERS"]
    rows = []
    for model in result.models:
        row = [
            model.id,
            model.backend,
            human_size(model.size_bytes),
            model.quantization or "-",
            short_time(model.modified_at),
            _yes_no(model.loaded),
        ]
        if verbose:
            row += [model.family or "-", model.parameter_size or "-"]
        rows.append(row)
    cli.output.table(columns, rows, empty="no models installed (try 'llmspell model available')")
    for name, reason in sorted(result.errors.items()):
        cli.output.note(f"{name}: unavailable — {reason}", style="yellow")


@app.command()
def pull(
    ctx: typer.Context,
    spec: SpecArgument,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Download again, even if the model or its file is in the store."
        ),
    ] = False,
    quantization: Annotated[
        str | None,
        typer.Option("--quantization", "-q", help="Quantization to pull (e.g. Q4_K_M)."),
    ] = None,
) -> None:
    """Download a model, with a live progress bar (bytes, speed, ETA). An interrupted pull
    keeps what it downloaded; the next pull of the model resumes there."""
    cli = state(ctx)
    kernel = cli.kernel()
    try:
        if cli.json_mode:
            result = kernel.pull(spec, force=force, quantization=quantization)
            cli.output.document(result.content())
            return
        with ModelProgress(cli.output.err, spec) as progress:
            result = kernel.pull(spec, force=force, quantization=quantization, on_progress=progress)
    except KeyboardInterrupt as exc:
        cli.output.note(
            f"\ninterrupted: the partial download is kept; `llmspell model pull {spec}` resumes it"
        )
        raise typer.Exit(130) from exc
    cli.output.line(pull_summary(result))


def pull_summary(result: PullResult) -> str:
    """``pulled ID (SIZE, N downloaded in S s)``; a resumed pull says how much was resumed, a
    pull of a file the store had says nothing was downloaded."""
    size = human_size(result.model.size_bytes)
    if not result.bytes and not result.resumed_bytes:
        return f"pulled {result.model.id} ({size}; the file was in the store: nothing downloaded)"
    if not result.resumed_bytes:
        return (
            f"pulled {result.model.id} ({size}, {human_size(result.bytes)} downloaded"
            f" in {result.seconds:.1f} s)"
        )
    return (
        f"pulled {result.model.id} ({size}; {human_size(result.bytes)} downloaded,"
        f" {human_size(result.resumed_bytes)} resumed) in {result.seconds:.1f} s"
    )


@app.command()
def remove(
    ctx: typer.Context,
    spec: SpecArgument,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete an installed model (asks first unless -y)."""
    cli = state(ctx)
    if not yes:
        if not cli.output.confirm(f"Remove model {spec}?"):
            cli.output.error("Cancelled", f"{spec} not removed (confirm, or pass -y)")
            raise typer.Exit(1)
    result = cli.kernel().remove(spec)
    if cli.json_mode:
        cli.output.document(result.content())
    elif result.unfinished_download_bytes is not None:
        cli.output.line(
            f"removed the unfinished download of {result.removed}"
            f" ({human_size(result.unfinished_download_bytes)}); the model was not installed"
        )
    else:
        cli.output.line(f"removed {result.removed}")


@app.command()
def info(ctx: typer.Context, spec: SpecArgument) -> None:
    """Details of an installed model (from its GGUF metadata or the Ollama server)."""
    cli = state(ctx)
    result = cli.queries().info(spec)
    if cli.json_mode:
        cli.output.document(result.content())
        return
    model = result.model
    pairs: list[tuple[str, Any]] = [
        ("id", model.id),
        ("backend", model.backend),
        ("format", model.format),
        ("size", human_size(model.size_bytes)),
        ("architecture", model.architecture),
        ("family", model.family),
        ("parameters", model.parameter_size),
        ("quantization", model.quantization),
        ("context length", model.context_length),
        ("chat template", model.chat_template),
        ("modified", short_time(model.modified_at)),
        ("loaded", _yes_no(model.loaded)),
    ]
    pairs += _flattened(model.details)
    cli.output.fields(pairs)


def _flattened(details: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Backend extras as ``key`` / ``outer.inner`` rows; unknown (None) values left out, lists
    joined with commas (``completion, tools``, not Python's ``['completion', 'tools']``)."""
    rows: list[tuple[str, Any]] = []
    for key, value in sorted(details.items()):
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows += _flattened(value, f"{name}.")
        elif isinstance(value, list | tuple):
            rows.append((name, ", ".join(str(item) for item in value) or "-"))
        elif value is not None:
            rows.append((name, value))
    return rows


@app.command()
def available(
    ctx: typer.Context,
    backend: BackendOption = None,
    recommended: Annotated[
        bool, typer.Option("--recommended", help="Only the recommended models.")
    ] = False,
) -> None:
    """Models that can be pulled."""
    cli = state(ctx)
    result = cli.queries().available(backend, recommended=recommended)
    if cli.json_mode:
        cli.output.document(result.content())
        return
    rows = [
        [
            model.name,
            model.backend,
            ", ".join(model.variants) or "-",
            human_size(model.size_bytes),
            "yes" if model.recommended else "",
            model.description,
        ]
        for model in result.models
    ]
    cli.output.table(
        ["NAME", "BACKEND", "VARIANTS", "SIZE", "RECOMMENDED", "DESCRIPTION"],
        rows,
        empty="no models available",
    )


@app.command()
def status(ctx: typer.Context, backend: BackendOption = None) -> None:
    """Whether each backend works, its version and model counts."""
    cli = state(ctx)
    result = cli.queries().status(backend)
    if cli.json_mode:
        cli.output.document(result.content())
        return
    rows = [
        [
            name,
            _yes_no(health.available),
            health.version or "-",
            str(health.models),
            str(health.loaded),
            health.reason or "",
        ]
        for name, health in sorted(result.backends.items())
    ]
    cli.output.table(["BACKEND", "AVAILABLE", "VERSION", "MODELS", "LOADED", "REASON"], rows)


@app.command("import")
def import_model(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="A GGUF file on the kernel's machine.")],
    name: Annotated[
        str | None, typer.Option("--name", "-n", help="Store id, e.g. gemma3-270m[:Q4_K_M].")
    ] = None,
    link: Annotated[
        bool,
        typer.Option(
            "--link",
            help="Link the file in place (hard link, else symlink) instead of copying it;"
            " it must then stay where it is.",
        ),
    ] = False,
) -> None:
    """Register a GGUF file that is already on disk (llamacpp): copied into the store, or
    linked in place with --link."""
    cli = state(ctx)
    # Relative paths mean this shell's directory, not the kernel's.
    result = cli.kernel().import_model(path.expanduser().absolute(), name, link=link)
    if cli.json_mode:
        cli.output.document(result.content())
        return
    cli.output.line(f"imported {result.model.id} ({human_size(result.model.size_bytes)})")


@app.command("cp")
def copy(
    ctx: typer.Context,
    spec: SpecArgument,
    name: Annotated[str, typer.Argument(metavar="NEW", help="The new name, e.g. my-gemma[:q4].")],
) -> None:
    """Give an installed llamacpp model a second name (no bytes are copied), like 'ollama cp'."""
    cli = state(ctx)
    result = cli.kernel().copy(spec, name)
    if cli.json_mode:
        cli.output.document(result.content())
        return
    cli.output.line(f"copied {spec} to {result.model.id} (the same file: no bytes copied)")


@app.command()
def load(ctx: typer.Context, spec: SpecArgument) -> None:
    """Bring a model into memory now (generation loads it on demand otherwise)."""
    cli = state(ctx)
    kernel = cli.kernel()
    if cli.json_mode:
        cli.output.document(kernel.load(spec).content())
        return
    with ModelProgress(cli.output.err, spec, transfer=False) as progress:
        result = kernel.load(spec, on_progress=progress)
    cli.output.line(f"loaded {result.model.id}")


@app.command()
def unload(ctx: typer.Context, spec: SpecArgument) -> None:
    """Free a loaded model's memory."""
    cli = state(ctx)
    result = cli.kernel().unload(spec)
    if cli.json_mode:
        cli.output.document(result.content())
    elif result.was_loaded is False:
        cli.output.line(f"{result.unloaded} was not loaded (nothing to free)")
    else:
        cli.output.line(f"unloaded {result.unloaded}")


@app.command()
def ps(ctx: typer.Context) -> None:
    """Models held in memory."""
    cli = state(ctx)
    result = cli.queries().ps()
    if cli.json_mode:
        cli.output.document(result.content())
        return
    rows = [
        [
            model.id,
            model.backend,
            human_size(model.size_bytes),
            "-"
            if model.conversation_cache_bytes is None
            else human_size(model.conversation_cache_bytes),
            short_time(model.expires_at) if model.expires_at else "never",
        ]
        for model in result.models
    ]
    columns = ["ID", "BACKEND", "SIZE", "CONVERSATIONS", "EXPIRES"]
    cli.output.table(columns, rows, empty="no models loaded")


@app.command("install-ollama")
def install_ollama(
    ctx: typer.Context,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Run the steps without asking.")] = False,
) -> None:
    """Print the official Ollama install steps for this system; run them after a yes."""
    cli = state(ctx)
    plan = ollama_install.plan_for_this_system()
    installed = ollama_install.installed()
    report: dict[str, Any] = {
        "system": plan.system,
        "steps": list(plan.steps),
        "command": plan.command,
        "installed_at": installed,
        "ran": False,
        "returncode": None,
    }
    if not cli.json_mode:
        cli.output.line(f"Install Ollama on {plan.system} (official steps):", style="bold")
        for step in plan.steps:
            cli.output.line(f"  {step}")
    if installed:
        cli.output.note(f"ollama is already installed: {installed}")
        _finish(cli.json_mode, cli.output, report)
        return
    if plan.command is None:
        if yes:
            cli.output.error(
                "UnsupportedOperation",
                f"the steps for {plan.system} cannot be run from here; follow them above",
            )
            raise typer.Exit(1)
        _finish(cli.json_mode, cli.output, report)
        return
    if not yes:
        yes = cli.output.confirm(f"Run '{plan.command_text}' now?")
    if not yes:
        cli.output.note("not run (answer yes, or pass -y, to install)")
        _finish(cli.json_mode, cli.output, report)
        return
    returncode = ollama_install.run(plan)
    report.update(ran=True, returncode=returncode)
    if returncode != 0:
        if cli.json_mode:
            cli.output.document(report)
        cli.output.note(f"error: '{plan.command_text}' failed with exit status {returncode}")
        raise typer.Exit(1)
    installed = ollama_install.installed()
    report["installed_at"] = installed
    if installed is None:
        # The steps said they succeeded; without an ollama on PATH that is not an install.
        if cli.json_mode:
            cli.output.document(report)
        cli.output.note(
            f"error: '{plan.command_text}' finished, but there is no 'ollama' on PATH: see"
            f" {ollama_install.DOWNLOAD_PAGE}"
        )
        raise typer.Exit(1)
    cli.output.note(f"ollama installed ({installed}); start it with 'ollama serve'")
    _finish(cli.json_mode, cli.output, report)


def _finish(json_mode: bool, output: Output, report: dict[str, Any]) -> None:
    if json_mode:
        output.document(report)
