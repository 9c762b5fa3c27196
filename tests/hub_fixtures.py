"""Fixtures for tests that download from the Hugging Face Hub stand-in (tests/hub_standin.py).

Import the fixtures you use into the test module (``from tests.hub_fixtures import hub``).
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterator

import pytest

from providers.llamacpp import hub as hub_module
from tests.hub_standin import HubStandin

SMALL_REPO = "example-org/Tiny-Test-GGUF"
"""A repository of small fake GGUF files (a few hundred KB), for hub.py unit tests."""
SMALL_QUANTS = ("Q4_K_M", "Q4_K_S", "Q8_0", "IQ4_XS", "F16")
SMALL_SIZE = 300_000


def fake_gguf(quant: str, size: int = SMALL_SIZE) -> bytes:
    """Deterministic GGUF-looking bytes (magic, version, then pseudo-random filler)."""
    out = bytearray(b"GGUF\x03\x00\x00\x00")
    seed = quant.encode()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(seed + counter.to_bytes(8, "little")).digest()
        counter += 1
    return bytes(out[:size])


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[HubStandin]:
    """A running Hub stand-in, with HF_ENDPOINT pointing at it and no pauses between retries.

    It holds ``SMALL_REPO``; tests add more repositories with ``hub.add_repo``.
    """
    standin = HubStandin()
    files = {f"tiny-test-{q}.gguf": fake_gguf(q) for q in SMALL_QUANTS}
    files["mmproj-tiny-test-F16.gguf"] = fake_gguf("mmproj", 10_000)
    standin.add_repo(SMALL_REPO, files)
    standin.add_repo(
        "example-org/Split-Test-GGUF",
        {
            "Q8_0/split-test-Q8_0-00001-of-00002.gguf": fake_gguf("s1", 1000),
            "Q8_0/split-test-Q8_0-00002-of-00002.gguf": fake_gguf("s2", 1000),
            "split-test-Q4_K_M.gguf": fake_gguf("s3", 1000),
        },
    )
    standin.start()
    try:
        monkeypatch.setenv("HF_ENDPOINT", standin.url)
        monkeypatch.setattr(hub_module, "_RETRY_DELAYS", (0.0, 0.0, 0.0))
        yield standin
    finally:
        standin.stop()


@pytest.fixture
def dead_endpoint(monkeypatch: pytest.MonkeyPatch) -> str:
    """HF_ENDPOINT set to a closed port on 127.0.0.1 (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setattr(hub_module, "_RETRY_DELAYS", (0.0, 0.0, 0.0))
    return url
