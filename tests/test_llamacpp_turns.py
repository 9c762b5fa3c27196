"""Generations taking turns on one real loaded model (Gemma 3 270M): first come first served,
queued chunks while waiting, cancel and close while waiting, and a stream nobody reads losing
its turn to a waiting request after ``stall_seconds``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from providers import Cancelled, Chunk, Config, GenerationError, GenerationOptions, ModelSpec
from providers.llamacpp import LlamaCppBackend

pytestmark = pytest.mark.model

GEMMA = ModelSpec.parse("gemma")
SHORT = GenerationOptions(max_tokens=8, temperature=0.0)
BOUND = 120.0
"""Seconds any step may take: generous, the two cores here are shared with other work."""


def make_backend(models: Path, gemma_path: Path, **options: Any) -> LlamaCppBackend:
    settings = {"model_directory": str(models), "n_ctx": 512, "n_threads": 1, **options}
    backend = LlamaCppBackend(Config.from_dict({"providers": {"llamacpp": {"options": settings}}}))
    backend.import_model(gemma_path, "gemma", link=True)
    return backend


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("turns-models")


@pytest.fixture(scope="module")
def backend(store_dir: Path, gemma_path: Path) -> Iterator[LlamaCppBackend]:
    backend = make_backend(store_dir, gemma_path, stall_seconds=600)
    try:
        yield backend
    finally:
        backend.close()


@pytest.fixture
def quick_stall(store_dir: Path, gemma_path: Path) -> Iterator[LlamaCppBackend]:
    """A backend whose streams lose their turn after 1 s unread while others wait."""
    backend = make_backend(store_dir, gemma_path, stall_seconds=1.0)
    try:
        yield backend
    finally:
        backend.close()


def stream(backend: LlamaCppBackend, prompt: str = "Hello", **kw: Any) -> Generator[Chunk]:
    chunks = backend.complete(GEMMA, prompt, SHORT, **kw)
    assert isinstance(chunks, Generator)
    return chunks


def first_text(chunks: Iterator[Chunk]) -> Chunk:
    for chunk in chunks:
        if chunk.text:
            return chunk
    raise AssertionError("the stream ended without text")


def until(condition: Callable[[], bool], seconds: float = BOUND) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not true after {seconds} s"
        time.sleep(0.02)


class Reader(threading.Thread):
    """Reads a whole stream on its own thread, noting every chunk as it comes."""

    def __init__(self, chunks: Iterator[Chunk], events: list[tuple[str, Chunk]], name: str):
        super().__init__(daemon=True)
        self.chunks, self.events, self.label = chunks, events, name
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for chunk in self.chunks:
                self.events.append((self.label, chunk))
        except BaseException as exc:
            self.error = exc

    def seen(self) -> list[Chunk]:
        return [chunk for label, chunk in list(self.events) if label == self.label]

    def queued(self) -> list[int]:
        return [c.queued for c in self.seen() if c.queued is not None]

    def finish(self) -> None:
        self.join(BOUND)
        assert not self.is_alive(), f"{self.label} still running after {BOUND} s"


def test_waiters_are_told_their_place_and_served_in_order(backend: LlamaCppBackend) -> None:
    holder = stream(backend, "Once upon a time")
    first_text(holder)  # holds the model, its reader is here
    events: list[tuple[str, Chunk]] = []
    second = Reader(stream(backend, "The sky is"), events, "second")
    second.start()
    until(lambda: second.queued() == [1])
    third = Reader(stream(backend, "One, two,"), events, "third")
    third.start()
    until(lambda: bool(third.queued()))
    assert third.queued()[0] == 2
    time.sleep(0.6)  # both keep reporting while they wait
    assert len(second.queued()) >= 2 and set(second.queued()) == {1}

    assert list(holder)[-1].done
    second.finish()
    third.finish()
    assert second.error is None and third.error is None
    texts = [label for label, chunk in events if chunk.text]
    assert texts.index("second") < texts.index("third")
    assert texts[-1] == "third" and texts.count("second") == len(texts[: texts.index("third")])
    assert 1 in third.queued()[1:]  # moved up when the holder finished
    metrics = second.seen()[-1].metrics
    assert metrics is not None and metrics.queue_seconds > 0.5
    assert metrics.time_to_first_token is not None
    assert metrics.time_to_first_token > metrics.queue_seconds
    assert metrics.total_seconds > metrics.queue_seconds


def test_a_waiting_stream_stops_when_cancelled(backend: LlamaCppBackend) -> None:
    holder = stream(backend)
    first_text(holder)
    cancel = threading.Event()
    events: list[tuple[str, Chunk]] = []
    waiter = Reader(stream(backend, cancel=cancel), events, "waiter")
    waiter.start()
    until(lambda: bool(waiter.queued()))
    cancel.set()
    waiter.finish()
    assert isinstance(waiter.error, Cancelled)
    assert not [c for c in waiter.seen() if c.text]
    list(holder)
    assert not [c for c in stream(backend) if c.queued is not None]  # it left the line


def test_a_waiting_stream_leaves_the_line_when_closed(backend: LlamaCppBackend) -> None:
    holder = stream(backend)
    first_text(holder)
    waiter = stream(backend)
    assert next(waiter).queued == 1
    waiter.close()
    list(holder)
    assert not [c for c in stream(backend) if c.queued is not None]


def test_an_unread_stream_loses_its_turn_to_a_waiter(quick_stall: LlamaCppBackend) -> None:
    abandoned = stream(quick_stall, "Once upon a time")
    first_text(abandoned)  # then nobody reads it
    started = time.monotonic()
    events: list[tuple[str, Chunk]] = []
    waiter = Reader(stream(quick_stall, "The sky is"), events, "waiter")
    waiter.start()
    waiter.finish()
    assert waiter.error is None
    assert waiter.queued() and waiter.seen()[-1].done
    assert time.monotonic() - started > 0.5
    metrics = waiter.seen()[-1].metrics  # waited ~1 s from the holder's last read
    assert metrics is not None and metrics.queue_seconds > 0.5

    with pytest.raises(GenerationError) as caught:
        next(abandoned)
    assert str(caught.value) == (
        "gemma: this generation was not read for 1 s while another request waited for the"
        " model, so it was stopped after 1 piece"
    )
    abandoned.close()


def test_a_preempted_stream_closes_quietly_and_frees_no_one_elses_turn(
    quick_stall: LlamaCppBackend,
) -> None:
    abandoned = stream(quick_stall, "Once upon a time")
    first_text(abandoned)
    taker = stream(quick_stall, "The sky is")
    assert next(taker).queued == 1
    first_text(taker)  # waited until the abandoned one had been unread for 1 s, then ran
    abandoned.close()  # its exit must not end the taker's turn
    late = stream(quick_stall)
    assert next(late).queued == 1
    late.close()
    assert list(taker)[-1].done


def test_an_unread_stream_keeps_its_turn_when_nobody_waits(
    quick_stall: LlamaCppBackend,
) -> None:
    alone = stream(quick_stall)
    first_text(alone)
    time.sleep(2.5)
    rest = list(alone)
    assert rest[-1].done and rest[-1].metrics is not None
    assert rest[-1].metrics.stop_reason in ("length", "stop", "repetition")
