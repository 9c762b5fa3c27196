"""providers.llamacpp.hub.download through ``httpx.MockTransport``: resume and HTTP error
translation, in-process (test_hub_download.py runs the same transfer against the Hub stand-in).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from providers.errors import DownloadError, ModelNotFound
from providers.llamacpp import hub as hub_module
from providers.llamacpp.hub import HubFile, download, partial_path
from tests.hub_fixtures import fake_gguf
from tests.isolation import closed_port_url

CONTENT = fake_gguf("Q4_K_M")
FILE = HubFile(
    repo="example-org/Tiny-Test-GGUF",
    filename="tiny-test-Q4_K_M.gguf",
    revision="0123456789abcdef0123456789abcdef01234567",
    size=len(CONTENT),
    sha256=hashlib.sha256(CONTENT).hexdigest(),
    quant="Q4_K_M",
)
PATH = f"/{FILE.repo}/resolve/{FILE.revision}/{FILE.filename}"


@pytest.fixture(autouse=True)
def endpoint(monkeypatch: pytest.MonkeyPatch) -> str:
    """HF_ENDPOINT where nothing listens: a request that bypassed the transport is refused."""
    url = closed_port_url()
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setattr(hub_module, "_RETRY_DELAYS", (0.0, 0.0, 0.0))
    return url


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "store" / "tiny-test@Q4_K_M" / "model.gguf"


class Body(httpx.SyncByteStream):
    """A streamed body (a ``content=`` body is read at once, and download() reads the raw
    stream); with ``dropped`` it then fails as a dropped connection would."""

    def __init__(self, body: bytes, *, dropped: bool = False) -> None:
        self.body = body
        self.dropped = dropped

    def __iter__(self) -> Iterator[bytes]:
        yield self.body
        if self.dropped:
            raise httpx.RemoteProtocolError("peer closed connection without sending complete body")


def test_a_dropped_transfer_resumes_with_a_range_request(dest: Path) -> None:
    cut = 100_000
    ranges: list[str | None] = []

    def serve(request: httpx.Request) -> httpx.Response:
        assert request.url.path == PATH
        ranges.append(request.headers.get("Range"))
        if len(ranges) == 1:
            return httpx.Response(200, stream=Body(CONTENT[:cut], dropped=True))
        start = int(request.headers["Range"].removeprefix("bytes=").removesuffix("-"))
        return httpx.Response(206, stream=Body(CONTENT[start:]))

    events: list[tuple[int, int]] = []
    digest = download(
        FILE,
        dest,
        lambda done, total: events.append((done, total)),
        transport=httpx.MockTransport(serve),
    )

    assert digest == FILE.sha256
    assert dest.read_bytes() == CONTENT
    assert not partial_path(dest).exists()
    assert ranges == [None, f"bytes={cut}-"]  # retried at once, from where it broke
    assert events[-1] == (len(CONTENT), len(CONTENT))


@pytest.mark.parametrize(
    ("status", "code", "error", "match"),
    [
        (403, "", DownloadError, r"access to .*tiny-test-Q4_K_M\.gguf denied \(403\).*HF_TOKEN"),
        (404, "RepoNotFound", ModelNotFound, r"repository example-org/Tiny-Test-GGUF not found"),
        (404, "RevisionNotFound", ModelNotFound, r"revision 0123456789abcdef\S* of .* not found"),
        (404, "EntryNotFound", DownloadError, r"tiny-test-Q4_K_M\.gguf not found at revision"),
        (503, "", DownloadError, r"failed after 0 of 300000 bytes: the Hub answered 503.*resume"),
    ],
)
def test_http_errors_are_translated(
    dest: Path, status: int, code: str, error: type[Exception], match: str
) -> None:
    requests: list[str] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        requests.append(request.url.path)
        return httpx.Response(status, headers={"X-Error-Code": code} if code else {})

    with pytest.raises(error, match=match):
        download(FILE, dest, transport=httpx.MockTransport(refuse))
    assert requests == [PATH] * (4 if status == 503 else 1)  # only a 5xx is retried
    assert not dest.exists() and not partial_path(dest).exists()
