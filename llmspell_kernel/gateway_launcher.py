"""``python -m llmspell_kernel.gateway_launcher``: start an llmspell kernel for one of Jupyter
Enterprise Gateway's remote process proxies (``DistributedProcessProxy``: other hosts over SSH;
``KubernetesProcessProxy``: a pod), speaking the gateway's launcher protocol as its own
``launch_ipykernel.py`` does (launcher version 1).

The gateway starts this with ``--RemoteProcessProxy.kernel-id ID``, ``.response-address
IP:PORT``, ``.public-key KEY`` and ``.port-range LOW..HIGH`` (or ``0..0``: any port). The
launcher picks five kernel ports and a communication port in the range, writes a connection
file (a fresh HMAC key, every address: the gateway connects from elsewhere), sends the
connection info to the response address — encrypted with a fresh AES key, itself encrypted with
the gateway's RSA public key — and runs the kernel. On the communication port the gateway sends
``{"signum": N}`` (0 is its liveness poll; 2 interrupts the kernel) and ``{"shutdown": 1}``.

Needs ``pycryptodomex`` (the ``gateway`` extra: ``pip install llmspell[gateway]``), as the
gateway's own launchers do.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import random
import socket
import sys
import tempfile
import threading
import uuid
from collections.abc import Sequence
from typing import Any

from .gateway_pod import parse_args

LAUNCHER_VERSION = 1
"""The payload format the gateway's ``receive_connection_info`` decodes."""
PORT_TRIES = 20
"""Random ports tried in the port range before giving up."""
log = logging.getLogger("llmspell.gateway_launcher")


def port_range(text: str | None) -> tuple[int, int]:
    """``LOW..HIGH`` as two ints (``0..0``, or nothing: any port)."""
    if not text:
        return 0, 0
    low, sep, high = text.partition("..")
    try:
        lower, upper = int(low), int(high)
    except ValueError:
        raise SystemExit(f"gateway_launcher: bad port range {text!r} (LOW..HIGH)") from None
    if not sep or lower > upper or lower < 0 or upper > 65535:
        raise SystemExit(f"gateway_launcher: bad port range {text!r} (LOW..HIGH)")
    return lower, upper


def bound_socket(lower: int, upper: int) -> socket.socket:
    """A TCP socket bound on every address to a free port in ``lower..upper`` (any: 0..0)."""
    for _ in range(PORT_TRIES):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("0.0.0.0", 0 if upper == 0 else random.randint(lower, upper)))
            return sock
        except OSError:
            sock.close()
    raise SystemExit(f"gateway_launcher: no free port in {lower}..{upper} after {PORT_TRIES} tries")


def encrypt(connection_info: bytes, public_key: str) -> bytes:
    """The gateway's version-1 payload: the info AES-encrypted with a fresh key, that key
    RSA-encrypted (PKCS#1 v1.5) with ``public_key``, both base64 in base64 JSON."""
    try:
        from Cryptodome.Cipher import AES, PKCS1_v1_5
        from Cryptodome.PublicKey import RSA
        from Cryptodome.Random import get_random_bytes
        from Cryptodome.Util.Padding import pad
    except ImportError:
        raise SystemExit(
            "gateway_launcher needs pycryptodomex: pip install 'llmspell[gateway]'"
        ) from None
    aes_key = get_random_bytes(16)
    info = AES.new(aes_key, AES.MODE_ECB).encrypt(pad(connection_info, 16))
    rsa = PKCS1_v1_5.new(RSA.importKey(base64.b64decode(public_key.encode())))
    payload = {
        "version": LAUNCHER_VERSION,
        "key": base64.b64encode(rsa.encrypt(aes_key)).decode(),
        "conn_info": base64.b64encode(info).decode(),
    }
    return base64.b64encode(json.dumps(payload).encode())


def write_connection_file(lower: int, upper: int) -> str:
    """A connection file for the kernel: five ports of the range, every address, a new key."""
    from jupyter_client.connect import write_connection_file as write

    sockets = [bound_socket(lower, upper) for _ in range(5)]
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    fd, path = tempfile.mkstemp(prefix="llmspell-gateway-", suffix=".json")
    os.close(fd)
    write(
        path,
        ip="0.0.0.0",  # the gateway connects from another host or pod
        key=str(uuid.uuid4()).encode(),
        shell_port=ports[0],
        iopub_port=ports[1],
        stdin_port=ports[2],
        hb_port=ports[3],
        control_port=ports[4],
    )
    os.chmod(path, 0o600)
    return path


def send_connection_info(
    path: str, kernel_id: str, response_address: str, public_key: str, comm_port: int
) -> None:
    """Tell the gateway how to reach the kernel (and the launcher)."""
    host, sep, port = response_address.rpartition(":")
    if not sep or not port.isdigit():
        raise SystemExit(f"gateway_launcher: bad response address {response_address!r}")
    with open(path, encoding="utf-8") as handle:
        info: dict[str, Any] = json.load(handle)
    info.update(pid=os.getpid(), pgid=os.getpgid(0), comm_port=comm_port, kernel_id=kernel_id)
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(encrypt(json.dumps(info).encode(), public_key))


def listen(sock: socket.socket) -> None:
    """Answer the gateway's requests on the communication port until it says shutdown."""
    sock.listen(1)
    while True:
        try:
            connection, _ = sock.accept()
        except OSError:
            return
        with connection:
            data = b""
            while chunk := connection.recv(1024):
                data += chunk
        try:
            request = json.loads(data or b"{}")
        except ValueError:
            log.warning("gateway_launcher: not a request: %r", data[:200])
            continue
        signum = request.get("signum")
        if signum is not None and int(signum) != 0:
            log.info("gateway_launcher: signal %s from the gateway", signum)
            os.kill(os.getpid(), int(signum))
        if request.get("shutdown"):
            return


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv, pod=False, description=__doc__.split("\n\n")[0] if __doc__ else None)
    lower, upper = port_range(args.port_range)
    path = write_connection_file(lower, upper)
    comm = bound_socket(lower, upper)
    send_connection_info(
        path, args.kernel_id, args.response_address, args.public_key, comm.getsockname()[1]
    )
    threading.Thread(target=listen, args=(comm,), name="gateway-listener", daemon=True).start()
    from .kernelapp import main as kernel_main

    try:
        kernel_main(["-f", path])
    finally:
        comm.close()
        try:
            os.remove(path)
        except OSError:
            pass


if __name__ == "__main__":
    main(sys.argv[1:])
