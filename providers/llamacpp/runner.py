"""The kernel's side of a model runner: :class:`Runner` starts the process a model lives in
(:mod:`.runner_process`), streams its generations, and turns its death into an error.

A runner that aborts, segfaults or is killed ends in a :class:`ModelLoadError` or
:class:`GenerationError` naming the model, how the process ended and llama.cpp's last words
("the llama.cpp runner for gemma3-270m crashed (killed by SIGABRT): GGML_ASSERT(...) failed");
the kernel lives on, and the model cache drops the dead runner (:attr:`Runner.alive`) so that
the next request starts a fresh one. A cancel reaches the runner at once; one that is inside
llama.cpp (a long prompt evaluation) and does not answer within :data:`CANCEL_GRACE` seconds
is stopped, and so is one whose load or template render takes longer than its bound.

A runner's messages are read by the stream waiting for them (:meth:`Runner._get`), which hands
what is about other generations to their queues; one thread per runner reads its stdout and
stderr into Python logging and keeps its last warnings.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Generator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import IO

from ..errors import Cancelled, GenerationError, LLMSpellError, ModelLoadError
from ..types import Chunk, GenerationOptions
from .conversations import StateCache
from .ids import BACKEND
from .runner_messages import (
    WINDOW,
    Cancel,
    ChatRequest,
    CompletionRequest,
    Credit,
    Embed,
    Embedded,
    Failed,
    Finished,
    FromRunner,
    Generate,
    Load,
    Loaded,
    Piece,
    Prompted,
    Stop,
    ToRunner,
    generation_id,
)

log = logging.getLogger(__name__)

CANCEL_GRACE = 2.0
"""Seconds a runner has to answer a cancel (it checks between two tokens) before it is
stopped; a stopped runner's model loads again on the next request."""
POLL_SECONDS = 0.1
"""How often a waiting stream looks at its cancel flag and its bounds."""
TAIL_LINES = 40
"""How many of a runner's warnings and errors are kept, for the message if it dies."""
_ABORT_WORDS = ("GGML_ASSERT", "error", "Error", "failed", "terminate", "abort", "Killed")


@dataclass(frozen=True)
class Bounds:
    load_seconds: float
    """The longest a model load may take."""
    render_seconds: float
    """The longest a prompt's template render and tokenization may take."""


class _Dead:
    """Put in every inbox when the runner's end of the socket closes."""


_DEAD = _Dead()


