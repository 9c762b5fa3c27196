"""BackgroundSha256: the same digest as hashlib for any split of the bytes, and its thread
always ends (after hexdigest, after close, never started for small inputs)."""

from __future__ import annotations

import hashlib
import os
import threading

import pytest

from providers.llamacpp.digest import BATCH_BYTES, BackgroundSha256


def hashing_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "llmspell-sha256"]


@pytest.mark.parametrize(
    "sizes",
    [
        [],
        [0],
        [1],
        [100, 5, 0, 7],
        [BATCH_BYTES],
        [BATCH_BYTES - 1, 1, 1],
        [65536] * 100,
        [3 * BATCH_BYTES + 17, 65536, 1],
    ],
)
def test_digest_matches_hashlib(sizes: list[int]) -> None:
    blocks = [os.urandom(n) for n in sizes]
    digest = BackgroundSha256()
    for block in blocks:
        digest.update(block)
    expected = hashlib.sha256(b"".join(blocks)).hexdigest()
    assert digest.hexdigest() == expected
    assert digest.hexdigest() == expected  # asking again gives the same
    assert hashing_threads() == []


def test_more_than_the_pending_limit_does_not_deadlock() -> None:
    digest = BackgroundSha256()
    block = os.urandom(BATCH_BYTES)
    for _ in range(80):  # more batches than MAX_PENDING
        digest.update(block)
    assert digest.hexdigest() == hashlib.sha256(block * 80).hexdigest()


def test_close_ends_the_thread_and_forbids_more() -> None:
    digest = BackgroundSha256()
    digest.update(os.urandom(2 * BATCH_BYTES))
    assert hashing_threads()
    digest.close()
    digest.close()
    assert hashing_threads() == []
    with pytest.raises(ValueError, match="close"):
        digest.hexdigest()
    with pytest.raises(ValueError, match="close"):
        digest.update(b"x")


def test_close_after_hexdigest_keeps_the_digest() -> None:
    digest = BackgroundSha256()
    digest.update(b"abc")
    value = digest.hexdigest()
    digest.close()
    assert digest.hexdigest() == value == hashlib.sha256(b"abc").hexdigest()
