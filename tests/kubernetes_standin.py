"""A stand-in for the Kubernetes API server and kubelet, for Enterprise Gateway's
``KubernetesProcessProxy`` (no cluster can run here).

It speaks the parts of the documented REST API (``/api/v1``) that the gateway and the pod
launcher use, over HTTPS with a CA made for it and a bearer token, as a cluster serves a pod's
service account: create a pod, list pods by label selector, read one, delete one. A created
pod's container "runs" as a local process: the container's ``command`` + ``args`` with its
``env`` (``$(VAR)`` references expanded, as the kubelet does) and ``python`` found in
``image_path`` — the image's ``PATH``. Its phase is ``Running`` (pod IP 127.0.0.1) while the
process lives, then ``Succeeded``/``Failed``. Every request is recorded; unknown paths are 404
with a ``Status`` body. Stopping the stand-in stops every container process.
"""

from __future__ import annotations

import json
import os
import re
import signal
import ssl
import subprocess
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

POD = re.compile(r"/api/v1/namespaces/(?P<ns>[^/]+)/pods(?:/(?P<name>[^/]+))?")
VAR = re.compile(r"\$\((\w+)\)")
STOP_SECONDS = 10.0


def make_tls(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, its own CA: ``(cert, key)``."""
    cert, key = directory / "apiserver.crt", directory / "apiserver.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


@dataclass
class Pod:
    manifest: dict[str, Any]
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    @property
    def phase(self) -> str:
        if self.process is None:
            return "Pending"
        code = self.process.poll()
        if code is None:
            return "Running"
        return "Succeeded" if code == 0 else "Failed"

    def document(self) -> dict[str, Any]:
        status = {"phase": self.phase, "podIP": "127.0.0.1", "hostIP": "127.0.0.1"}
        return {**self.manifest, "status": status}


@dataclass
class KubernetesStandin:
    """``with KubernetesStandin(tmp, image_path=...) as api:``; ``api.host``/``api.port``,
    ``api.token``, ``api.ca`` for the clients; ``api.pods``, ``api.requests`` for the test."""

    directory: Path
    image_path: str
    """The ``PATH`` of the (pretend) image: where its ``python`` is."""
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    pods: dict[tuple[str, str], Pod] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    created: list[tuple[str, str]] = field(default_factory=list)
    """``(namespace, name)`` of every pod created."""
    deleted: list[str] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    ca: Path | None = None
    """The CA certificate clients verify the server with (set by :meth:`start`)."""

    host = "127.0.0.1"

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    def site_customize(self, directory: Path) -> Path:
        """A ``sitecustomize.py`` in ``directory`` (put it on ``PYTHONPATH``) that points the
        kubernetes client's in-cluster config at this server's token and CA, as the files of a
        pod's service account would be (``KUBERNETES_SERVICE_HOST``/``_PORT`` name the server)."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "sitecustomize.py").write_text(
            "try:\n"
            "    from kubernetes.config import incluster_config\n"
            "except ImportError:  # an environment without the kubernetes client\n"
            "    pass\n"
            "else:\n"
            f"    incluster_config.SERVICE_TOKEN_FILENAME = {str(self.directory / 'token')!r}\n"
            f"    incluster_config.SERVICE_CERT_FILENAME = {str(self.ca)!r}\n"
        )
        return directory

    def start(self) -> KubernetesStandin:
        cert, key = make_tls(self.directory)
        self.ca = cert
        (self.directory / "token").write_text(self.token)
        standin = self

        class Handler(_Handler):
            api = standin

        server = ThreadingHTTPServer((self.host, 0), Handler)
        server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._lock:
            pods = list(self.pods.values())
            self.pods.clear()
        for pod in pods:
            _stop(pod)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(STOP_SECONDS)

    def __enter__(self) -> KubernetesStandin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # The API ----------------------------------------------------------------------------------

    def create(self, namespace: str, manifest: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        metadata = manifest.setdefault("metadata", {})
        name = metadata.get("name")
        if not name or metadata.get("namespace", namespace) != namespace:
            return 422, _status(422, "Invalid", f"bad pod metadata: {metadata}")
        metadata.update(
            namespace=namespace,
            uid=str(uuid.uuid4()),
            creationTimestamp=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        with self._lock:
            if (namespace, name) in self.pods:
                return 409, _status(409, "AlreadyExists", f'pods "{name}" already exists')
            pod = self.pods[namespace, name] = Pod(manifest)
            self.created.append((namespace, name))
        self._run(pod)
        return 201, pod.document()

    def list(self, namespace: str, selector: str) -> dict[str, Any]:
        wanted = dict(part.split("=", 1) for part in selector.split(",") if "=" in part)
        with self._lock:
            pods = [p for (ns, _), p in self.pods.items() if ns == namespace]
        items = [
            p.document()
            for p in pods
            if all(p.manifest["metadata"].get("labels", {}).get(k) == v for k, v in wanted.items())
        ]
        return {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}

    def get(self, namespace: str, name: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            pod = self.pods.get((namespace, name))
        if pod is None:
            return 404, _status(404, "NotFound", f'pods "{name}" not found')
        return 200, pod.document()

    def delete(self, namespace: str, name: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            pod = self.pods.pop((namespace, name), None)
        if pod is None:
            return 404, _status(404, "NotFound", f'pods "{name}" not found')
        _stop(pod)
        self.deleted.append(name)
        return 200, pod.document()

    def _run(self, pod: Pod) -> None:
        [container] = pod.manifest["spec"]["containers"]
        env = {"PATH": self.image_path, "HOME": str(self.directory)}
        for item in container.get("env", []):
            env[item["name"]] = VAR.sub(lambda m: env.get(m[1], m[0]), item.get("value", ""))
        command = [
            VAR.sub(lambda m: env.get(m[1], m[0]), part)
            for part in [*container.get("command", []), *container.get("args", [])]
        ]
        pod.log = self.directory / f"{pod.manifest['metadata']['name']}.log"
        with pod.log.open("wb") as log:
            pod.process = subprocess.Popen(
                command, env=env, cwd=self.directory, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip


def _stop(pod: Pod) -> None:
    process = pod.process
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(STOP_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


class _Handler(BaseHTTPRequestHandler):
    api: KubernetesStandin
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_DELETE(self) -> None:
        self._route("DELETE")

    def _route(self, method: str) -> None:
        url = urlsplit(self.path)
        self.api.requests.append((method, url.path))
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or token != self.api.token:  # the scheme has no case
            self._send(401, _status(401, "Unauthorized", "no or wrong bearer token"))
            return
        match = POD.fullmatch(url.path)
        if match is None:
            self._send(404, _status(404, "NotFound", f"not served here: {url.path}"))
            return
        namespace, name = match["ns"], match["name"]
        if method == "POST" and name is None and isinstance(body, dict):
            self._send(*self.api.create(namespace, body))
        elif method == "GET" and name is None:
            selector = parse_qs(url.query).get("labelSelector", [""])[0]
            self._send(200, self.api.list(namespace, selector))
        elif method == "GET" and name is not None:
            self._send(*self.api.get(namespace, name))
        elif method == "DELETE" and name is not None:
            self._send(*self.api.delete(namespace, name))
        else:
            self._send(405, _status(405, "MethodNotAllowed", f"{method} {url.path}"))

    def _send(self, code: int, document: dict[str, Any]) -> None:
        data = json.dumps(document).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
