"""An llmspell kernel behind Jupyter Enterprise Gateway (PyPI ``jupyter_enterprise_gateway``,
in ``.venv-gateway``: scripts/gateway_venv.sh), started on 127.0.0.1 with the kernelspec that
``llmspell kernel install --gateway local --prefix DIR`` writes: a kernel started through the
gateway's REST API answers ``model_request`` over its websocket with ``model_reply``, and streams
``model_stream`` on IOPub, unchanged by the gateway."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from tornado.websocket import WebSocketClientConnection, websocket_connect

from tests import cli_fixtures
from tests.cli_fixtures import GEMMA_SPEC, CliSession, run_cli
from tests.isolation import private_dirs
from tests.kubernetes_standin import KubernetesStandin
from tests.ssh_fixtures import SSHServer, free_port, start_sshd

cli_session = cli_fixtures.cli_session
__all__ = ["cli_session"]  # the fixture, used by name

ROOT = Path(__file__).resolve().parent.parent
GATEWAY = ROOT / ".venv-gateway" / "bin" / "jupyter-enterprisegateway"
START_SECONDS = 120.0
pytestmark = [pytest.mark.model, pytest.mark.timeout(300)]


def ensure_gateway() -> None:
    if not GATEWAY.exists():
        done = subprocess.run(
            ["bash", str(ROOT / "scripts" / "gateway_venv.sh")],
            capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        if done.returncode != 0 or not GATEWAY.exists():
            pytest.fail(f"Enterprise Gateway could not be installed: {done.stderr[-2000:]}")


KERNEL_IMAGE = "registry.example/llmspell-kernel:test"
PROXIES = {
    "llmspell": ("local", "LocalProcessProxy"),
    "llmspell_distributed": ("distributed", "DistributedProcessProxy"),
    "llmspell_kubernetes": ("kubernetes", "KubernetesProcessProxy"),
}


REMOTE_HOST = "127.0.0.2"
"""The distributed proxy's remote host over SSH: a loopback address the gateway does not count
as its own (it runs 127.0.0.1 and its interfaces' addresses without SSH)."""
CASES = [
    ("llmspell", {}, "local-process-proxy"),
    ("llmspell_distributed", {}, "distributed-process-proxy"),
    ("llmspell_distributed", {"KERNEL_REMOTE_HOST": REMOTE_HOST}, "distributed-over-ssh"),
    ("llmspell_kubernetes", {}, "kubernetes-process-proxy"),
]


@dataclass
class Gateway:
    url: str
    kubernetes: KubernetesStandin
    sshd: SSHServer


@pytest.fixture(scope="module")
def gateway(cli_session: CliSession, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The gateway, whose kernelspec dir holds only llmspell's gateway kernelspecs, and the
    Kubernetes API stand-in its ``KubernetesProcessProxy`` talks to (the in-cluster config of
    a gateway deployed in a cluster: ``KUBERNETES_SERVICE_HOST``, a token and a CA)."""
    ensure_gateway()
    base = tmp_path_factory.mktemp("gateway")
    for name, (proxy, proxy_class) in PROXIES.items():
        image = ["--image", KERNEL_IMAGE] if proxy == "kubernetes" else []
        installed = run_cli(
            ["kernel", "install", "--gateway", proxy, "--name", name, *image,
             "--prefix", str(base / "prefix")],
            cli_session.env,
        )  # fmt: skip
        assert installed.returncode == 0, installed.stderr
        spec = json.loads((base / f"prefix/share/jupyter/kernels/{name}/kernel.json").read_text())
        assert spec["metadata"]["process_proxy"]["class_name"].endswith(proxy_class)
    image_path = f"{ROOT / '.venv' / 'bin'}:/usr/bin:/bin"  # the kernel image has llmspell
    kubernetes = KubernetesStandin(base, image_path=image_path).start()
    sshd = start_sshd(base / "sshd", REMOTE_HOST)
    home = gateway_home(base / "home", sshd)
    port = free_port()
    env = {
        **cli_session.env,
        **private_dirs(base),
        "JUPYTER_PATH": str(base / "prefix" / "share" / "jupyter"),
        "LLMSPELL_MODELS": str(cli_session.models),
        # the gateway's Python runs the pod launcher (`python` in a Kubernetes kernelspec)
        "PATH": f"{GATEWAY.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "PYTHONPATH": str(kubernetes.site_customize(base / "site")),
        "KUBERNETES_SERVICE_HOST": kubernetes.host,
        "KUBERNETES_SERVICE_PORT": str(kubernetes.port),
        "EG_SHARED_NAMESPACE": "True",
        "EG_NAMESPACE": "llmspell-test",
        # the distributed proxy's SSH (paramiko): the gateway user's key and known hosts
        "HOME": str(home),
        "EG_SSH_PORT": str(sshd.port),
        "EG_KERNEL_LOG_DIR": str(base),
    }
    # A gateway's kernels inherit only the variables it allows: the model store and the
    # private directories of the test, and for the pod launcher the test's in-cluster config.
    inherited = [
        k
        for k in env
        if k.startswith(("LLMSPELL_", "XDG_", "JUPYTER_", "HF_", "OLLAMA_", "PYTHONPATH"))
    ]
    allow = [f"--EnterpriseGatewayApp.env_process_whitelist={name}" for name in inherited]
    log = (base / "gateway.log").open("wb")
    process = subprocess.Popen(
        [str(GATEWAY), "--ip=127.0.0.1", f"--port={port}", "--port_retries=0",
         "--EnterpriseGatewayApp.default_kernel_name=llmspell", *allow],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                if httpx.get(f"{url}/api", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the gateway did not start: {(base / 'gateway.log').read_text()[-2000:]}"
                )
            time.sleep(0.2)
        yield Gateway(url, kubernetes, sshd)
    finally:
        kubernetes.stop()
        if sshd.process.poll() is None:
            sshd.kill()
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()


def gateway_home(home: Path, sshd: SSHServer) -> Path:
    """A home for the gateway's user whose ``~/.ssh`` holds the test sshd's client key (as
    ``id_ed25519``, which paramiko tries) and its host key in ``known_hosts`` (the gateway
    rejects unknown hosts)."""
    ssh = home / ".ssh"
    ssh.mkdir(parents=True, mode=0o700)
    shutil.copy(sshd.key, ssh / "id_ed25519")
    shutil.copy(f"{sshd.key}.pub", ssh / "id_ed25519.pub")
    host_key = (sshd.key.parent / "host_key.pub").read_text().split()[:2]
    (ssh / "known_hosts").write_text(f"[{REMOTE_HOST}]:{sshd.port} {' '.join(host_key)}\n")
    return home


def ssh_connections(kernel_id: str) -> list[str]:
    """The server addresses of the SSH sessions that started the processes of ``kernel_id``."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if any(kernel_id in part for part in process.info["cmdline"] or []):
            try:
                connection = process.environ().get("SSH_CONNECTION")
            except psutil.Error:
                continue
            if connection:
                found.append(connection.split()[2])  # client ip, port, server ip, port
    return sorted(set(found))


def message(msg_type: str, content: dict[str, Any], channel: str = "shell") -> dict[str, Any]:
    """A Jupyter message as a websocket client sends it (the server signs it)."""
    return {
        "header": {
            "msg_id": uuid.uuid4().hex,
            "msg_type": msg_type,
            "username": "test",
            "session": uuid.uuid4().hex,
            "date": datetime.now(UTC).isoformat(),
            "version": "5.3",
        },
        "parent_header": {},
        "metadata": {},
        "content": content,
        "channel": channel,
        "buffers": [],
    }


EXCHANGE_SECONDS = 120.0
CLOSE_SECONDS = 10.0


async def closed(socket: WebSocketClientConnection) -> None:
    """Close the websocket and wait for the server's close (else its socket is left for the
    garbage collector, and its ResourceWarning fails a later test)."""
    socket.close()
    try:
        async with asyncio.timeout(CLOSE_SECONDS):
            while await socket.read_message() is not None:
                pass
    except TimeoutError:
        pass
    stream = getattr(socket, "stream", None)
    if stream is not None:
        stream.close()


async def exchange(
    socket: WebSocketClientConnection, request: dict[str, Any]
) -> list[dict[str, Any]]:
    """Send ``request``; the messages parented to it, until its reply and the kernel's idle."""
    await socket.write_message(json.dumps(request))
    wanted = request["header"]["msg_id"]
    seen: list[dict[str, Any]] = []
    replied = idle = False
    deadline = time.monotonic() + EXCHANGE_SECONDS
    while not (replied and idle):
        left = deadline - time.monotonic()
        assert left > 0, f"no reply to {request['header']['msg_type']}: {seen}"
        raw = await asyncio.wait_for(socket.read_message(), left)
        assert raw is not None, "the gateway closed the websocket"
        msg = json.loads(raw)
        if msg.get("parent_header", {}).get("msg_id") != wanted:
            continue
        seen.append(msg)
        replied = replied or msg["header"]["msg_type"].endswith("_reply")
        idle = idle or (
            msg["header"]["msg_type"] == "status"
            and msg["content"].get("execution_state") == "idle"
        )
    return seen


@pytest.mark.parametrize(
    ("kernel_name", "kernel_env"), [case[:2] for case in CASES], ids=[case[2] for case in CASES]
)
def test_model_requests_and_streams_pass_through_the_gateway_unchanged(
    gateway: Gateway, kernel_name: str, kernel_env: dict[str, str]
) -> None:
    """``distributed``: the gateway's DistributedProcessProxy on its default remote host,
    localhost, which it runs without SSH; the kernel starts through llmspell's launcher, which
    sends its connection info back encrypted with the gateway's key; ``distributed-over-ssh``:
    the same on a remote host (127.0.0.2) that the gateway reaches through the test's sshd, as
    on a cluster. ``kubernetes``: the
    gateway runs the kernelspec's pod launcher, which creates the kernel's pod through the
    Kubernetes API (the stand-in runs its container here); the gateway finds the pod by its
    labels, the container's launcher calls back, and the gateway deletes the pod at the end."""
    url = gateway.url
    # The gateway refuses kernels for root (unauthorized_users): name another user, as
    # clients of a gateway do.
    body = {"name": kernel_name, "env": {"KERNEL_USERNAME": "llmspell-test", **kernel_env}}
    started = httpx.post(f"{url}/api/kernels", json=body, timeout=120)
    assert started.status_code == 201, started.text
    kernel = started.json()["id"]
    try:

        async def talk() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
            channels = url.replace("http", "ws") + f"/api/kernels/{kernel}/channels"
            socket = await websocket_connect(channels)
            try:
                status = await exchange(socket, message("model_request", {"command": "status"}))
                generate = {
                    "command": "generate",
                    "model": GEMMA_SPEC,
                    "prompt": "The sea is",
                    "options": {"max_tokens": 12, "temperature": 0.0},
                    "stream": True,
                }
                streamed = await exchange(socket, message("model_request", generate))
                return status, streamed
            finally:
                await closed(socket)

        status, streamed = asyncio.run(talk())
        launched = ssh_connections(kernel)
    finally:
        httpx.delete(f"{url}/api/kernels/{kernel}", timeout=60)
    reply = next(m for m in status if m["header"]["msg_type"] == "model_reply")
    assert reply["channel"] == "shell" and reply["content"]["status"] == "ok"
    assert reply["content"]["backends"]["llamacpp"]["available"] is True
    pieces = [m for m in streamed if m["header"]["msg_type"] == "model_stream"]
    shown = [(m["header"]["msg_type"], m["content"]) for m in streamed]
    assert pieces and all(m["channel"] == "iopub" for m in pieces), shown
    done = next(m for m in streamed if m["header"]["msg_type"] == "model_reply")
    assert done["content"]["status"] == "ok"
    assert "".join(m["content"]["text"] for m in pieces) == done["content"]["text"]
    assert done["content"]["metrics"]["generated_tokens"] >= 1
    # Over SSH the kernel's launcher was started by the test's sshd (whose sessions set
    # SSH_CONNECTION); the other proxies start it themselves.
    assert (REMOTE_HOST in launched) == bool(kernel_env.get("KERNEL_REMOTE_HOST")), launched
    if PROXIES[kernel_name][0] == "kubernetes":
        [(_, pod)] = [key for key in gateway.kubernetes.created if kernel in key[1]]
        assert pod in gateway.kubernetes.deleted  # the gateway deleted its pod at shutdown


def test_the_launcher_takes_the_bootstrap_flags_and_encrypts_as_the_gateway_decrypts() -> None:
    """The argument forms of the gateway's kernelspecs and of its images' bootstrap script,
    and a payload decrypted as ``RemoteProcessProxy._decode_payload`` does (version 1)."""
    import base64

    from Cryptodome.Cipher import AES, PKCS1_v1_5
    from Cryptodome.PublicKey import RSA
    from Cryptodome.Util.Padding import unpad

    from llmspell_kernel.gateway_launcher import encrypt, parse_args, port_range

    spec_form = parse_args(["--RemoteProcessProxy.kernel-id", "k1",
                            "--RemoteProcessProxy.response-address", "10.0.0.2:8877",
                            "--RemoteProcessProxy.public-key", "KEY",
                            "--RemoteProcessProxy.port-range", "40000..41000"])  # fmt: skip
    bootstrap_form = parse_args(["--kernel-id", "k1", "--port-range", "40000..41000",
                                 "--response-address", "10.0.0.2:8877", "--public-key", "KEY",
                                 "--spark-context-initialization-mode", "none"])  # fmt: skip
    assert vars(spec_form)["kernel_id"] == vars(bootstrap_form)["kernel_id"] == "k1"
    assert port_range(bootstrap_form.port_range) == (40000, 41000)
    assert port_range("0..0") == (0, 0)
    with pytest.raises(SystemExit, match="bad port range"):
        port_range("41000..40000")

    private = RSA.generate(1024)
    public = base64.b64encode(private.publickey().export_key(format="DER")).decode()
    payload = json.loads(base64.b64decode(encrypt(b'{"shell_port": 1}', public)))
    assert payload["version"] == 1
    aes_key = PKCS1_v1_5.new(private).decrypt(base64.b64decode(payload["key"]), None)
    info = AES.new(aes_key, AES.MODE_ECB).decrypt(base64.b64decode(payload["conn_info"]))
    assert json.loads(unpad(info, 16)) == {"shell_port": 1}


def test_the_pod_launcher_runs_in_the_gateways_python_and_describes_the_kernels_pod(
    cli_session: CliSession, tmp_path: Path
) -> None:
    """The kernelspec's ``scripts/launch_kubernetes.py`` runs where llmspell is not installed
    (the gateway's environment); ``--dry-run`` shows the pod it would create."""
    ensure_gateway()
    prefix = tmp_path / "prefix"
    installed = run_cli(
        ["kernel", "install", "--gateway", "kubernetes", "--image", KERNEL_IMAGE,
         "--prefix", str(prefix)],
        cli_session.env,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    spec_dir = prefix / "share" / "jupyter" / "kernels" / "llmspell"
    spec = json.loads((spec_dir / "kernel.json").read_text())
    assert spec["metadata"]["process_proxy"]["config"] == {"image_name": KERNEL_IMAGE}
    assert spec["argv"][:2] == ["python", "{resource_dir}/scripts/launch_kubernetes.py"]
    script = spec_dir / "scripts" / "launch_kubernetes.py"
    assert script.read_bytes() == (ROOT / "llmspell_kernel" / "gateway_pod.py").read_bytes()
    env = {
        "PATH": "/usr/bin:/bin",
        "KERNEL_IMAGE": KERNEL_IMAGE,
        "KERNEL_POD_NAME": "alice-k1",
        "KERNEL_NAMESPACE": "jupyter",
        "KERNEL_SERVICE_ACCOUNT_NAME": "kernels",
        "KERNEL_UID": "1000",
        "KERNEL_GID": "100",
        "KERNEL_MEMORY_LIMIT": "8Gi",
        "LLMSPELL_MODELS": "/models",
        "SECRET_OF_THE_GATEWAY": "not for the pod",
    }
    args = [a.replace("{kernel_id}", "k1").replace("{response_address}", "10.0.0.2:8877")
            .replace("{public_key}", "KEY").replace("{port_range}", "40000..41000")
            for a in spec["argv"][2:]]  # fmt: skip
    python = str(GATEWAY.parent / "python")
    shown = subprocess.run(
        [python, str(script), *args, "--dry-run"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    pod = json.loads(shown.stdout)
    assert pod["metadata"]["name"] == "alice-k1" and pod["metadata"]["namespace"] == "jupyter"
    assert pod["metadata"]["labels"]["kernel_id"] == "k1"
    assert pod["metadata"]["labels"]["component"] == "kernel"  # the gateway's pod selector
    [container] = pod["spec"]["containers"]
    assert container["image"] == KERNEL_IMAGE
    assert container["command"] == ["python", "-m", "llmspell_kernel.gateway_launcher"]
    assert container["args"][container["args"].index("--RemoteProcessProxy.port-range") + 1] == (
        "40000..41000"
    )
    passed = {item["name"]: item["value"] for item in container["env"]}
    assert passed["LLMSPELL_MODELS"] == "/models" and passed["KERNEL_ID"] == "k1"
    assert "SECRET_OF_THE_GATEWAY" not in passed
    assert container["resources"] == {"limits": {"memory": "8Gi"}, "requests": {}}
    assert pod["spec"]["securityContext"] == {"runAsUser": 1000, "runAsGroup": 100}
    assert pod["spec"]["serviceAccountName"] == "kernels"
    missing = subprocess.run(
        [python, str(script), *args, "--dry-run"],
        env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert missing.returncode != 0 and "no kernel image" in missing.stderr
