"""Start an llmspell kernel pod for Jupyter Enterprise Gateway's ``KubernetesProcessProxy``;
and the launcher flags of the gateway's remote process proxies, which
:mod:`llmspell_kernel.gateway_launcher` takes too.

The gateway runs this on its own host (``argv`` of a kernelspec that ``llmspell kernel install
--gateway kubernetes`` writes; this file is copied to the kernelspec's
``scripts/launch_kubernetes.py``), with the
gateway's launcher flags (``--RemoteProcessProxy.kernel-id ID``, ``.response-address IP:PORT``,
``.public-key KEY``, ``.port-range LOW..HIGH``) and the ``KERNEL_*`` variables it sets
(``KERNEL_POD_NAME``, ``KERNEL_NAMESPACE``, ``KERNEL_IMAGE``, ``KERNEL_SERVICE_ACCOUNT_NAME``,
``KERNEL_UID``/``KERNEL_GID``...). It creates one pod and exits: the pod's container runs
``python -m llmspell_kernel.gateway_launcher`` with the same flags, which sends the kernel's
connection info back to the gateway; the gateway finds the pod by its labels (``kernel_id``,
``component=kernel``) and deletes it at shutdown.

It runs in the *gateway's* Python, which has the ``kubernetes`` client (a dependency of
Enterprise Gateway) but not llmspell: it imports nothing else, from llmspell or elsewhere.
``--dry-run`` prints the pod's manifest instead of creating it. Environment variables named
``LLMSPELL_*``, ``OLLAMA_HOST`` and ``HF_*`` that reach this script (the gateway passes what
its ``env_process_whitelist`` allows and what the client sends as ``KERNEL_*``) are passed to
the kernel's container.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

PASSED_ON = ("LLMSPELL_", "OLLAMA_HOST", "HF_")
"""Variables of the gateway's environment for the kernel that the pod's container gets."""
CONTAINER_COMMAND = ["python", "-m", "llmspell_kernel.gateway_launcher"]
"""What the kernel image runs: llmspell's launcher (the image needs ``llmspell[gateway]``)."""


def parse_args(
    argv: Sequence[str] | None = None, *, pod: bool = True, description: str | None = None
) -> argparse.Namespace:
    """The gateway's launcher flags, in the form of its kernelspecs
    (``--RemoteProcessProxy.kernel-id``) and of its images' bootstrap script (``--kernel-id``);
    ``pod`` adds ``--dry-run``. ``description`` is the program's (default: this module's)."""
    if description is None and __doc__:
        description = __doc__.split("\n\n")[0]
    parser = argparse.ArgumentParser(description=description)
    for name, what in (
        ("kernel-id", "the kernel's ID, as the gateway knows it"),
        ("response-address", "IP:PORT where the gateway waits for the connection info"),
        ("public-key", "the gateway's RSA public key (base64 DER)"),
        ("port-range", "LOW..HIGH: the ports the kernel may use (0..0: any)"),
    ):
        parser.add_argument(
            f"--RemoteProcessProxy.{name}", f"--{name}", dest=name.replace("-", "_"), help=what
        )
    # The gateway's own kernelspecs and its images' bootstrap-kernel.sh pass these too; they
    # mean nothing to llmspell.
    for ignored in ("spark-context-initialization-mode", "cluster-type", "kernel-class-name"):
        parser.add_argument(f"--RemoteProcessProxy.{ignored}", f"--{ignored}", default=None)
    if pod:
        parser.add_argument("--dry-run", action="store_true", help="print the pod's manifest")
    args = parser.parse_args(argv)
    for needed in ("kernel_id", "response_address", "public_key"):
        if not getattr(args, needed):
            parser.error(f"--RemoteProcessProxy.{needed.replace('_', '-')} is required")
    return args


def pod_manifest(args: argparse.Namespace, env: Mapping[str, str]) -> dict[str, Any]:
    """The kernel's pod: the gateway's labels, ``KERNEL_IMAGE`` running llmspell's launcher,
    as the gateway's own ``kernel-pod.yaml.j2`` describes its kernels."""
    kernel_id = args.kernel_id
    image = env.get("KERNEL_IMAGE")
    if not image:
        raise SystemExit(
            "no kernel image: set metadata.process_proxy.config.image_name in kernel.json "
            "(llmspell kernel install --gateway kubernetes --image IMAGE) or KERNEL_IMAGE"
        )
    launcher_args = [
        "--RemoteProcessProxy.kernel-id", kernel_id,
        "--RemoteProcessProxy.response-address", args.response_address,
        "--RemoteProcessProxy.public-key", args.public_key,
        "--RemoteProcessProxy.port-range", args.port_range or "0..0",
    ]  # fmt: skip
    container_env = [{"name": "KERNEL_ID", "value": kernel_id}]
    container_env += [
        {"name": name, "value": value}
        for name, value in sorted(env.items())
        if name.startswith(PASSED_ON) or name in ("KERNEL_USERNAME", "KERNEL_NAMESPACE")
    ]
    container: dict[str, Any] = {
        "name": "kernel",
        "image": image,
        "command": CONTAINER_COMMAND,
        "args": launcher_args,
        "env": container_env,
    }
    limits = {
        key: env[var]
        for key, var in (("cpu", "KERNEL_CPUS_LIMIT"), ("memory", "KERNEL_MEMORY_LIMIT"))
        if env.get(var)
    }
    requests = {
        key: env[var]
        for key, var in (("cpu", "KERNEL_CPUS"), ("memory", "KERNEL_MEMORY"))
        if env.get(var)
    }
    if limits or requests:
        container["resources"] = {"limits": limits, "requests": requests}
    spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    if env.get("KERNEL_SERVICE_ACCOUNT_NAME"):
        spec["serviceAccountName"] = env["KERNEL_SERVICE_ACCOUNT_NAME"]
    if env.get("KERNEL_UID") or env.get("KERNEL_GID"):
        spec["securityContext"] = {
            key: int(env[var])
            for key, var in (("runAsUser", "KERNEL_UID"), ("runAsGroup", "KERNEL_GID"))
            if env.get(var)
        }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": env.get("KERNEL_POD_NAME") or f"llmspell-{kernel_id}",
            "namespace": env.get("KERNEL_NAMESPACE", "default"),
            "labels": {
                "kernel_id": kernel_id,
                "app": "enterprise-gateway",
                "component": "kernel",
                "source": "llmspell",
            },
        },
        "spec": spec,
    }


def _resources(env: Mapping[str, str], cpu: str, memory: str) -> dict[str, str]:
    """The gateway's ``KERNEL_CPUS``/``KERNEL_MEMORY`` (and ``_LIMIT``) variables that are set."""
    return {key: env[var] for key, var in (("cpu", cpu), ("memory", memory)) if env.get(var)}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    manifest = pod_manifest(args, os.environ)
    if args.dry_run:
        print(json.dumps(manifest, indent=2))
        return 0
    try:
        from kubernetes import client, config
    except ImportError:  # the gateway's environment has it (a dependency of its k8s proxy)
        raise SystemExit(
            "launch_kubernetes.py needs the kubernetes client (pip install kubernetes): run it"
            " with the Python of Enterprise Gateway"
        ) from None

    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()
    else:
        config.load_kube_config()
    namespace = manifest["metadata"]["namespace"]
    client.CoreV1Api().create_namespaced_pod(namespace=namespace, body=manifest)
    print(f"created pod {namespace}/{manifest['metadata']['name']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
