"""StreamPublisher on a real ipykernel IOPub thread: the first piece goes at once, later pieces
are joined and sent within the interval (or at flush), nothing is lost or reordered, and an
interval of 0 sends a message per piece."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import zmq
from ipykernel.iostream import IOPubThread

from llmspell_kernel.streaming import StreamPublisher


class Sent:
    """What the publisher sent, and when (its ``send`` runs on the IOPub thread)."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.at: list[float] = []
        self.threads: set[str] = set()
        self.changed = threading.Condition()

    def __call__(self, content: dict[str, Any]) -> None:
        with self.changed:
            self.messages.append(content)
            self.at.append(time.monotonic())
            self.threads.add(threading.current_thread().name)
            self.changed.notify_all()

    def wait_for(self, count: int, timeout: float = 10.0) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.messages) >= count, timeout), (
                f"{len(self.messages)} of {count} messages sent: {self.messages}"
            )

    def text(self) -> str:
        return "".join(m["text"] for m in self.messages)


@pytest.fixture
def iopub() -> Iterator[IOPubThread]:
    context = zmq.Context()
    socket = context.socket(zmq.PUB)
    socket.bind("tcp://127.0.0.1:*")
    thread = IOPubThread(socket)
    thread.start()
    try:
        yield thread
    finally:
        # Let the thread's loop finish its cleanup task before stopping it, or asyncio prints
        # "Task was destroyed but it is pending!" when the task is collected.
        done = threading.Event()
        task = thread._event_pipe_gc_task

        def cancel_then_mark() -> None:
            if task is not None:
                task.cancel()
            thread.io_loop.add_callback(lambda: thread.io_loop.add_callback(done.set))

        thread.io_loop.add_callback(cancel_then_mark)
        done.wait(5)
        thread.stop()
        thread.close()
        context.term()


def pieces(n: int) -> list[dict[str, Any]]:
    return [{"model": "m", "text": f"<{i}>"} for i in range(n)]


def test_first_piece_goes_at_once_and_the_rest_is_joined(iopub: IOPubThread) -> None:
    sent = Sent()
    stream = StreamPublisher(iopub, sent, interval=30.0)  # longer than the test: only flush sends
    began = time.monotonic()
    for content in pieces(200):
        stream.publish(content)
    sent.wait_for(1)
    # Sent at once, with whatever came before the IOPub thread got to it.
    assert sent.messages[0]["text"].startswith("<0>")
    assert sent.at[0] - began < 10  # a bound that only catches a hang
    stream.flush()
    time.sleep(0.2)
    assert len(sent.messages) <= 2, sent.messages
    assert sent.text() == "".join(c["text"] for c in pieces(200))
    assert all(m["model"] == "m" for m in sent.messages)
    assert sent.threads == {"IOPub"}


def test_held_text_is_sent_after_the_interval_without_more_pieces(iopub: IOPubThread) -> None:
    sent = Sent()
    interval = 0.3
    stream = StreamPublisher(iopub, sent, interval=interval)
    first, *rest = pieces(3)
    stream.publish(first)
    sent.wait_for(1)
    for content in rest:
        stream.publish(content)
    sent.wait_for(2)
    assert [m["text"] for m in sent.messages] == ["<0>", "<1><2>"]
    assert sent.at[1] - sent.at[0] >= interval * 0.9  # never sooner than the interval


def test_messages_are_spaced_by_the_interval_and_keep_order(iopub: IOPubThread) -> None:
    sent = Sent()
    interval = 0.05
    stream = StreamPublisher(iopub, sent, interval=interval)
    expected = pieces(60)
    for content in expected:
        stream.publish(content)
        time.sleep(0.005)
    stream.flush()
    sent.wait_for(1)
    time.sleep(0.3)
    assert sent.text() == "".join(c["text"] for c in expected)
    gaps = [b - a for a, b in zip(sent.at, sent.at[1:-1], strict=False)]
    assert all(gap >= interval * 0.9 for gap in gaps), gaps
    assert 1 < len(sent.messages) < len(expected)


def test_interval_zero_sends_every_piece(iopub: IOPubThread) -> None:
    sent = Sent()
    stream = StreamPublisher(iopub, sent, interval=0)
    expected = pieces(50)
    for content in expected:
        stream.publish(content)
    sent.wait_for(50)
    assert sent.messages == expected


def test_flush_with_nothing_held_sends_nothing(iopub: IOPubThread) -> None:
    sent = Sent()
    stream = StreamPublisher(iopub, sent, interval=0.05)
    stream.flush()
    stream.publish({"model": "m", "text": "a"})
    sent.wait_for(1)
    stream.flush()
    time.sleep(0.2)
    assert sent.messages == [{"model": "m", "text": "a"}]
