"""A model runner: the process in which one llama.cpp model lives (``python -m
providers.llamacpp.runner_process FD``), so that an abort, a segfault or an out-of-memory kill
in llama.cpp ends this process and not the kernel (:mod:`.runner` is the kernel's side).

It reads :mod:`.runner_messages` from the socket ``FD``: a :class:`Load`, then generations one
at a time. Between two tokens it reads what the kernel sent meanwhile (credit, a cancel, the
next generation); inside llama.cpp it cannot, and the kernel stops a runner that does not
answer a cancel in time. Its stdout and stderr are a pipe that the kernel reads (llama.cpp's
log, and what it prints when it aborts). It ignores SIGINT (the kernel sends cancels) and
ends when the kernel's end of the socket closes, as it does when the kernel dies (no
``PR_SET_PDEATHSIG``: it fires when the *thread* that started the runner ends, and the kernel
starts runners from worker threads).
"""

from __future__ import annotations

import gc
import logging
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

from ..errors import Cancelled, LLMSpellError, ModelLoadError
from ..types import Chunk
from .embedding import EmbeddingContext
from .generation import (
    REPEAT_LAST_N,
    REUSE_BATCH,
    PromptBuilder,
    build_prompt,
    chat_prompt,
    completion_prompt,
    configure_reuse,
    conversation_cache,
    stream_prompt,
)
from .ids import BACKEND
from .native import broken_weights, native_errors, prepare_llama_cpp
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
    Generate,
    Load,
    Loaded,
    Piece,
    Prompted,
    Stop,
    ToRunner,
)

if TYPE_CHECKING:
    from llama_cpp import Llama

COALESCE_SECONDS = 0.05
"""Text generated within this long of the last piece sent travels with the next one: the
first piece goes at once, then about one message per 50 ms (two tokens at 40 tokens/s), so
that the kernel's thread, woken per message, takes less of the cores llama.cpp computes on.
A slow model (a token per 50 ms or more) still sends every token as it comes."""

LOG_FORMAT = "%(levelno)d\t%(name)s\t%(message)s"
"""How the runner writes a log record on its stderr (:func:`.runner.parse_log_line` reads it)."""


def load_llama(load: Load) -> Llama:
    """The model ``load`` names, checked to compute something; :class:`ModelLoadError` saying
    why not (llama.cpp's logged reason, not llama-cpp-python's "Failed to load model")."""
    prepare_llama_cpp()
    from llama_cpp import Llama

    failure = None
    with native_errors() as errors:
        try:
            llama = Llama(
                model_path=str(load.path),
                n_ctx=load.n_ctx,
                n_threads=load.n_threads,
                n_threads_batch=load.n_threads,
                n_gpu_layers=load.n_gpu_layers,
                last_n_tokens_size=REPEAT_LAST_N,
                n_batch=REUSE_BATCH,
                verbose=False,
            )
        except (ValueError, OSError, RuntimeError) as exc:
            failure = _load_failure(exc, errors)
    if failure is not None:
        gc.collect()  # the half-built Llama lives on in the exception's frames
        raise ModelLoadError(
            f"cannot load {load.model_id} from {load.path}: {failure}",
            model=load.model_id,
            backend=BACKEND,
        )
    configure_reuse(
        llama, cache_bytes=load.conversation_cache_bytes, reproducible=load.reproducible
    )
    broken = broken_weights(llama)
    if broken is not None:
        llama.close()
        advice = (
            f"; remove it (llmspell model remove {load.model_id}@{BACKEND}) and import or pull"
            " it again"
            if load.stored
            else ""
        )
        raise ModelLoadError(
            f"cannot use {load.model_id} from {load.path}: {broken}{advice}",
            model=load.model_id,
            backend=BACKEND,
        )
    return llama


def _load_failure(exc: Exception, errors: list[str]) -> str:
    """Why llama.cpp could not load a model: the reason it logged, else the exception."""
    marker = "error loading model: "
    reasons = [line.split(marker, 1)[1] for line in errors if marker in line]
    if not reasons:
        return str(exc)
    reason = f"llama.cpp: {reasons[0]}"
    if "unknown model architecture" in reasons[0]:
        from llama_cpp import __version__

        reason += f" (llama-cpp-python {__version__} does not support it; a newer one may)"
    return reason


def builder(request: ChatRequest | CompletionRequest) -> PromptBuilder:
    if isinstance(request, ChatRequest):
        return chat_prompt(request.template, request.messages)
    return completion_prompt(request.prompt)


