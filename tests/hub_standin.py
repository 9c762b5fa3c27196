"""A stand-in for the Hugging Face Hub on 127.0.0.1, for pull tests without internet.

It serves what huggingface_hub 2.4 asks for (read in its source: ``HfApi.model_info``,
``HfApi.list_repo_tree``, ``get_hf_file_metadata`` and ``http_get``):

- ``GET /api/models/{repo}`` and ``/api/models/{repo}/revision/{rev}``: the repo info with
  ``sha`` (the commit) and ``siblings``; with ``?blobs=true`` each sibling has ``size``,
  ``blobId`` and, for LFS files, ``lfs: {sha256, size, pointerSize}``;
- ``GET /api/models/{repo}/tree/{rev}[/{path}]``: entries ``{type, oid, size, path, lfs}``;
- ``GET``/``HEAD /{repo}/resolve/{rev}/{filename}``: the bytes, with ``ETag``,
  ``X-Repo-Commit``, ``X-Linked-Etag``/``X-Linked-Size`` (LFS), ``Content-Length``,
  ``Accept-Ranges`` and ``Range`` support (206, 416);
- 404 with ``X-Error-Code: RepoNotFound`` / ``RevisionNotFound`` / ``EntryNotFound``.

Files come from bytes or from a path on disk (streamed, never read whole into memory).
:class:`Faults` switches on failures: cut the connection at a byte offset, serve corrupted
bytes, answer with an HTTP error (file GET, file HEAD or the repo API), or send slowly (a pause
after each chunk, or at most so many bytes per second).
Every request is recorded in ``requests``.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

CHUNK = 1 << 16
_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file, cached per (path, size, mtime) for the test session."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA_CACHE:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
        _SHA_CACHE[key] = digest.hexdigest()
    return _SHA_CACHE[key]


@dataclass(frozen=True)
class StandinFile:
    path: str
    source: bytes | Path
    size: int
    sha256: str
    lfs: bool

    @property
    def git_oid(self) -> str:
        """The git blob id (sha1 of the pointer for LFS files, of the content otherwise)."""
        body = self.pointer() if self.lfs else self.source
        data = body if isinstance(body, bytes) else body.read_bytes()
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()

    def pointer(self) -> bytes:
        return (
            f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\n"
            f"size {self.size}\n"
        ).encode()

    def chunks(self, start: int, end: int) -> Iterator[tuple[int, bytes]]:
        """(offset, bytes) pieces of [start, end)."""
        if isinstance(self.source, bytes):
            for offset in range(start, end, CHUNK):
                yield offset, self.source[offset : min(offset + CHUNK, end)]
            return
        with open(self.source, "rb") as handle:
            handle.seek(start)
            offset = start
            while offset < end:
                block = handle.read(min(CHUNK, end - offset))
                if not block:
                    return
                yield offset, block
                offset += len(block)


@dataclass
class Repo:
    repo_id: str
    commit: str
    files: dict[str, StandinFile]


@dataclass
class Faults:
    """Failures to inject in ``resolve`` downloads (GET only). Counters count down to 0."""

    drop_at: int | None = None
    """Cut the connection when a response reaches this file offset (at once if it starts there)."""
    drop_times: int | None = None
    """How many responses to cut (None: every one)."""
    corrupt: bool = False
    """Flip one byte in the middle of the file (the metadata keeps the true sha256)."""
    status: int | None = None
    """Answer with this HTTP status instead of the file."""
    status_times: int | None = None
    delay: float = 0.0
    """Seconds to pause after each chunk."""
    rate: float | None = None
    """Send each response at most this fast (bytes per second; None: as fast as it goes)."""
    api_status: int | None = None
    """Answer the repo API (info and file listing) with this HTTP status."""
    head_status: int | None = None
    """Answer HEAD requests of files with this HTTP status."""

    def reset(self) -> None:
        self.drop_at = self.drop_times = self.status = self.status_times = None
        self.api_status = self.head_status = None
        self.corrupt = False
        self.delay = 0.0
        self.rate = None


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    range: str | None
    status: int


@dataclass
class HubStandin:
    """The server; use as a context manager or call ``start()`` / ``stop()``."""

    repos: dict[str, Repo] = field(default_factory=dict)
    faults: Faults = field(default_factory=Faults)
    requests: list[RequestRecord] = field(default_factory=list)
    _server: _Server | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)
    """Set by ``stop()``: slow responses stop pausing."""

    def add_repo(
        self,
        repo_id: str,
        files: Mapping[str, bytes | Path],
        *,
        commit: str | None = None,
        lfs: bool = True,
    ) -> Repo:
        entries = {}
        for name, source in files.items():
            if isinstance(source, bytes):
                size, sha = len(source), hashlib.sha256(source).hexdigest()
            else:
                size, sha = source.stat().st_size, file_sha256(source)
            entries[name] = StandinFile(name, source, size, sha, lfs)
        if commit is None:
            seed = repo_id + "".join(f"{n}:{f.sha256}" for n, f in sorted(entries.items()))
            commit = hashlib.sha1(seed.encode()).hexdigest()
        repo = Repo(repo_id, commit, entries)
        self.repos[repo_id] = repo
        return repo

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the Hub stand-in is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> HubStandin:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.standin = self
        self.stopping.clear()
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.close_connections()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> HubStandin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def record(self, record: RequestRecord) -> None:
        with self._lock:
            self.requests.append(record)

    def downloads(self, filename: str | None = None) -> list[RequestRecord]:
        """The GET requests of ``resolve`` URLs (for ``filename`` when given)."""
        with self._lock:
            return [
                r
                for r in self.requests
                if r.method == "GET"
                and "/resolve/" in r.path
                and (filename is None or r.path.endswith("/" + filename))
            ]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    standin: HubStandin

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Hang up on every client, so that a stopped Hub is unreachable at once."""
        with self.connections_lock:
            for connection in self.connections:
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.connections.clear()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up (a cancelled download) are normal here, not worth a traceback.
        pass


