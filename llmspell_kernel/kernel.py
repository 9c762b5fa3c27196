# ipykernel is only partly annotated: calls into it are untyped.
# mypy: disallow-untyped-calls=False
"""LLMSpellKernel: IPython's kernel plus the ``model_request`` protocol of SPEC §5.

The kernel owns one :class:`ProviderManager`. Every model request is validated, then run on a
worker thread (the event loop of its shell never blocks on a load, a pull or a generation);
progress and generated text are handed back to that loop and published on IOPub, parented to
the request, as they happen. The read-only state queries (``commands.INLINE_COMMANDS``: list,
status, ps) are answered on the shell's own thread: the hop to a worker and back cost more
than their work and made their round trip ~1.5x a ``kernel_info`` (benchmarks/bench_roundtrip).
A shell answers its requests one after another anyway, so nothing waits longer for it.
Every request gets exactly one ``model_reply``, whatever goes wrong.

Interrupts: ``interrupt_request`` (and SIGINT) set the cancel flag of every running model
operation, in addition to interrupting a running cell the usual way. An embedded kernel
(``signal_interrupts = False``) never signals its host process: model operations are
cancelled cooperatively, and a running cell gets its KeyboardInterrupt raised in its thread.
"""

from __future__ import annotations

import asyncio
import ctypes
import inspect
import signal
import sys
import threading
from collections.abc import Callable
from functools import partial
from types import FrameType
from typing import Any

from ipykernel.ipkernel import IPythonKernel
from ipykernel.kernelbase import Kernel
from IPython.core.interactiveshell import InteractiveShell
from traitlets import Bool, Float, Unicode

from providers.config import Config
from providers.errors import ConfigError, LLMSpellError
from providers.manager import ProviderManager

from . import __version__, commands
from .protocol import (
    PROGRESS_TYPE,
    PROTOCOL_VERSION,
    REPLY_TYPE,
    REQUEST_TYPE,
    STREAM_TYPE,
    Request,
    Result,
    command_of,
    error_reply,
    ok_reply,
    parse_request,
)
from .streaming import StreamPublisher