class Server:
    """Generations with one loaded model, as the kernel asks for them."""

    def __init__(
        self, connection: Connection, model_id: str, llama: Llama, n_threads: int = 1
    ) -> None:
        self.connection = connection
        self.model_id = model_id
        self.llama = llama
        self.n_threads = n_threads
        self.embedding: EmbeddingContext | None = None
        """Made on the first :class:`Embed` (most runners never embed)."""

    def serve(self) -> None:
        """Until :class:`Stop` or the kernel's end of the socket closes."""
        waiting: ToRunner | None = None
        while True:
            message = waiting if waiting is not None else self._receive()
            waiting = None
            if isinstance(message, Stop):
                return
            if isinstance(message, Generate):
                waiting = self.generate(message)
            elif isinstance(message, Embed):
                waiting = self.embed(message)
            # Credits and cancels of generations that ended are late: nothing to do.

    def generate(self, request: Generate) -> ToRunner | None:
        """Run one generation; returns a :class:`Generate` or :class:`Stop` that arrived
        meanwhile and ended it."""
        cancel = threading.Event()
        send = self.connection.send
        try:
            prompt = build_prompt(
                self.model_id, self.llama, builder(request.request), request.options
            )
            send(Prompted(request.id, len(prompt.tokens)))
            chunks = stream_prompt(
                self.model_id,
                self.llama,
                prompt,
                request.options,
                request.load_seconds,
                cancel,
                request.queue_seconds,
            )
            credit = WINDOW
            held: list[str] = []
            sent_at: float | None = None
            try:
                for chunk in chunks:
                    if chunk.done:
                        if held:
                            send(Piece(request.id, Chunk(text="".join(held))))
                        states = conversation_cache(self.llama)
                        described = None if states is None else states.describe()
                        send(Finished(request.id, chunk, described))
                        return None
                    now = time.monotonic()
                    if sent_at is not None and now - sent_at < COALESCE_SECONDS:
                        held.append(chunk.text)
                    else:
                        text = "".join(held) + chunk.text
                        held.clear()
                        send(Piece(request.id, Chunk(text=text)))
                        sent_at = now
                        credit -= 1
                    # What the kernel sent meanwhile; wait for it while out of credit.
                    while credit <= 0 or self.connection.poll(0):
                        message = self._receive()
                        if isinstance(message, Credit) and message.id == request.id:
                            credit += message.count
                        elif isinstance(message, Cancel) and message.id == request.id:
                            cancel.set()  # the next token raises Cancelled
                            break
                        elif isinstance(message, Generate | Stop):
                            send(Failed(request.id, _preempted(self.model_id)))
                            return message
            finally:
                chunks.close()
        except LLMSpellError as exc:
            send(Failed(request.id, exc))
        return None

    def embed(self, request: Embed) -> ToRunner | None:
        """Embed the request's texts; returns a :class:`Generate`, :class:`Embed` or
        :class:`Stop` that arrived meanwhile and ended it (as :meth:`generate` does)."""
        send = self.connection.send
        arrived: list[ToRunner] = []

        def between() -> None:
            # What the kernel sent meanwhile: a cancel of this request, or the next request.
            while self.connection.poll(0):
                message = self._receive()
                if isinstance(message, Cancel) and message.id == request.id:
                    raise Cancelled(
                        f"embedding with {self.model_id} interrupted",
                        model=self.model_id,
                        backend=BACKEND,
                    )
                if isinstance(message, Generate | Embed | Stop):
                    arrived.append(message)
                    raise _preempted(self.model_id)

        try:
            if self.embedding is None:
                self.embedding = EmbeddingContext(self.llama, self.model_id, self.n_threads)
            tokens, cut = self.embedding.tokenize(request.texts, truncate=request.truncate)
            vectors = self.embedding.embed(tokens, normalize=request.normalize, between=between)
            send(Embedded(request.id, vectors, sum(map(len, tokens)), cut))
        except LLMSpellError as exc:
            send(Failed(request.id, exc))
        return arrived[0] if arrived else None

    def close(self) -> None:
        """Free the embedding context (before the model it uses)."""
        if self.embedding is not None:
            self.embedding.close()
            self.embedding = None

    def _receive(self) -> ToRunner:
        """The kernel's next message; :class:`Stop` once its end of the socket closes."""
        try:
            message: ToRunner = self.connection.recv()
        except (EOFError, OSError):
            return Stop()
        return message


def _preempted(model_id: str) -> Cancelled:
    return Cancelled(
        f"generation with {model_id} ended: another request took the model",
        model=model_id,
        backend=BACKEND,
    )


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG, format=LOG_FORMAT)
    connection = Connection(int(argv[0]))
    try:
        load = connection.recv()
    except (EOFError, OSError):
        return 0
    assert isinstance(load, Load)
    try:
        llama = load_llama(load)
    except LLMSpellError as exc:
        connection.send(Failed(None, exc))
        return 0
    connection.send(Loaded(int(llama.n_ctx())))
    server = Server(connection, load.model_id, llama, load.n_threads)
    try:
        server.serve()
    except OSError:  # the kernel's end closed while the runner wrote to it
        pass
    finally:
        server.close()
        llama.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