class Runner:
    """One model in its own process."""

    def __init__(self, load: Load, bounds: Bounds) -> None:
        self.model_id = load.model_id
        self.bounds = bounds
        self.n_ctx = load.n_ctx
        self.conversation_cache: dict[str, int] | None = None
        """The runner's conversation state cache as of its last generation (None: off)."""
        self._ids = itertools.count(1)
        self._inboxes: dict[int | None, queue.SimpleQueue[FromRunner | _Dead]] = {}
        self._inboxes_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._dead = False
        self._stopping = False
        self._tail: deque[str] = deque(maxlen=TAIL_LINES)
        if load.conversation_cache_bytes > 0:  # what the runner's empty cache describes
            self.conversation_cache = StateCache(load.conversation_cache_bytes).describe()
        ours, theirs = socket.socketpair()
        log_read, log_write = os.pipe()
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "providers.llamacpp.runner_process", str(theirs.fileno())],
                stdin=subprocess.DEVNULL,
                stdout=log_write,
                stderr=log_write,
                pass_fds=(theirs.fileno(),),
                env={**os.environ, "GGML_NO_BACKTRACE": "1", "PYTHONUNBUFFERED": "1"},
            )
        except OSError as exc:
            ours.close()
            os.close(log_read)
            raise ModelLoadError(
                f"cannot start a llama.cpp runner for {self.model_id}: {exc}",
                model=self.model_id,
                backend=BACKEND,
            ) from exc
        finally:
            theirs.close()
            os.close(log_write)
        self._connection = Connection(ours.detach())
        self.pid = self._process.pid
        self._logs = os.fdopen(log_read, "rb")
        self._log_thread = threading.Thread(
            target=self._read_logs, name=f"llmspell-runner-log-{self.pid}", daemon=True
        )
        self._log_thread.start()
        self._load(load)

    # State --------------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """False once the process has ended (crashed, killed or stopped)."""
        return not self._dead and self._process.poll() is None

    # Loading ------------------------------------------------------------------------------

    def _load(self, load: Load) -> None:
        inbox = self._open(None)
        try:
            self._send(load)
            deadline = time.monotonic() + self.bounds.load_seconds
            while True:
                try:
                    message = self._get(inbox, POLL_SECONDS)
                except queue.Empty:
                    if time.monotonic() > deadline:
                        self.kill()
                        raise ModelLoadError(
                            f"loading {self.model_id} took more than"
                            f" {self.bounds.load_seconds:g} s (providers.llamacpp.options"
                            ".load_timeout); its runner was stopped",
                            model=self.model_id,
                            backend=BACKEND,
                        ) from None
                    continue
                if isinstance(message, Loaded):
                    self.n_ctx = message.n_ctx
                    return
                if isinstance(message, Failed):
                    raise message.error
                raise self._crash(ModelLoadError, "while loading it")
        except BaseException:
            self.kill()
            raise
        finally:
            self._shut(None)

    # Generating ---------------------------------------------------------------------------

    def generate(
        self,
        request: ChatRequest | CompletionRequest,
        options: GenerationOptions,
        *,
        load_seconds: float,
        queue_seconds: float,
        cancel: threading.Event | None,
    ) -> Generator[Chunk, None, None]:
        """Stream one generation (the caller holds the model's turn); closing the stream
        cancels it in the runner."""
        gid = next(self._ids)
        inbox = self._open(gid)
        ended = False
        try:
            self._send(Generate(gid, request, options, load_seconds, queue_seconds))
            deadline: float | None = time.monotonic() + self.bounds.render_seconds
            taken = 0
            while True:
                if cancel is not None and cancel.is_set():
                    ended = True
                    raise self._cancel(gid, inbox)
                message = self._next(inbox, deadline)
                if message is None:
                    continue
                if isinstance(message, Prompted):
                    deadline = None
                elif isinstance(message, Piece):
                    yield message.chunk
                    taken += 1
                    if taken % (WINDOW // 2) == 0:
                        self._send(Credit(gid, WINDOW // 2))
                elif isinstance(message, Finished):
                    ended = True
                    self.conversation_cache = message.conversation_cache
                    yield message.chunk
                    return
                elif isinstance(message, Failed):
                    ended = True
                    raise message.error
        finally:
            if not ended:
                self._abandon(gid, inbox)
            self._shut(gid)

    # Embedding ----------------------------------------------------------------------------

    def embed(
        self,
        texts: tuple[str, ...],
        *,
        truncate: bool,
        normalize: bool,
        cancel: threading.Event | None,
    ) -> Embedded:
        """One vector per text, computed in the runner (the caller holds the model's turn);
        ``cancel`` stops it between two batches."""
        gid = next(self._ids)
        inbox = self._open(gid)
        ended = False
        try:
            self._send(Embed(gid, texts, truncate, normalize))
            while True:
                if cancel is not None and cancel.is_set():
                    ended = True
                    if self._settled(gid, inbox):
                        raise Cancelled(
                            f"embedding with {self.model_id} interrupted",
                            model=self.model_id,
                            backend=BACKEND,
                        )
                    raise Cancelled(
                        f"embedding with {self.model_id} interrupted (its runner did not stop"
                        f" within {CANCEL_GRACE:g} s, inside llama.cpp, and was stopped)",
                        model=self.model_id,
                        backend=BACKEND,
                    )
                message = self._next(inbox, None, "while embedding")
                if isinstance(message, Embedded):
                    ended = True
                    return message
                if isinstance(message, Failed):
                    ended = True
                    raise message.error
        finally:
            if not ended:
                self._abandon(gid, inbox)
            self._shut(gid)

    def _next(
        self,
        inbox: queue.SimpleQueue[FromRunner | _Dead],
        deadline: float | None,
        when: str = "while generating",
    ) -> FromRunner | None:
        """The runner's next message about a generation, or None after :data:`POLL_SECONDS`
        (the runner is stopped once ``deadline`` has passed)."""
        wait = POLL_SECONDS if deadline is None else min(POLL_SECONDS, deadline - time.monotonic())
        try:
            message = self._get(inbox, wait)
        except queue.Empty:
            if deadline is not None and time.monotonic() >= deadline:
                self.kill()
                raise GenerationError(
                    f"{self.model_id}: rendering the chat template and tokenizing the"
                    f" prompt took more than {self.bounds.render_seconds:g} s"
                    " (providers.llamacpp.options.render_timeout); its runner was stopped",
                    model=self.model_id,
                    backend=BACKEND,
                ) from None
            return None
        if isinstance(message, _Dead):
            raise self._crash(GenerationError, when)
        return message

    def _cancel(self, gid: int, inbox: queue.SimpleQueue[FromRunner | _Dead]) -> LLMSpellError:
        """Cancel generation ``gid``: the runner's answer, or a stopped runner."""
        if self._settled(gid, inbox):
            return Cancelled(
                f"generation with {self.model_id} interrupted", model=self.model_id, backend=BACKEND
            )
        return Cancelled(
            f"generation with {self.model_id} interrupted (its runner did not stop within"
            f" {CANCEL_GRACE:g} s, inside llama.cpp, and was stopped; the model loads again on"
            " the next request)",
            model=self.model_id,
            backend=BACKEND,
        )

    def _abandon(self, gid: int, inbox: queue.SimpleQueue[FromRunner | _Dead]) -> None:
        """A stream closed (or failed) before its end: the runner stops its generation, or
        is stopped."""
        if not self._dead:
            self._settled(gid, inbox)

    def _settled(self, gid: int, inbox: queue.SimpleQueue[FromRunner | _Dead]) -> bool:
        """Send a cancel and wait for the generation's end; False (and the runner killed)
        if it does not come within :data:`CANCEL_GRACE`."""
        try:
            self._send(Cancel(gid))
        except LLMSpellError:
            return False
        deadline = time.monotonic() + CANCEL_GRACE
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = self._get(inbox, left)
            except queue.Empty:
                break
            if isinstance(message, _Dead):
                return False
            if isinstance(message, Finished | Embedded | Failed):
                return True
        log.warning(
            "the runner of %s did not stop within %g s: killing it", self.model_id, CANCEL_GRACE
        )
        self.kill()
        return False

    # Ending -------------------------------------------------------------------------------

    def close(self) -> None:
        """End the runner: its model's memory returns to the system."""
        if self._stopping:
            return
        self._stopping = True
        if self.alive:
            try:
                self._send(Stop())
                self._process.wait(timeout=5)
            except (LLMSpellError, subprocess.TimeoutExpired):
                log.warning("the runner of %s did not stop: killing it", self.model_id)
        self.kill()

    def kill(self) -> None:
        self._stopping = True
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        # Not while another thread writes or reads it (a closed descriptor's number can be
        # reused at once); a reader polls for at most POLL_SECONDS.
        with self._send_lock, self._read_lock:
            self._connection.close()
            self._mark_dead()
        if self._log_thread is not threading.current_thread():
            self._log_thread.join(timeout=5)

    # Internals ----------------------------------------------------------------------------

    def _send(self, message: ToRunner) -> None:
        try:
            with self._send_lock:
                self._connection.send(message)
        except (OSError, ValueError) as exc:
            raise self._crash(
                GenerationError if not isinstance(message, Load) else ModelLoadError,
                "while the kernel wrote to it",
            ) from exc

    def _open(self, gid: int | None) -> queue.SimpleQueue[FromRunner | _Dead]:
        inbox: queue.SimpleQueue[FromRunner | _Dead] = queue.SimpleQueue()
        with self._inboxes_lock:
            if self._dead:
                inbox.put(_DEAD)
            self._inboxes[gid] = inbox
        return inbox

    def _shut(self, gid: int | None) -> None:
        with self._inboxes_lock:
            self._inboxes.pop(gid, None)

    def _get(
        self, inbox: queue.SimpleQueue[FromRunner | _Dead], timeout: float
    ) -> FromRunner | _Dead:
        """The next message in ``inbox`` within ``timeout`` seconds (else :class:`queue.Empty`).

        There is no reader thread (a thread woken for every token slows llama.cpp's threads
        on a machine whose cores they use): whoever waits reads the socket, under a lock, and
        puts what is for other generations in their inboxes."""
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            try:
                return inbox.get_nowait()
            except queue.Empty:
                pass
            left = deadline - time.monotonic()
            if left <= 0:
                raise queue.Empty
            if not self._read_lock.acquire(timeout=min(left, POLL_SECONDS)):
                continue
            try:
                try:
                    return inbox.get_nowait()  # put there while this thread waited
                except queue.Empty:
                    pass
                if self._dead:
                    return _DEAD
                try:
                    if not self._connection.poll(min(left, POLL_SECONDS)):
                        continue
                    message: FromRunner = self._connection.recv()
                except (EOFError, OSError, ValueError):
                    self._mark_dead()
                    return _DEAD
            finally:
                self._read_lock.release()
            with self._inboxes_lock:
                target = self._inboxes.get(generation_id(message))
            if target is inbox:
                return message
            if target is not None:
                target.put(message)
                time.sleep(0)  # let its reader take the lock

    def _mark_dead(self) -> None:
        with self._inboxes_lock:
            if not self._dead:
                self._dead = True
                for inbox in self._inboxes.values():
                    inbox.put(_DEAD)

    def _read_logs(self) -> None:
        stream: IO[bytes] = self._logs
        with stream:
            for raw in stream:
                line = raw.decode("utf-8", errors="replace").rstrip()
                if not line:
                    continue
                level, name, text = parse_log_line(line)
                if level >= logging.WARNING or any(word in text for word in _ABORT_WORDS):
                    self._tail.append(text)
                logging.getLogger(name).log(level, "%s", text)

    def _crash(self, kind: type[LLMSpellError], when: str) -> LLMSpellError:
        """The error for a runner whose process ended ``when``."""
        try:
            code = self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            code = self._process.wait()
        self._log_thread.join(timeout=2)
        if self._stopping and code in (0, -signal.SIGKILL):
            how = "was stopped"
        else:
            how = f"crashed ({_ending(code)})"
        words = last_words(list(self._tail))
        return kind(
            f"the llama.cpp runner for {self.model_id} {how} {when}"
            + (f": {words}" if words else "")
            + "; the next request starts a new one",
            model=self.model_id,
            backend=BACKEND,
        )


def parse_log_line(line: str) -> tuple[int, str, str]:
    """(level, logger name, text) of a line of a runner's log: a record the runner's logging
    wrote (:data:`.runner_process.LOG_FORMAT`), or raw output of llama.cpp (a warning)."""
    level, _, rest = line.partition("\t")
    name, _, text = rest.partition("\t")
    if level.isdigit() and name and text:
        return int(level), name, text
    return logging.WARNING, __name__, line


def last_words(lines: list[str]) -> str:
    """What a runner said before it died: its last warnings and errors (llama.cpp's log) and
    lines that name an error (what it printed as it aborted)."""
    return " | ".join(lines[-3:])[:1000]


def _ending(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"
