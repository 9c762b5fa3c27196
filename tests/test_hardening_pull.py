"""Pull faults, counted: connections dropped at many offsets, HTTP 500s, wrong sha256, a full
disk, interrupts and forced re-pulls. After every fault: a clear error, no corrupt or partial
model in ``list``, nothing in the store but installed models and a resumable partial, and the
next pull completes with the right sha256. Each test counts what it tried and asserts that
nothing was lost (figures: ``tests.hardening_faults_fixtures.Ledger``).

A small real GGUF (``tiny_gguf``) is served where the real model is not needed; the real
253 MB Gemma goes through a dropped connection, a resume and a failed forced pull, through
the kernel.
"""

from __future__ import annotations

import hashlib
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from llmspell_kernel.client import LLMSpellClient
from providers.config import Config
from providers.errors import Cancelled, ChecksumMismatch, DownloadError, ModelNotFound
from providers.llamacpp import LlamaCppBackend
from providers.llamacpp.hub import partial_path
from providers.spec import ModelSpec
from providers.types import Progress, Removed
from tests import hub_fixtures
from tests.hardening_faults_fixtures import (
    Ledger,
    partials,
    store_problems,
    tiny_filesystem,
    tiny_gguf,
)
from tests.hub_standin import HubStandin, file_sha256

hub = hub_fixtures.hub

REPO = "hardening/Tiny-GGUF"
FILE = "tiny-Q4_K_M.gguf"
SPEC = f"hf:{REPO}:Q4_K_M"
MODEL_ID = SPEC
SLOW_REPO = "hardening/Slow-GGUF"
SLOW_SPEC = f"hf:{SLOW_REPO}:Q4_K_M"
GEMMA_REPO = "unsloth/gemma-3-270m-it-GGUF"
GEMMA_FILE = "gemma-3-270m-it-Q4_K_M.gguf"
GEMMA_ID = "gemma3-270m:Q4_K_M"
STOP_BOUND = 5.0
"""Seconds an interrupted pull may take to stop (generous: only catches a hang)."""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A small real GGUF, about 260 KB (four 64 KB chunks of the stand-in and a bit)."""
    return tiny_gguf(tmp_path_factory.mktemp("gguf") / FILE).read_bytes()


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A larger small GGUF, about 1 MB (16 chunks), for interrupts mid-transfer."""
    path = tmp_path_factory.mktemp("gguf") / "small-Q4_K_M.gguf"
    return tiny_gguf(path, seed=7, filler_floats=256 * 1024).read_bytes()


@pytest.fixture
def tiny_hub(hub: HubStandin, tiny: bytes, small: bytes) -> HubStandin:
    hub.add_repo(REPO, {FILE: tiny})
    hub.add_repo(SLOW_REPO, {"small-Q4_K_M.gguf": small})
    return hub


def make_backend(root: Path | None = None) -> LlamaCppBackend:
    if root is None:
        return LlamaCppBackend(Config())
    options = {"model_directory": str(root)}
    return LlamaCppBackend(Config.from_dict({"providers": {"llamacpp": {"options": options}}}))


@pytest.fixture
def backend() -> Iterator[LlamaCppBackend]:
    instance = make_backend()
    try:
        yield instance
    finally:
        instance.close()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def after_fault(backend: LlamaCppBackend, *, partial: int | None = None) -> list[str]:
    """What is wrong with the store after a failed pull (``partial``: the bytes a resumable
    partial must hold, None: there must be none)."""
    problems = [f"listed after the fault: {m.id}" for m in backend.list_models()]
    if backend.has_model(ModelSpec.parse(SPEC)):
        problems.append("has_model is true after the fault")
    problems += store_problems(backend.store.root)
    kept = sorted(partials(backend.store.root).values())
    expected = [] if not partial else [partial]
    if kept != expected:
        problems.append(f"partials {kept}, expected {expected}")
    return problems