class LLMSpellKernel(IPythonKernel):
    implementation = "llmspell"
    implementation_version = __version__
    banner = f"llmspell {__version__}: local LLMs in an IPython kernel (LocalLLM, Agent, %llm)"

    msg_types = [*Kernel.msg_types, REQUEST_TYPE]  # noqa: RUF012 (ipykernel reads a list)

    config_path = Unicode(
        None, allow_none=True, help="llmspell config file (default: $LLMSPELL_CONFIG)"
    ).tag(config=True)
    stream_interval = Float(
        0.1,
        help="Seconds between two model_stream messages of a generation: the text generated in "
        "between is sent as one message (the first piece always goes at once). 0 sends every "
        "piece as it comes.",
    ).tag(config=True)
    signal_interrupts = Bool(
        True,
        help="Send SIGINT to the process on interrupt_request (off for an embedded kernel, "
        "which must not signal its host).",
    ).tag(config=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._operations: dict[str, commands.Operation] = {}
        self._operations_lock = threading.Lock()
        self._cell_threads: set[int] = set()
        self.config_error: ConfigError | None = None
        try:
            config = Config.load(self.config_path)
        except ConfigError as exc:
            # The kernel still starts: every model request answers with this error.
            self.config_error = exc
            self.log.error("llmspell configuration: %s", exc.message)
            config = Config()
        self.manager = ProviderManager(config)
        if self.config_error is None:
            self._install_namespace()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._sigint_cancel)

    def _install_namespace(self) -> None:
        from .namespace import install_namespace

        install_namespace(self.shell, self.manager)

    @property
    def kernel_info(self) -> dict[str, Any]:
        info: dict[str, Any] = dict(super().kernel_info)
        info["llmspell"] = {"protocol_version": PROTOCOL_VERSION, "version": __version__}
        return info

    # model_request --------------------------------------------------------------------------

    async def model_request(self, stream: Any, ident: Any, parent: dict[str, Any]) -> None:
        content = parent.get("content")
        command = command_of(content)
        msg_id = parent["header"]["msg_id"]
        try:
            request = parse_request(content)
            if self.config_error is not None:
                raise self.config_error
            if type(request) in commands.INLINE_COMMANDS:
                result = commands.run(self.manager, request, commands.Operation())
            else:
                result = await self._run_on_worker(request, msg_id, parent)
            reply = ok_reply(request.command, result)
        except (Exception, KeyboardInterrupt) as exc:
            if not isinstance(exc, LLMSpellError | KeyboardInterrupt):
                self.log.error("model_request %s failed", command, exc_info=exc)
            reply = error_reply(command, exc)
        self._send_reply(stream, ident, parent, reply)

    async def _run_on_worker(self, request: Request, msg_id: str, parent: dict[str, Any]) -> Result:
        loop = asyncio.get_running_loop()
        stream = StreamPublisher(
            self.iopub_thread, partial(self._publish, STREAM_TYPE, parent), self.stream_interval
        )
        progress = self._publisher(PROGRESS_TYPE, parent)
        op = commands.Operation(
            publish_progress=lambda event: progress(event.to_dict()),
            publish_stream=stream.publish,
        )
        with self._operations_lock:
            self._operations[msg_id] = op
        try:
            return await loop.run_in_executor(None, commands.run, self.manager, request, op)
        finally:
            stream.flush()
            with self._operations_lock:
                self._operations.pop(msg_id, None)

    def _send_reply(
        self, stream: Any, ident: Any, parent: dict[str, Any], reply: dict[str, Any]
    ) -> None:
        # ok_reply and error_reply made the content JSON-safe already.
        assert self.session is not None
        self.session.send(stream, REPLY_TYPE, reply, parent, ident)

    def _publisher(self, msg_type: str, parent: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
        # A worker thread hands each message straight to the IOPub thread, whose queue keeps
        # them in order ahead of the reply's idle status (published through the same queue
        # after the worker returns).
        iopub = self.iopub_thread
        send = partial(self._publish, msg_type, parent)
        return lambda content: iopub.schedule(partial(send, content))

    def _publish(self, msg_type: str, parent: dict[str, Any], content: dict[str, Any]) -> None:
        """Sends on IOPub's own socket: runs on the IOPub thread (``iopub_socket`` would queue
        the message again, behind a status the shell thread published meanwhile)."""
        assert self.session is not None
        socket = self.iopub_thread.socket
        if socket is None:  # closed: the kernel is shutting down
            return
        self.session.send(socket, msg_type, content, parent=parent, ident=self._topic(msg_type))

    # Interrupts -----------------------------------------------------------------------------

    def cancel_operations(self) -> int:
        """Ask every running model operation to stop; returns how many there were."""
        with self._operations_lock:
            running = list(self._operations.values())
        for op in running:
            op.cancel.set()
        return len(running)

    async def interrupt_request(self, stream: Any, ident: Any, parent: dict[str, Any]) -> None:
        cancelled = self.cancel_operations()
        self.log.info("interrupt: cancelling %d model operation(s)", cancelled)
        if self.signal_interrupts:
            await super().interrupt_request(stream, ident, parent)
        else:
            self.log.info("interrupt: %d cell(s) interrupted", self._interrupt_cells())
            assert self.session is not None
            self.session.send(stream, "interrupt_reply", {"status": "ok"}, parent, ident=ident)

    async def do_execute(self, *args: Any, **kwargs: Any) -> Any:
        ident = threading.get_ident()
        with self._operations_lock:
            self._cell_threads.add(ident)
        try:
            return await super().do_execute(*args, **kwargs)
        finally:
            with self._operations_lock:
                self._cell_threads.discard(ident)

    def _interrupt_cells(self) -> int:
        """Without signals (embedded kernel): raise KeyboardInterrupt in the threads that are
        running cell code right now.

        Only a thread whose stack is inside ``InteractiveShell.run_code`` is touched, so the
        exception lands in the user's code (and is reported as the cell's error), never in the
        event loop; an async cell suspended at an ``await`` is left alone. Like SIGINT, it
        takes effect at the next Python bytecode (after a blocking C call returns).
        """
        run_code = InteractiveShell.run_code.__code__
        frames = sys._current_frames()
        with self._operations_lock:
            threads = list(self._cell_threads)
        interrupted = 0
        for ident in threads:
            frame = frames.get(ident)
            while frame is not None and frame.f_code is not run_code:
                frame = frame.f_back
            if frame is not None:
                with self._operations_lock:
                    # Once per cell: a second one could land in IPython's error display.
                    self._cell_threads.discard(ident)
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(ident), ctypes.py_object(KeyboardInterrupt)
                )
                interrupted += 1
        return interrupted

    def _sigint_cancel(self, signum: int, frame: FrameType | None) -> None:
        self.cancel_operations()

    def _sigint_interrupt(self, signum: int, frame: FrameType | None) -> None:
        self.cancel_operations()
        raise KeyboardInterrupt

    def pre_handler_hook(self) -> None:
        # The base class makes SIGINT raise KeyboardInterrupt during every handler. While a
        # model request awaits its worker that would tear through the event loop, so there it
        # only cancels; during other requests (cells) it also cancels model operations.
        # Subshells and embedded kernels run on other threads, where signals cannot be set.
        if threading.current_thread() is not threading.main_thread():
            return
        header = self.get_parent("shell").get("header", {})
        handler = (
            self._sigint_cancel
            if header.get("msg_type") == REQUEST_TYPE
            else self._sigint_interrupt
        )
        self.saved_sigint_handler = signal.signal(signal.SIGINT, handler)

    def post_handler_hook(self) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self.saved_sigint_handler)

    async def do_shutdown(self, restart: bool) -> dict[str, Any]:
        self.cancel_operations()
        self.manager.close()
        result = super().do_shutdown(restart)
        if inspect.isawaitable(result):
            result = await result
        return dict(result)
