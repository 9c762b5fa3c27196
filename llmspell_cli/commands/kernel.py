"""``llmspell kernel ...``: start, list and stop kernel processes; install the kernelspec."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..context import state
from ..output import short_time

if TYPE_CHECKING:
    from llmspell_kernel.records import KernelRecord

app = typer.Typer(
    help="Start, list and stop llmspell kernels; install the kernelspec.", no_args_is_help=True
)


def record_dict(record: KernelRecord) -> dict[str, Any]:
    """A kernel record as JSON-ready data."""
    return record.to_dict()


def _ip_option(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} is not an IP address") from exc
    return value


@app.command()
def start(
    ctx: typer.Context,
    daemon: Annotated[
        bool, typer.Option("--daemon", "-d", help="Run in the background and return.")
    ] = False,
    ip: Annotated[
        str, typer.Option("--ip", callback=_ip_option, help="Address to listen on.")
    ] = "127.0.0.1",
    connection_file: Annotated[
        Path | None,
        typer.Option("--connection-file", "-f", dir_okay=False, help="Where to write it."),
    ] = None,
    encrypt: Annotated[
        bool,
        typer.Option(
            "--encrypt",
            help="Encrypt the kernel's traffic (CurveZMQ; keys in the 0600 connection file).",
        ),
    ] = False,
) -> None:
    """Start a kernel; connect to it with --connect ID or --connect FILE.

    In the foreground it runs until Ctrl-C; with --daemon it keeps running after this returns
    (stop it with 'llmspell kernel stop ID').
    """
    from llmspell_kernel.process import start_kernel

    cli = state(ctx)
    out = cli.output

    def announce(record: KernelRecord) -> None:
        if cli.json_mode:
            out.document(record_dict(record))
            return
        out.line(f"kernel {record.id} (pid {record.pid})")
        out.line(f"connection file: {record.connection_file}")
        out.note(f"connect with: llmspell --connect {record.id} ...")
        if not daemon:
            out.note("running in the foreground; Ctrl-C stops it")

    # Foreground: returns when the kernel exits (Ctrl-C stops it cleanly).
    record = start_kernel(
        daemon=daemon,
        ip=ip,
        connection_file=connection_file,
        config_path=cli.config,
        on_ready=announce,
        encrypt=encrypt,
    )
    if not daemon:
        out.note(f"kernel {record.id} stopped")


@app.command("list")
def list_kernels(ctx: typer.Context) -> None:
    """Kernels started by llmspell on this machine."""
    from llmspell_kernel.records import list_kernels as running_kernels

    cli = state(ctx)
    records = [record_dict(record) for record in running_kernels()]
    if cli.json_mode:
        cli.output.document({"kernels": records})
        return
    rows = [
        [
            str(r["id"]),
            str(r["pid"]),
            str(r["ip"]),
            short_time(r["started_at"]),
            "yes" if r["alive"] else "no",
            r["connection_file"],
        ]
        for r in records
    ]
    cli.output.table(
        ["ID", "PID", "IP", "STARTED", "ALIVE", "CONNECTION FILE"],
        rows,
        empty="no kernels running",
    )


@app.command()
def stop(
    ctx: typer.Context,
    kernel_id: Annotated[
        str | None,
        typer.Argument(metavar="[ID]", help="Kernel id or connection file."),
    ] = None,
    all_kernels: Annotated[bool, typer.Option("--all", help="Stop every kernel.")] = False,
) -> None:
    """Stop a kernel (by id or connection file), or all of them."""
    if (kernel_id is None) == (not all_kernels):
        raise typer.BadParameter("give a kernel ID or --all (not both)", param_hint="ID")
    from llmspell_kernel.process import stop_all, stop_kernel

    cli = state(ctx)
    stopped = stop_all() if all_kernels else [stop_kernel(kernel_id or "")]
    if cli.json_mode:
        cli.output.document({"stopped": [record_dict(record) for record in stopped]})
        return
    if not stopped:
        cli.output.note("no kernels running")
    for record in stopped:
        cli.output.line(f"stopped kernel {record.id} (pid {record.pid})")


KernelArgument = Annotated[
    str, typer.Argument(metavar="ID", help="Kernel id, name or connection file.")
]


@app.command()
def interrupt(ctx: typer.Context, kernel_id: KernelArgument) -> None:
    """Interrupt everything a kernel is running, as Jupyter's interrupt does: every model
    request of every client, and a running cell."""
    from llmspell_kernel.client import LLMSpellClient

    cli = state(ctx)
    with LLMSpellClient.connect(kernel_id) as client:
        client.interrupt()
    if cli.json_mode:
        cli.output.document({"interrupted": kernel_id})
    else:
        cli.output.line(f"interrupted kernel {kernel_id}")


@app.command()
def cancel(
    ctx: typer.Context,
    kernel_id: KernelArgument,
    request: Annotated[
        str | None,
        typer.Argument(
            metavar="[REQUEST]",
            help="The msg_id of one model request ('llmspell model ps' lists them); "
            "without it, every running model request.",
        ),
    ] = None,
) -> None:
    """Cancel model requests only (one, or all): running cells and other work go on."""
    from llmspell_kernel.client import LLMSpellClient

    cli = state(ctx)
    with LLMSpellClient.connect(kernel_id) as client:
        result = client.cancel(request)
    if cli.json_mode:
        cli.output.document(result.content())
    elif result.cancelled:
        cli.output.line(f"cancelled {', '.join(result.requests)}")
    else:
        cli.output.note("nothing to cancel" if request is None else f"no running request {request}")


@app.command()
def install(
    ctx: typer.Context,
    user: Annotated[
        bool, typer.Option("--user", help="Install for this user (the default).")
    ] = False,
    sys_prefix: Annotated[
        bool, typer.Option("--sys-prefix", help="Install into this Python environment.")
    ] = False,
    prefix: Annotated[
        Path | None,
        typer.Option(
            "--prefix",
            metavar="PATH",
            help="Install into PATH/share/jupyter/kernels (e.g. the environment of a Jupyter"
            " server or gateway that is not this one).",
        ),
    ] = None,
    gateway: Annotated[
        str | None,
        typer.Option(
            "--gateway",
            metavar="local|distributed|kubernetes",
            help="Write the kernelspec for Jupyter Enterprise Gateway: 'local' (the kernel runs"
            " on the gateway's host), 'distributed' (on one of its remote hosts, through"
            " llmspell's launcher) or 'kubernetes' (in a pod of --image).",
        ),
    ] = None,
    image: Annotated[
        str | None,
        typer.Option(
            "--image",
            metavar="IMAGE",
            help="The kernel image of --gateway kubernetes (llmspell[gateway] installed in it;"
            " see docs/remote-kernels.md).",
        ),
    ] = None,
    name: Annotated[
        str, typer.Option("--name", help="The kernelspec's name (Jupyter's kernel name).")
    ] = "llmspell",
) -> None:
    """Install the 'llmspell' kernelspec so Jupyter can start the kernel."""
    from llmspell_kernel.kernelspec import GATEWAY_PROXIES, image_problem
    from llmspell_kernel.kernelspec import install as install_kernelspec

    if sum((user, sys_prefix, prefix is not None)) > 1:
        raise typer.BadParameter(
            "exclude each other: --user, --sys-prefix, --prefix", param_hint="--user"
        )
    if gateway is not None and gateway not in GATEWAY_PROXIES:
        raise typer.BadParameter(
            f"not a process proxy llmspell supports: {gateway!r} ({', '.join(GATEWAY_PROXIES)})",
            param_hint="--gateway",
        )
    problem = image_problem(gateway, image)
    if problem is not None:
        raise typer.BadParameter(problem, param_hint="--image")
    cli = state(ctx)
    path = install_kernelspec(
        user=not sys_prefix and prefix is None,
        sys_prefix=sys_prefix,
        prefix=prefix,
        gateway=gateway,
        image=image,
        name=name,
    )
    if cli.json_mode:
        cli.output.document({"kernelspec": str(path)})
    else:
        cli.output.line(f"installed kernelspec {name!r} in {path}")
