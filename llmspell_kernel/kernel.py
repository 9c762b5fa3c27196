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
from ipykernel.thread import CONTROL_THREAD_NAME
from IPython.core.interactiveshell import InteractiveShell
from traitlets import Bool, Float, Unicode

from providers.config import Config
from providers.errors import ConfigError, InvalidRequest, LLMSpellError
from providers.manager import ProviderManager

from . import __version__, commands
from .progress_view import note_comm_info
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
from .protocol.requests import CancelRequest, LeaseRequest
from .protocol.results import CancelResult, LeaseResult
from .streaming import StreamPublisher
from .tracking import Tracker

LEASE_CHECK_INTERVAL = 1.0
"""Seconds between two looks for client leases that ran out."""
SHUTDOWN_DRAIN_SECONDS = 3.0
"""How long a shutdown waits for cancelled requests to answer, and for subshells to stop."""


class LLMSpellKernel(IPythonKernel):
    implementation = "llmspell"
    implementation_version = __version__
    banner = f"llmspell {__version__}: local LLMs in an IPython kernel (LocalLLM, Agent, %llm)"

    msg_types = [*Kernel.msg_types, REQUEST_TYPE]  # noqa: RUF012 (ipykernel reads a list)
    # On the control channel too: cancel and lease are answered there at once, however busy the
    # shells are (any other command gets an error reply saying where to send it).
    control_msg_types = [*Kernel.control_msg_types, REQUEST_TYPE]  # noqa: RUF012

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
        self.tracker = Tracker()
        self._operations_lock = threading.Lock()
        self._cell_threads: set[int] = set()
        self._own_sigints = 0
        """SIGINTs this kernel sent itself for an interrupt_request (already cancelled)."""
        self._watchdog_stop = threading.Event()
        self._watchdog: threading.Thread | None = None
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

    async def comm_info_request(self, stream: Any, ident: Any, parent: dict[str, Any]) -> None:
        """A widget manager (JupyterLab's, on opening a notebook) asks for ``jupyter.widget``
        comms: from then on pulls and loads show a widget bar (:mod:`.progress_view`)."""
        content = parent.get("content")
        if isinstance(content, dict):
            note_comm_info(content.get("target_name"))
        await super().comm_info_request(stream, ident, parent)

    # model_request --------------------------------------------------------------------------

    async def model_request(self, stream: Any, ident: Any, parent: dict[str, Any]) -> None:
        content = parent.get("content")
        command = command_of(content)
        try:
            request = parse_request(content)
            if isinstance(request, CancelRequest | LeaseRequest):
                result = self._client_command(request, parent)
            elif threading.current_thread().name == CONTROL_THREAD_NAME:
                raise InvalidRequest(
                    f"{request.command}: send it on the shell channel (the control channel "
                    "answers only cancel and lease)"
                )
            elif self.config_error is not None:
                raise self.config_error
            elif type(request) in commands.INLINE_COMMANDS:
                op = commands.Operation(requests=self.tracker.rows)
                result = commands.run(self.manager, request, op)
            else:
                result = await self._run_on_worker(request, parent)
            reply = ok_reply(request.command, result)
        except (Exception, KeyboardInterrupt) as exc:
            if not isinstance(exc, LLMSpellError | KeyboardInterrupt):
                self.log.error("model_request %s failed", command, exc_info=exc)
            reply = error_reply(command, exc)
        self._send_reply(stream, ident, parent, reply)

    def _client_command(
        self, request: CancelRequest | LeaseRequest, parent: dict[str, Any]
    ) -> Result:
        """The commands about a client's own work, answered at once on any channel."""
        if isinstance(request, CancelRequest):
            cancelled = self.tracker.cancel(request.request)
            self.log.info("cancel %s: %d request(s)", request.request or "all", len(cancelled))
            return CancelResult(cancelled=bool(cancelled), requests=cancelled)
        session = str(parent["header"].get("session", ""))
        running = self.tracker.lease(session, request.seconds)
        self._start_watchdog()
        return LeaseResult(seconds=request.seconds, running=running)

    async def _run_on_worker(self, request: Request, parent: dict[str, Any]) -> Result:
        loop = asyncio.get_running_loop()
        stream = StreamPublisher(
            self.iopub_thread, partial(self._publish, STREAM_TYPE, parent), self.stream_interval
        )
        progress = self._publisher(PROGRESS_TYPE, parent)
        header = parent["header"]
        op = commands.Operation(
            publish_progress=lambda event: progress(event.to_dict()),
            publish_stream=stream.publish,
            request=header["msg_id"],
            command=request.command,
            session=str(header.get("session", "")),
            model=getattr(request, "model", None),
            requests=self.tracker.rows,
        )
        self.tracker.add(op)
        try:
            return await loop.run_in_executor(None, self._run_tracked, request, op)
        finally:
            stream.flush()

    def _run_tracked(self, request: Request, op: commands.Operation) -> Result:
        """On the worker thread: the request leaves the tracker when its work ends, even if
        the shell that awaits it is gone (a dead client's subshell is deleted mid-request)."""
        try:
            return commands.run(self.manager, request, op)
        finally:
            self.tracker.remove(op.request)

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
        return len(self.tracker.cancel(None))

    async def interrupt_request(self, stream: Any, ident: Any, parent: dict[str, Any]) -> None:
        cancelled = self.cancel_operations()
        self.log.info("interrupt: cancelling %d model operation(s)", cancelled)
        if self.signal_interrupts:
            # The SIGINT is for a running cell; the model operations running now are cancelled
            # above. Its handler may run late on a busy machine, so it must not cancel a
            # request that started after this one (it would be lost to nobody's interrupt).
            with self._operations_lock:
                self._own_sigints += 1
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
        """SIGINT from outside (a terminal's Ctrl-C, ``kill -INT``) cancels every model
        operation; the kernel's own (from an interrupt_request) has done that already."""
        with self._operations_lock:
            own = self._own_sigints > 0
            if own:
                self._own_sigints -= 1
        if not own:
            self.cancel_operations()

    def _sigint_interrupt(self, signum: int, frame: FrameType | None) -> None:
        self._sigint_cancel(signum, frame)
        raise KeyboardInterrupt

    # Clients: subshells they own, leases that end when they are gone -------------------------

    async def create_subshell_request(
        self, socket: Any, ident: Any, parent: dict[str, Any]
    ) -> None:
        """ipykernel's, recording which client (session) owns the new subshell."""
        if not self.session or not self._supports_kernel_subshells:
            await super().create_subshell_request(socket, ident, parent)
            return
        control_socket = self._subshell_manager_socket()
        control_socket.send_json({"type": "create"})
        reply = control_socket.recv_json()
        subshell_id = reply.get("subshell_id")
        if subshell_id:
            self.tracker.own_subshell(str(parent["header"].get("session", "")), str(subshell_id))
        self.session.send(socket, "create_subshell_reply", reply, parent, ident)

    async def delete_subshell_request(
        self, socket: Any, ident: Any, parent: dict[str, Any]
    ) -> None:
        subshell_id = (parent.get("content") or {}).get("subshell_id")
        if isinstance(subshell_id, str):
            self.tracker.forget_subshell(subshell_id)
        await super().delete_subshell_request(socket, ident, parent)

    def _subshell_manager_socket(self) -> Any:
        """The control thread's socket to ipykernel's subshell manager (create, delete)."""
        return self.shell_channel_thread.manager.control_to_shell_channel.from_socket

    def _start_watchdog(self) -> None:
        """Once a client has taken a lease: a thread that ends the leases that run out."""
        with self._operations_lock:
            if self._watchdog is not None:
                return
            self._watchdog = threading.Thread(
                target=self._watch_leases, name="llmspell-leases", daemon=True
            )
        self._watchdog.start()

    def _watch_leases(self) -> None:
        while not self._watchdog_stop.wait(LEASE_CHECK_INTERVAL):
            for gone in self.tracker.expire():
                self.log.warning(
                    "client %s is gone (its lease ran out): cancelled %d request(s), deleting "
                    "%d subshell(s)",
                    gone.session,
                    len(gone.cancelled),
                    len(gone.subshells),
                )
                if gone.subshells:
                    self._on_control_thread(partial(self._delete_subshells, gone.subshells))

    def _on_control_thread(self, function: Callable[[], None]) -> None:
        control = getattr(self, "control_thread", None)
        loop = getattr(control, "io_loop", None)
        if loop is not None:
            loop.add_callback(function)

    def _delete_subshells(self, subshells: list[str]) -> None:
        """Runs on the control thread, which owns the socket to the subshell manager."""
        control_socket = self._subshell_manager_socket()
        for subshell_id in subshells:
            control_socket.send_json({"type": "delete", "subshell_id": subshell_id})
            reply = control_socket.recv_json()
            if reply.get("status") != "ok":
                self.log.info("subshell %s was gone already: %s", subshell_id, reply)

    def _stop_subshells(self, seconds: float) -> None:
        """Stop the shell channel thread, and with it every subshell, while IOPub still runs.

        At exit ipykernel stops IOPub first (its atexit hook was registered last) and the
        subshells after it; a subshell still finishing a cancelled request then flushes into
        a stopped IOPub and waits out ``OutStream.flush_timeout`` (10 s): a kernel stopped in
        the middle of a generation took 7-10 s to exit instead of a fraction of one.
        """
        thread = getattr(self, "shell_channel_thread", None)
        if thread is None or not thread.is_alive() or thread is threading.current_thread():
            return
        thread.stop()
        thread.join(seconds)
        if thread.is_alive():
            self.log.warning("the shell channel thread did not stop within %g s", seconds)

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
        self._watchdog_stop.set()
        self.cancel_operations()
        # The cancelled requests end on their worker threads, not on this loop.
        await asyncio.to_thread(self.tracker.wait_idle, SHUTDOWN_DRAIN_SECONDS)
        self._stop_subshells(SHUTDOWN_DRAIN_SECONDS)
        self.manager.close()
        result = super().do_shutdown(restart)
        if inspect.isawaitable(result):
            result = await result
        return dict(result)
