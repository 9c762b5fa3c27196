"""providers.llamacpp.hub.download against the Hub stand-in: progress, resume, verification."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest

from providers.errors import Cancelled, ChecksumMismatch, DownloadError
from providers.llamacpp.hub import HubFile, download, partial_path, resolve
from tests import hub_fixtures
from tests.hub_fixtures import SMALL_REPO, fake_gguf
from tests.hub_standin import HubStandin

hub = hub_fixtures.hub
dead_endpoint = hub_fixtures.dead_endpoint

CONTENT = fake_gguf("Q4_K_M")
SHA = hashlib.sha256(CONTENT).hexdigest()
FILENAME = "tiny-test-Q4_K_M.gguf"


@pytest.fixture
def file(hub: HubStandin) -> HubFile:
    return resolve(SMALL_REPO, "Q4_K_M")


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "store" / "tiny-test:Q4_K_M" / "model.gguf"


def leftovers(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.parent.iterdir() if p.name != dest.name)


def test_download_reports_growing_progress_and_verifies(
    hub: HubStandin, file: HubFile, dest: Path
) -> None:
    events: list[tuple[int, int]] = []

    digest = download(file, dest, lambda done, total: events.append((done, total)))

    assert digest == SHA
    assert dest.read_bytes() == CONTENT
    assert leftovers(dest) == []  # no partial, metadata or lock file left behind
    assert len(events) >= 3
    assert all(total == len(CONTENT) for _, total in events)
    done = [d for d, _ in events]
    assert done == sorted(done) and len(set(done)) == len(done)
    assert done[-1] == len(CONTENT)
    assert [r.range for r in hub.downloads(FILENAME)] == [None]


def test_dropped_connection_keeps_the_partial_and_the_next_call_resumes(
    hub: HubStandin, file: HubFile, dest: Path
) -> None:
    cut = 100_000
    hub.faults.drop_at = cut  # every response covering this offset is cut there

    with pytest.raises(DownloadError, match="pull again to resume") as caught:
        download(file, dest)
    assert not isinstance(caught.value, ChecksumMismatch)
    assert not dest.exists()
    assert partial_path(dest).read_bytes() == CONTENT[:cut]

    hub.faults.reset()
    events: list[tuple[int, int]] = []
    assert download(file, dest, lambda done, total: events.append((done, total))) == SHA

    assert dest.read_bytes() == CONTENT
    assert leftovers(dest) == []
    last = hub.downloads(FILENAME)[-1]
    assert (last.range, last.status) == (f"bytes={cut}-", 206)
    assert events[0] == (cut, len(CONTENT))  # progress starts from what was already there


def test_a_single_drop_is_retried_within_the_call(
    hub: HubStandin, file: HubFile, dest: Path
) -> None:
    hub.faults.drop_at, hub.faults.drop_times = 150_000, 1

    assert download(file, dest) == SHA

    assert [(r.range, r.status) for r in hub.downloads(FILENAME)] == [
        (None, 200),
        ("bytes=150000-", 206),
    ]


def test_corrupted_bytes_raise_checksum_mismatch_and_leave_nothing(
    hub: HubStandin, file: HubFile, dest: Path
) -> None:
    hub.faults.corrupt = True

    with pytest.raises(ChecksumMismatch, match="sha256"):
        download(file, dest)

    assert not dest.exists()
    assert leftovers(dest) == []  # the corrupt partial is deleted, not resumed next time

    hub.faults.reset()
    assert download(file, dest) == SHA
    assert hub.downloads(FILENAME)[-1].range is None


def test_wrong_announced_size_is_a_checksum_mismatch(
    hub: HubStandin, file: HubFile, dest: Path
) -> None:
    lying = HubFile(file.repo, file.filename, file.revision, file.size - 10, None, file.quant)
    with pytest.raises(ChecksumMismatch, match="more than"):
        download(lying, dest)
    assert not dest.exists() and leftovers(dest) == []


def test_cancel_keeps_the_partial_for_a_later_resume(
    hub: HubStandin, file: HubFile, dest: Path
) -> None:
    cancel = threading.Event()

    def progress(done: int, total: int) -> None:
        if done > 0:
            cancel.set()

    with pytest.raises(Cancelled):
        download(file, dest, progress, cancel)
    assert not dest.exists()
    kept = partial_path(dest).stat().st_size
    assert 0 < kept < len(CONTENT)

    assert download(file, dest) == SHA
    assert hub.downloads(FILENAME)[-1].range == f"bytes={kept}-"


def test_cancel_interrupts_a_stalled_transfer(hub: HubStandin, file: HubFile, dest: Path) -> None:
    hub.faults.delay = 600.0  # one chunk, then the server stalls
    cancel = threading.Event()
    arrived = threading.Event()

    def progress(done: int, total: int) -> None:
        if done:
            arrived.set()

    outcome: list[BaseException] = []

    def run() -> None:
        try:
            download(file, dest, progress, cancel)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    assert arrived.wait(10)
    cancel.set()
    thread.join(20)  # a generous bound: only a hang would reach it
    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], Cancelled)
    assert 0 < partial_path(dest).stat().st_size < len(CONTENT)


def test_cancel_before_start(hub: HubStandin, file: HubFile, dest: Path) -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        download(file, dest, None, cancel)
    assert hub.downloads() == []


def test_partial_of_another_file_version_is_not_resumed(
    hub: HubStandin, file: HubFile, dest: Path
) -> None:
    dest.parent.mkdir(parents=True)
    partial = partial_path(dest)
    partial.write_bytes(b"old bytes of an older upload")
    meta = {"repo": file.repo, "filename": file.filename, "size": 5, "sha256": "0" * 64}
    partial.with_name(partial.name + ".json").write_text(json.dumps(meta))

    assert download(file, dest) == SHA
    assert hub.downloads(FILENAME)[-1].range is None


def test_partial_that_is_already_complete_is_verified_without_a_transfer(
    hub: HubStandin, file: HubFile, dest: Path
) -> None:
    hub.faults.drop_at = len(CONTENT) - 1
    with pytest.raises(DownloadError):
        download(file, dest)
    # Complete the partial by hand: the next call only has to verify and rename it.
    with open(partial_path(dest), "ab") as handle:
        handle.write(CONTENT[-1:])
    before = len(hub.downloads(FILENAME))

    assert download(file, dest) == SHA
    assert len(hub.downloads(FILENAME)) == before


def test_server_errors_are_retried_then_reported(
    hub: HubStandin, file: HubFile, dest: Path
) -> None:
    hub.faults.status, hub.faults.status_times = 500, 1
    assert download(file, dest) == SHA

    dest.unlink()
    hub.faults.status, hub.faults.status_times = 503, None
    with pytest.raises(DownloadError, match="503"):
        download(file, dest)
    assert not dest.exists()


def test_missing_file_is_a_download_error(hub: HubStandin, file: HubFile, dest: Path) -> None:
    gone = HubFile(file.repo, "gone-Q4_K_M.gguf", file.revision, 10, None, "Q4_K_M")
    with pytest.raises(DownloadError, match=r"gone-Q4_K_M\.gguf not found"):
        download(gone, dest)


def test_unreachable_hub_during_download(file: HubFile, dest: Path, dead_endpoint: str) -> None:
    with pytest.raises(
        DownloadError, match=r"cannot reach the Hugging Face Hub at .*\(offline\?\)"
    ):
        download(file, dest)
    assert not dest.exists()


def test_offline_mode_refuses_to_download(
    hub: HubStandin, file: HubFile, dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError, match="HF_HUB_OFFLINE"):
        download(file, dest)
    assert hub.downloads() == []


def test_a_second_download_of_the_same_file_is_refused_while_one_runs(
    hub: HubStandin, file: HubFile, dest: Path
) -> None:
    hub.faults.delay = 0.05
    started = threading.Event()
    outcome: list[object] = []

    def progress(done: int, total: int) -> None:
        if done:
            started.set()

    def first() -> None:
        try:
            outcome.append(download(file, dest, progress))
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert started.wait(10)
        with pytest.raises(DownloadError, match="already being downloaded"):
            download(file, dest)
    finally:
        thread.join(20)
    assert outcome == [SHA]