def pull_completes(
    backend: LlamaCppBackend, spec: str, content: bytes, *, force: bool = False
) -> list[str]:
    """Pull ``spec``; what is wrong if it does not end up installed with ``content``'s sha256."""
    try:
        result = backend.pull(ModelSpec.parse(spec), force=force)
    except Exception as exc:
        return [f"the next pull failed: {type(exc).__name__}: {exc}"]
    problems = []
    installed = backend.store.get(result.model.id)
    if installed is None:
        return [f"{result.model.id} is not installed after the pull"]
    if installed.manifest.sha256 != sha(content):
        problems.append("the manifest's sha256 is not the file's")
    if file_sha256(installed.path) != sha(content):
        problems.append("the installed bytes are not the served file")
    problems += [f"after the pull: {p}" for p in store_problems(backend.store.root)]
    if partials(backend.store.root):
        problems.append(f"partials left after a complete pull: {partials(backend.store.root)}")
    return problems


def pull_fails(
    backend: LlamaCppBackend,
    error: type[Exception],
    says: str | tuple[str, ...] = (),
    progress: Callable[[Progress], None] | None = None,
) -> list[str]:
    """Pull ``SPEC`` expecting ``error``, whose message holds one of ``says``; what is wrong."""
    wanted = (says,) if isinstance(says, str) else says
    try:
        backend.pull(ModelSpec.parse(SPEC), progress)
    except error as exc:
        if wanted and not any(word in str(exc) for word in wanted):
            return [f"the {error.__name__} does not say {' or '.join(wanted)}: {exc}"]
        return []
    return [f"the pull succeeded, where {error.__name__} was expected"]


def remove_all(backend: LlamaCppBackend) -> None:
    for model in backend.list_models():
        backend.remove(ModelSpec.parse(model.id))


# Dropped connections ---------------------------------------------------------------------------