_API = re.compile(r"^/api/models/([^/]+/[^/]+)(?:/(revision|tree)/([^/]+)(/.*)?)?$")
_RESOLVE = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 10

    def log_message(self, format: str, *args: Any) -> None:
        pass

    @property
    def standin(self) -> HubStandin:
        return self.server.standin

    def do_GET(self) -> None:
        self._route(head=False)

    def do_HEAD(self) -> None:
        self._route(head=True)

    def _route(self, *, head: bool) -> None:
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        query = parse_qs(parts.query)
        status = 500
        try:
            if match := _API.match(path):
                status = self._api(match, query)
            elif match := _RESOLVE.match(path):
                status = self._resolve(match, head=head)
            else:
                status = self._error(404, "", "Not Found")
        finally:
            self.standin.record(
                RequestRecord(self.command, path, self.headers.get("Range"), status)
            )

    # API -------------------------------------------------------------------------------------

    def _repo(self, repo_id: str, revision: str | None) -> Repo | int:
        repo = self.standin.repos.get(repo_id)
        if repo is None:
            return self._error(404, "RepoNotFound", "Repository not found")
        if revision not in (None, "main", repo.commit):
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return repo

    def _api(self, match: re.Match[str], query: dict[str, list[str]]) -> int:
        repo_id, kind, revision, sub = match.groups()
        if self.standin.faults.api_status is not None:
            return self._error(self.standin.faults.api_status, "", "Injected failure")
        repo = self._repo(repo_id, revision)
        if isinstance(repo, int):
            return repo
        if kind == "tree":
            return self._json(self._tree(repo, (sub or "").strip("/"), query))
        blobs = query.get("blobs", ["false"])[0].lower() == "true"
        siblings = []
        for item in repo.files.values():
            sibling: dict[str, Any] = {"rfilename": item.path}
            if blobs:
                sibling["blobId"] = item.git_oid
                sibling["size"] = item.size
                if item.lfs:
                    sibling["lfs"] = {
                        "sha256": item.sha256,
                        "size": item.size,
                        "pointerSize": len(item.pointer()),
                    }
            siblings.append(sibling)
        org = repo_id.split("/")[0]
        return self._json(
            {
                "_id": hashlib.md5(repo_id.encode()).hexdigest()[:24],
                "id": repo_id,
                "modelId": repo_id,
                "author": org,
                "sha": repo.commit,
                "lastModified": "2025-08-14T12:00:00.000Z",
                "createdAt": "2025-08-14T11:00:00.000Z",
                "private": False,
                "disabled": False,
                "gated": False,
                "downloads": 0,
                "likes": 0,
                "library_name": "gguf",
                "tags": ["gguf"],
                "siblings": siblings,
            }
        )

    def _tree(self, repo: Repo, prefix: str, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        entries: list[dict[str, Any]] = []
        folders: set[str] = set()
        for item in repo.files.values():
            if prefix and not item.path.startswith(prefix + "/"):
                continue
            rest = item.path[len(prefix) + 1 :] if prefix else item.path
            if "/" in rest and not recursive:
                folders.add((prefix + "/" if prefix else "") + rest.split("/")[0])
                continue
            entry: dict[str, Any] = {
                "type": "file",
                "oid": item.git_oid,
                "size": item.size,
                "path": item.path,
            }
            if item.lfs:
                entry["lfs"] = {
                    "oid": item.sha256,
                    "size": item.size,
                    "pointerSize": len(item.pointer()),
                }
            entries.append(entry)
        for folder in sorted(folders):
            entries.append({"type": "directory", "oid": "0" * 40, "size": 0, "path": folder})
        return entries

    # Files -----------------------------------------------------------------------------------

    def _resolve(self, match: re.Match[str], *, head: bool) -> int:
        repo_id, revision, filename = match.groups()
        repo = self._repo(repo_id, revision)
        if isinstance(repo, int):
            return repo
        item = repo.files.get(filename)
        if item is None:
            return self._error(404, "EntryNotFound", f"{filename} does not exist")
        faults = self.standin.faults
        if head and faults.head_status is not None:
            return self._error(faults.head_status, "", "Injected failure")
        if not head and faults.status is not None and faults.status_times != 0:
            if faults.status_times is not None:
                faults.status_times -= 1
            return self._error(faults.status, "", "Injected failure")

        start, end = 0, item.size
        status = 200
        wanted = self.headers.get("Range")
        if wanted:
            parsed = re.fullmatch(r"bytes=(\d+)-(\d*)", wanted.strip())
            if parsed is None:
                return self._error(400, "", f"Bad Range {wanted}")
            start = int(parsed.group(1))
            if parsed.group(2):
                end = min(int(parsed.group(2)) + 1, item.size)
            if start >= item.size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{item.size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return 416
            status = 206

        etag = item.sha256 if item.lfs else item.git_oid
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{etag}"')
        self.send_header("X-Repo-Commit", repo.commit)
        if item.lfs:
            self.send_header("X-Linked-Etag", f'"{item.sha256}"')
            self.send_header("X-Linked-Size", str(item.size))
        self.send_header(
            "Content-Disposition", f'attachment; filename="{filename.rsplit("/", 1)[-1]}"'
        )
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{item.size}")
        self.end_headers()
        if head:
            return status

        cut = None
        if faults.drop_at is not None and start <= faults.drop_at < end and faults.drop_times != 0:
            cut = faults.drop_at
            if faults.drop_times is not None:
                faults.drop_times -= 1
        flip = item.size // 2 if faults.corrupt else None
        began, sent = time.monotonic(), 0
        for offset, block in item.chunks(start, end if cut is None else cut):
            if flip is not None and offset <= flip < offset + len(block):
                data = bytearray(block)
                data[flip - offset] ^= 0xFF
                block = bytes(data)
            try:
                self.wfile.write(block)
            except OSError:
                self.close_connection = True
                return status
            if faults.delay and self.standin.stopping.wait(faults.delay):
                break
            sent += len(block)
            if faults.rate:  # ahead of the rate: wait until the bytes sent are due
                ahead = sent / faults.rate - (time.monotonic() - began)
                if ahead > 0 and self.standin.stopping.wait(ahead):
                    break
        if cut is not None:
            self._hang_up()
        return status

    def _hang_up(self) -> None:
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # Helpers ---------------------------------------------------------------------------------

    def _json(self, data: Any) -> int:
        body = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        return 200

    def _error(self, status: int, code: str, message: str) -> int:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        return status
