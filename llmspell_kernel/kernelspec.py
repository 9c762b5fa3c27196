"""Install the ``llmspell`` kernelspec so Jupyter front ends can start the kernel.

The files (``kernel.json`` and two logos) ship as package data in
``llmspell_kernel/resources/kernelspec/``, a copy of the repository's top-level ``kernelspec/``
(a test keeps the two identical). At install time ``kernel.json``'s ``argv`` gets the running
interpreter, so the kernel starts in the environment llmspell is installed in.
"""

from __future__ import annotations

import json
import sys
import tempfile
from importlib.resources import files
from pathlib import Path
from typing import Any

from providers import LLMSpellError

KERNEL_NAME = "llmspell"
DISPLAY_NAME = "llmspell (local LLMs)"


GATEWAY_PROXIES = {
    "local": "enterprise_gateway.services.processproxies.processproxy.LocalProcessProxy",
    "distributed": "enterprise_gateway.services.processproxies.distributed.DistributedProcessProxy",
    "kubernetes": "enterprise_gateway.services.processproxies.k8s.KubernetesProcessProxy",
}
"""Jupyter Enterprise Gateway process proxies a kernelspec can name (``--gateway``): ``local``
runs the kernel on the gateway's host, as the gateway's own process; ``distributed`` on one of
its ``remote_hosts`` (over SSH, or here when the host is this one), through
:mod:`llmspell_kernel.gateway_launcher`; ``kubernetes`` in a pod of a kernel image (needs
``image``), which the kernelspec's ``scripts/launch_kubernetes.py`` (:mod:`.gateway_pod`)
creates."""
POD_SCRIPT = "scripts/launch_kubernetes.py"
"""Where a Kubernetes kernelspec holds its pod launcher, run by the gateway's own Python."""
GATEWAY_LAUNCHER_ARGS = [
    "--RemoteProcessProxy.kernel-id",
    "{kernel_id}",
    "--RemoteProcessProxy.response-address",
    "{response_address}",
    "--RemoteProcessProxy.public-key",
    "{public_key}",
    "--RemoteProcessProxy.port-range",
    "{port_range}",
]
"""What a remote process proxy fills in for its launcher (as in the gateway's own specs)."""


def image_problem(gateway: str | None, image: str | None) -> str | None:
    """Why ``image`` does not go with ``gateway`` (a kernel image is for ``kubernetes``, which
    needs one), or None."""
    if (gateway == "kubernetes") != (image is not None):
        return "--gateway kubernetes needs --image, and --image is only for it"
    return None


def kernel_json(
    executable: str | None = None, gateway: str | None = None, image: str | None = None
) -> dict[str, Any]:
    """The kernelspec's ``kernel.json`` with ``executable`` (default: this Python) in argv;
    with ``gateway``, in the form Jupyter Enterprise Gateway reads (``metadata.process_proxy``
    naming the process proxy of :data:`GATEWAY_PROXIES`; ``image``, the kernel image, for
    ``kubernetes`` only)."""
    spec: dict[str, Any] = json.loads(_resources().joinpath("kernel.json").read_text("utf-8"))
    python = executable or sys.executable
    spec["argv"] = [python, "-m", "llmspell_kernel", "-f", "{connection_file}"]
    problem = image_problem(gateway, image)
    if problem is not None:
        raise LLMSpellError(problem)
    if gateway is not None:
        if gateway not in GATEWAY_PROXIES:
            known = ", ".join(GATEWAY_PROXIES)
            raise LLMSpellError(f"unknown gateway process proxy {gateway!r} (known: {known})")
        proxy: dict[str, Any] = {"class_name": GATEWAY_PROXIES[gateway]}
        if gateway == "kubernetes":
            # The gateway's Python runs the pod launcher (as its own kernelspecs do).
            proxy["config"] = {"image_name": image}
            spec["argv"] = ["python", f"{{resource_dir}}/{POD_SCRIPT}", *GATEWAY_LAUNCHER_ARGS]
        elif gateway != "local":
            launcher = [python, "-m", "llmspell_kernel.gateway_launcher"]
            spec["argv"] = [*launcher, *GATEWAY_LAUNCHER_ARGS]
        spec["metadata"]["process_proxy"] = proxy
    return spec


def install(
    *,
    user: bool = True,
    sys_prefix: bool = False,
    prefix: str | Path | None = None,
    gateway: str | None = None,
    image: str | None = None,
    name: str = KERNEL_NAME,
) -> Path:
    """Install the kernelspec and return the directory it went to.

    ``prefix`` (e.g. a virtualenv) wins over ``sys_prefix`` (this Python's prefix), which wins
    over ``user`` (the per-user Jupyter data dir); with none of them, the system-wide dir.
    An existing kernelspec of that ``name`` at the same place is replaced. ``gateway`` writes
    it for Jupyter Enterprise Gateway (see :func:`kernel_json`).
    """
    spec = kernel_json(gateway=gateway, image=image)
    from jupyter_client.kernelspec import KernelSpecManager

    target = str(prefix) if prefix is not None else (sys.prefix if sys_prefix else None)
    with tempfile.TemporaryDirectory(prefix="llmspell-kernelspec-") as tmp:
        source = Path(tmp) / name
        source.mkdir()
        for item in _resources().iterdir():
            if item.is_file():
                (source / item.name).write_bytes(item.read_bytes())
        (source / "kernel.json").write_text(json.dumps(spec, indent=2) + "\n", "utf-8")
        if gateway == "kubernetes":
            script = source / POD_SCRIPT
            script.parent.mkdir()
            script.write_bytes(files("llmspell_kernel").joinpath("gateway_pod.py").read_bytes())
        try:
            installed = KernelSpecManager().install_kernel_spec(
                str(source), name, user=user and target is None, prefix=target
            )
        except OSError as exc:
            where = target or ("the user data dir" if user else "the system data dir")
            raise LLMSpellError(
                f"cannot install the {name} kernelspec into {where}: {exc}"
            ) from exc
    return Path(installed)


def uninstall() -> Path:
    """Remove the installed ``llmspell`` kernelspec (the one Jupyter finds first)."""
    from jupyter_client.kernelspec import KernelSpecManager

    try:
        removed = KernelSpecManager().remove_kernel_spec(KERNEL_NAME)
    except KeyError:
        raise LLMSpellError(f"the {KERNEL_NAME} kernelspec is not installed") from None
    except OSError as exc:
        raise LLMSpellError(f"cannot remove the {KERNEL_NAME} kernelspec: {exc}") from exc
    return Path(removed)


def _resources() -> Any:
    return files("llmspell_kernel").joinpath("resources", "kernelspec")