def test_connection_dropped_at_many_offsets(
    tiny_hub: HubStandin, backend: LlamaCppBackend, tiny: bytes
) -> None:
    size = len(tiny)
    offsets = sorted(
        {0, 1, 7, 4096, 65_535, 65_536, size // 3, size // 2, 2 * size // 3}
        | {size - 65_537, size - 2, size - 1}
    )
    assert len(offsets) == 12
    ledger = Ledger("pull_dropped_connection", extra={"file_bytes": size, "offsets": offsets})
    for offset in offsets:
        # Dropped at the same offset every time: the pull gives up, keeping what it got.
        tiny_hub.faults.reset()
        tiny_hub.faults.drop_at = offset
        problems = pull_fails(backend, DownloadError, "resume" if offset else ())
        problems += after_fault(backend, partial=offset)
        tiny_hub.faults.reset()
        began = time.perf_counter()
        problems += pull_completes(backend, SPEC, tiny)
        ledger.time("resumed_pull", time.perf_counter() - began)
        last = tiny_hub.downloads(FILE)[-1]
        if offset and last.range != f"bytes={offset}-":
            problems.append(f"the next pull did not resume at {offset}: {last.range}")
        ledger.case(f"cut at {offset} every time", problems)
        remove_all(backend)

        # Dropped once: the pull retries by itself, from where the bytes stopped.
        tiny_hub.faults.drop_at, tiny_hub.faults.drop_times = offset, 1
        ledger.case(f"cut once at {offset}", pull_completes(backend, SPEC, tiny))
        remove_all(backend)
    ledger.assert_nothing_lost()


# HTTP errors -----------------------------------------------------------------------------------


def test_http_500_on_get_head_and_the_file_listing(
    tiny_hub: HubStandin, backend: LlamaCppBackend, tiny: bytes
) -> None:
    ledger = Ledger("pull_http_errors")
    faults = tiny_hub.faults
    failing = {
        "GET 500 every time": lambda: setattr(faults, "status", 500),
        "GET 503 every time": lambda: setattr(faults, "status", 503),
        "file listing 500": lambda: setattr(faults, "api_status", 500),
        "file listing 502": lambda: setattr(faults, "api_status", 502),
    }
    for label, inject in failing.items():
        faults.reset()
        inject()
        began = time.perf_counter()
        problems = pull_fails(backend, DownloadError, ("500", "502", "503"))
        ledger.time("failed_pull", time.perf_counter() - began)
        problems += after_fault(backend)
        faults.reset()
        problems += pull_completes(backend, SPEC, tiny)
        ledger.case(label, problems)
        remove_all(backend)

    # Faults the pull gets through by itself: one 500 (retried), HEAD errors (not used).
    passing = {
        "GET 500 once": lambda: (
            setattr(faults, "status", 500),
            setattr(faults, "status_times", 1),
        ),
        "HEAD 500": lambda: setattr(faults, "head_status", 500),
    }
    for label, inject in passing.items():
        faults.reset()
        inject()
        ledger.case(label, pull_completes(backend, SPEC, tiny))
        remove_all(backend)
    ledger.assert_nothing_lost()


# Wrong bytes -----------------------------------------------------------------------------------


def test_wrong_sha256_never_installs_and_the_next_pull_completes(
    tiny_hub: HubStandin, backend: LlamaCppBackend, tiny: bytes
) -> None:
    ledger = Ledger("pull_wrong_sha256")
    for attempt in range(3):
        tiny_hub.faults.reset()
        tiny_hub.faults.corrupt = True
        problems = pull_fails(backend, ChecksumMismatch, "sha256")
        problems += after_fault(backend)  # the corrupt partial is deleted, never resumed
        tiny_hub.faults.reset()
        problems += pull_completes(backend, SPEC, tiny)
        ledger.case(f"corrupted byte in the middle, attempt {attempt + 1}", problems)
        remove_all(backend)

    # A kept partial corrupted on disk between two pulls: the resume fails its sha256 and
    # the partial goes; the pull after that starts over.
    tiny_hub.faults.drop_at = len(tiny) // 2
    with pytest.raises(DownloadError):
        backend.pull(ModelSpec.parse(SPEC))
    [kept] = partials(backend.store.root)
    path = backend.store.root / kept
    damaged = bytearray(path.read_bytes())
    damaged[100] ^= 0xFF
    path.write_bytes(bytes(damaged))
    tiny_hub.faults.reset()
    problems = pull_fails(backend, ChecksumMismatch)
    problems += after_fault(backend)
    problems += pull_completes(backend, SPEC, tiny)
    ledger.case("partial damaged on disk, then resumed", problems)
    ledger.assert_nothing_lost()


# Disk full -------------------------------------------------------------------------------------


def fill(directory: Path, leave: int) -> Path:
    """Write a file that leaves about ``leave`` bytes free on ``directory``'s filesystem."""
    filler = directory / "filler.bin"
    free = shutil.disk_usage(directory).free
    with open(filler, "wb") as handle:
        handle.write(b"\0" * max(0, free - leave))
    return filler


def test_disk_full(tiny_hub: HubStandin, tiny: bytes, tmp_path: Path) -> None:
    mount = tmp_path / "small-disk"
    with tiny_filesystem(mount, "1m") as mounted:
        if not mounted:
            pytest.skip("cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN)")
        ledger = Ledger("pull_disk_full", extra={"filesystem": "tmpfs 1 MiB"})
        root = mount / "models"
        backend = make_backend(root)
        try:
            # Not enough room before it starts: refused, nothing written.
            root.mkdir()
            filler = fill(mount, 64 * 1024)
            problems = pull_fails(backend, DownloadError, "disk space")
            problems += after_fault(backend)
            filler.unlink()
            problems += pull_completes(backend, SPEC, tiny)
            ledger.case("too little space before the pull", problems)
            remove_all(backend)

            # The disk fills up while the bytes arrive (ENOSPC from write): the bytes written
            # so far are kept, the pull after freeing space resumes them.
            filled: list[Path] = []

            def fill_midway(event: Progress) -> None:
                if not filled and event.phase == "downloading" and (event.completed or 0) > 0:
                    filled.append(fill(mount, 16 * 1024))

            tiny_hub.faults.delay = 0.01  # let the filler land between two chunks
            problems = pull_fails(backend, DownloadError, "No space left", fill_midway)
            kept = sorted(partials(root).values())
            if not kept or not 0 < kept[0] < len(tiny):
                problems.append(f"no resumable partial kept: {kept}")
            problems += after_fault(backend, partial=kept[0] if kept else None)
            for path in filled:
                path.unlink()
            tiny_hub.faults.reset()
            problems += pull_completes(backend, SPEC, tiny)
            resumed = tiny_hub.downloads(FILE)[-1].range
            if not kept or resumed != f"bytes={kept[0]}-":
                problems.append(f"the pull after freeing space did not resume: {resumed}")
            ledger.case("disk filled up during the download (ENOSPC)", problems)
            ledger.extra["enospc_partial_bytes"] = kept[0] if kept else None
        finally:
            backend.close()
        ledger.assert_nothing_lost()


# Interrupts ------------------------------------------------------------------------------------


def pull_in_thread(
    backend: LlamaCppBackend,
    spec: str,
    cancel: threading.Event,
    *,
    force: bool = False,
    beyond: int = 0,
) -> tuple[threading.Thread, list[Any], threading.Event]:
    """Start a pull; the returned event is set once more than ``beyond`` bytes are here."""
    outcome: list[Any] = []
    moving = threading.Event()

    def progress(event: Progress) -> None:
        if event.phase == "downloading" and (event.completed or 0) > beyond:
            moving.set()

    def run() -> None:
        try:
            outcome.append(
                backend.pull(ModelSpec.parse(spec), progress, cancel=cancel, force=force)
            )
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome, moving


def test_interrupted_pulls_keep_the_partial_and_resume(
    tiny_hub: HubStandin, backend: LlamaCppBackend, small: bytes
) -> None:
    ledger = Ledger("pull_interrupted", extra={"file_bytes": len(small)})
    tiny_hub.faults.delay = 0.05  # 64 KB per 50 ms: about a second for the file
    previous = 0
    for round_ in range(5):
        cancel = threading.Event()
        thread, outcome, moving = pull_in_thread(backend, SLOW_SPEC, cancel, beyond=previous)
        problems: list[str] = []
        try:
            if not moving.wait(20):
                problems.append("no bytes arrived")
            asked = time.perf_counter()
            cancel.set()
            thread.join(STOP_BOUND)
            ledger.time("stop_after_interrupt", time.perf_counter() - asked)
            if thread.is_alive():
                problems.append(f"still pulling {STOP_BOUND} s after the interrupt")
        finally:
            thread.join(60)
        if not (len(outcome) == 1 and isinstance(outcome[0], Cancelled)):
            problems.append(f"not Cancelled: {outcome}")
        kept = list(partials(backend.store.root).values())
        if not kept or not previous < kept[0] < len(small):
            problems.append(f"the partial did not grow from {previous}: {kept}")
        problems += [p for p in after_fault(backend, partial=kept[0] if kept else None)]
        previous = kept[0] if kept else previous
        ledger.case(f"interrupt {round_ + 1}", problems)

    tiny_hub.faults.reset()
    problems = pull_completes(backend, SLOW_SPEC, small)
    # The stand-in records a request when its handler ends, and the handler of the last
    # interrupted request may end after the final pull's: look for the final pull's range.
    ranges = [r.range for r in tiny_hub.downloads("small-Q4_K_M.gguf")]
    if f"bytes={previous}-" not in ranges:
        problems.append(f"the last pull did not resume at {previous}: {ranges}")
    ledger.case("pull after 5 interrupts", problems)
    ledger.assert_nothing_lost()


def test_interrupt_stops_a_stalled_download_at_once(
    tiny_hub: HubStandin, backend: LlamaCppBackend, small: bytes
) -> None:
    # The Hub sends one chunk, then nothing for a minute: only the cancel event (not a
    # progress callback, which no byte triggers) can stop the pull in time.
    ledger = Ledger("pull_interrupted_stalled")
    tiny_hub.faults.delay = 60.0
    for round_ in range(3):
        cancel = threading.Event()
        arrived = threading.Event()

        def progress(event: Progress, arrived: threading.Event = arrived) -> None:
            if event.phase == "downloading" and event.completed:
                arrived.set()

        outcome: list[Any] = []

        def run(cancel: threading.Event = cancel, outcome: list[Any] = outcome) -> None:
            try:
                backend.pull(ModelSpec.parse(SLOW_SPEC), progress, cancel=cancel)
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        problems: list[str] = []
        try:
            if not arrived.wait(20) and round_ == 0:
                problems.append("no bytes arrived")
            time.sleep(0.2)  # the transfer is now waiting on the stalled Hub
            asked = time.perf_counter()
            cancel.set()
            thread.join(STOP_BOUND)
            ledger.time("stop_after_interrupt", time.perf_counter() - asked)
            if thread.is_alive():
                problems.append(f"still pulling {STOP_BOUND} s after the interrupt")
        finally:
            thread.join(60)
        if not (len(outcome) == 1 and isinstance(outcome[0], Cancelled)):
            problems.append(f"not Cancelled: {outcome}")
        kept = list(partials(backend.store.root).values())
        problems += after_fault(backend, partial=kept[0] if kept else None)
        ledger.case(f"stalled transfer, interrupt {round_ + 1}", problems)
    tiny_hub.faults.reset()
    ledger.case("pull after the interrupts", pull_completes(backend, SLOW_SPEC, small))
    ledger.assert_nothing_lost()


# Forced re-pulls -------------------------------------------------------------------------------


def test_failed_forced_pulls_keep_the_installed_model(
    tiny_hub: HubStandin, backend: LlamaCppBackend, tiny: bytes, tmp_path: Path
) -> None:
    ledger = Ledger("pull_forced_faults")
    assert pull_completes(backend, SPEC, tiny) == []
    # The Hub now has another upload of the file.
    newer = tiny_gguf(tmp_path / FILE, seed=1).read_bytes()
    tiny_hub.add_repo(REPO, {FILE: newer})
    spec = ModelSpec.parse(SPEC)

    def still_the_old_one() -> list[str]:
        problems = []
        listed = [(m.id, m.size_bytes) for m in backend.list_models()]
        if listed != [(MODEL_ID, len(tiny))]:
            problems.append(f"the installed model is not listed as before: {listed}")
        installed = backend.store.get(MODEL_ID)
        if installed is None or file_sha256(installed.path) != sha(tiny):
            problems.append("the installed model's bytes changed")
        elif installed.manifest.sha256 != sha(tiny):
            problems.append("the manifest changed")
        try:
            if backend.info(spec).architecture != "llama":
                problems.append("info does not read the installed model")
        except Exception as exc:
            problems.append(f"info fails: {exc}")
        problems += store_problems(backend.store.root)
        return problems

    faults = tiny_hub.faults
    for label, inject, error in (
        ("corrupted", lambda: setattr(faults, "corrupt", True), ChecksumMismatch),
        (
            "dropped at the middle",
            lambda: setattr(faults, "drop_at", len(newer) // 2),
            DownloadError,
        ),
        ("HTTP 500", lambda: setattr(faults, "status", 500), DownloadError),
        ("file listing 500", lambda: setattr(faults, "api_status", 500), DownloadError),
    ):
        faults.reset()
        inject()
        problems = []
        try:
            backend.pull(spec, force=True)
            problems.append("the forced pull succeeded")
        except error:
            pass
        except Exception as exc:
            problems.append(f"unexpected {type(exc).__name__}: {exc}")
        problems += still_the_old_one()
        ledger.case(f"forced pull, {label}", problems)

    # Interrupted while the old model stays usable.
    faults.reset()
    faults.delay = 0.05
    cancel = threading.Event()
    thread, outcome, moving = pull_in_thread(backend, SPEC, cancel, force=True)
    try:
        moving.wait(20)
        cancel.set()
    finally:
        thread.join(60)
    problems = [] if outcome and isinstance(outcome[0], Cancelled) else [f"{outcome}"]
    ledger.case("forced pull, interrupted", problems + still_the_old_one())

    faults.reset()
    problems = pull_completes(backend, SPEC, newer, force=True)
    if [m.size_bytes for m in backend.list_models()] != [len(newer)]:
        problems.append("the new upload is not what is listed")
    ledger.case("forced pull after the faults", problems)
    ledger.assert_nothing_lost()


# Abandoned partials ----------------------------------------------------------------------------


def test_remove_deletes_an_abandoned_partial(
    tiny_hub: HubStandin, backend: LlamaCppBackend, tiny: bytes
) -> None:
    tiny_hub.faults.drop_at = 100_000
    with pytest.raises(DownloadError):
        backend.pull(ModelSpec.parse(SPEC))
    assert list(partials(backend.store.root).values()) == [100_000]
    assert backend.list_models() == []

    removed = backend.remove(ModelSpec.parse(SPEC))

    freed = removed.unfinished_bytes
    assert removed == Removed(MODEL_ID, unfinished_bytes=freed)
    assert isinstance(freed, int) and 100_000 <= freed < 101_000  # the partial and its record
    assert list(backend.store.root.iterdir()) == []
    with pytest.raises(ModelNotFound, match="not installed"):
        backend.remove(ModelSpec.parse(SPEC))
    with pytest.raises(ModelNotFound, match="not installed"):
        backend.remove(ModelSpec.parse("hf:nobody/Never-Pulled-GGUF"))
    tiny_hub.faults.reset()
    assert pull_completes(backend, SPEC, tiny) == []
    assert tiny_hub.downloads(FILE)[-1].range is None  # started over: nothing was left


# Through the kernel ----------------------------------------------------------------------------


@pytest.fixture
def client(tiny_hub: HubStandin) -> Iterator[LLMSpellClient]:
    with LLMSpellClient.embedded() as embedded:
        yield embedded


def wait_for(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def kernel_alive(client: LLMSpellClient) -> list[str]:
    try:
        client.model_request("status", timeout=10)
        client.model_request("list", timeout=10)
    except Exception as exc:
        return [f"the kernel does not answer: {exc}"]
    return []


def test_kernel_interrupt_and_ctrl_c_mid_pull(
    tiny_hub: HubStandin, client: LLMSpellClient, small: bytes
) -> None:
    ledger = Ledger("pull_kernel_interrupts")
    root = Config().model_directory()
    store = make_backend(root)
    tiny_hub.faults.delay = 60.0  # one chunk, then a stalled Hub
    previous = 0
    for round_ in range(3):
        outcome: list[Any] = []

        def run(outcome: list[Any] = outcome) -> None:
            try:
                outcome.append(client.model_request("pull", model=SLOW_SPEC, timeout=60))
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        problems: list[str] = []
        try:
            # The kernel throttles progress messages: watch the partial file grow instead.
            if not wait_for(
                lambda seen=previous: max(partials(root).values(), default=0) > seen, 20
            ):
                problems.append("no bytes arrived")
            previous = max(partials(root).values(), default=0)
            time.sleep(0.2)
            asked = time.perf_counter()
            client.interrupt()
            thread.join(STOP_BOUND)
            ledger.time("reply_after_interrupt", time.perf_counter() - asked)
            if thread.is_alive():
                problems.append(f"no reply {STOP_BOUND} s after the interrupt")
        finally:
            thread.join(60)
        if not (len(outcome) == 1 and isinstance(outcome[0], Cancelled)):
            problems.append(f"not a Cancelled reply: {outcome}")
        listed = client.model_request("list", backend="llamacpp")["models"]
        if listed:
            problems.append(f"listed after the interrupt: {listed}")
        problems += store_problems(root)
        if len(partials(root)) != 1:
            problems.append(f"no resumable partial: {partials(root)}")
        ledger.case(f"interrupt_request, stalled pull {round_ + 1}", problems)

    # Ctrl-C in the client (KeyboardInterrupt while it waits): it interrupts, then re-raises.
    tiny_hub.faults.delay = 0.1  # 1.6 s for the file: time for a few progress messages
    count = [0]

    def ctrl_c(event: dict[str, Any]) -> None:
        if event["phase"] == "downloading":
            count[0] += 1
            if count[0] == 3:
                raise KeyboardInterrupt

    problems = []
    asked = time.perf_counter()
    try:
        client.model_request("pull", model=SLOW_SPEC, on_progress=ctrl_c, timeout=60)
        problems.append("the pull was not interrupted")
    except KeyboardInterrupt:
        pass
    ledger.time("ctrl_c_return", time.perf_counter() - asked)
    problems += kernel_alive(client)
    problems += store_problems(root)
    if client.model_request("list", backend="llamacpp")["models"]:
        problems.append("a model is listed after Ctrl-C")
    ledger.case("Ctrl-C in the client mid-pull", problems)

    tiny_hub.faults.reset()
    problems = []
    before = len(tiny_hub.downloads("small-Q4_K_M.gguf"))
    reply = client.model_request("pull", model=SLOW_SPEC, timeout=60)
    installed = store.store.get(reply["model"]["id"])
    if installed is None or file_sha256(installed.path) != sha(small):
        problems.append("the pull after the interrupts did not install the right bytes")
    # (an interrupted request is recorded when its handler ends, maybe after this one's)
    if all(r.range is None for r in tiny_hub.downloads("small-Q4_K_M.gguf")[before:]):
        problems.append("the pull after the interrupts started over")
    problems += store_problems(root)
    ledger.case("kernel pull after the interrupts", problems)
    store.close()
    ledger.assert_nothing_lost()


def test_kernel_remove_of_an_abandoned_partial_says_so(
    tiny_hub: HubStandin, client: LLMSpellClient
) -> None:
    tiny_hub.faults.drop_at = 50_000
    with pytest.raises(DownloadError, match="resume"):
        client.model_request("pull", model=SPEC, timeout=60)

    reply = client.model_request("remove", model=SPEC, timeout=10)

    assert reply["removed"] == MODEL_ID
    assert 50_000 <= reply["unfinished_download_bytes"] < 51_000
    assert store_problems(Config().model_directory()) == []
    assert partials(Config().model_directory()) == {}


@pytest.mark.model
def test_real_gemma_dropped_resumed_and_failed_force(
    hub: HubStandin, gemma_path: Path, client: LLMSpellClient
) -> None:
    ledger = Ledger("pull_real_gemma", extra={"file_bytes": gemma_path.stat().st_size})
    hub.add_repo(GEMMA_REPO, {GEMMA_FILE: gemma_path})
    root = Config().model_directory()
    expected = file_sha256(gemma_path)
    cut = 120_000_000

    hub.faults.drop_at = cut
    problems: list[str] = []
    try:
        client.model_request("pull", model="gemma3-270m@llamacpp", timeout=120)
        problems.append("the pull succeeded although the transfer was cut")
    except DownloadError:
        pass
    if client.model_request("list", backend="llamacpp")["models"]:
        problems.append("a model is listed after the cut")
    problems += store_problems(root)
    if list(partials(root).values()) != [cut]:
        problems.append(f"partial {partials(root)}, expected {cut} bytes")
    hub.faults.reset()
    began = time.perf_counter()
    reply = client.model_request("pull", model="gemma3-270m@llamacpp", timeout=120)
    ledger.time("resumed_pull", time.perf_counter() - began)
    if hub.downloads(GEMMA_FILE)[-1].range != f"bytes={cut}-":
        problems.append("the second pull did not resume")
    path = Path(reply["model"]["details"]["path"])
    if file_sha256(path) != expected:
        problems.append("the resumed model is not the served file")
    problems += store_problems(root)
    ledger.case(f"real model cut at {cut}, then resumed", problems)

    # A forced pull that fails (corrupted bytes) while the model is loaded and answering.
    client.model_request("load", model=GEMMA_ID, timeout=60)
    hub.faults.corrupt = True
    problems = []
    try:
        client.model_request("pull", model=GEMMA_ID + "@llamacpp", force=True, timeout=120)
        problems.append("a corrupted forced pull succeeded")
    except ChecksumMismatch:
        pass
    listed = client.model_request("list", backend="llamacpp")["models"]
    if [m["id"] for m in listed] != [GEMMA_ID]:
        problems.append(f"after the failed forced pull: {listed}")
    if file_sha256(path) != expected:
        problems.append("the installed model changed")
    answer = client.model_request(
        "generate",
        model=GEMMA_ID,
        prompt="The capital of France is",
        options={"max_tokens": 8, "temperature": 0},
        timeout=60,
    )
    if not answer["text"].strip():
        problems.append("the model no longer answers")
    problems += store_problems(root)
    ledger.case("real model, corrupted forced pull", problems)
    ledger.assert_nothing_lost()


def test_partial_path_is_beside_the_incoming_file(backend: LlamaCppBackend) -> None:
    # Guards the layout the fault checks rely on.
    incoming = backend.store.incoming_path(MODEL_ID, FILE)
    assert incoming.name == FILE + ".incoming"
    assert partial_path(incoming).name == FILE + ".incoming.partial"
    backend.store.tidy(MODEL_ID)
    assert store_problems(backend.store.root) == []


def test_cli_remove_of_an_abandoned_partial_says_so(
    tiny_hub: HubStandin, backend: LlamaCppBackend
) -> None:
    from tests.cli_fixtures import invoke

    tiny_hub.faults.drop_at = 30_000
    with pytest.raises(DownloadError):
        backend.pull(ModelSpec.parse(SPEC))

    result = invoke(["model", "remove", SPEC, "-y"])

    assert result.exit_code == 0, result.stderr
    assert f"removed the unfinished download of {MODEL_ID}" in result.stdout
    assert "not installed" in result.stdout
    assert partials(backend.store.root) == {}
    again = invoke(["model", "remove", SPEC, "-y"])
    assert again.exit_code == 1 and "not installed" in again.stderr
