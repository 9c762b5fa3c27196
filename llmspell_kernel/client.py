"""LLMSpellClient: talk to an llmspell kernel over ZMQ (SPEC §5, §6).

One client, three ways to get it:

- :meth:`LLMSpellClient.connect` — a connection file path, or a name found in the Jupyter
  runtime directory the way ``jupyter console --existing NAME`` finds it;
- :meth:`LLMSpellClient.embedded` — a real ZMQ kernel on a thread of this process;
- the constructor, given a connection file.

All socket I/O happens on one dispatcher thread, which routes every incoming message by its
parent ``msg_id`` to the request waiting for it, so replies, progress and streamed text are
matched to their request even when several requests are in flight (from several threads).
Model requests go to a dedicated subshell when the kernel supports subshells, so they are
answered while a cell runs, and a long pull does not block cells.
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import zmq
from jupyter_client.blocking.client import BlockingKernelClient
from pydantic import TypeAdapter

from providers.errors import KernelConnectionError, LLMSpellError, error_class
from providers.options import GenerationOptions, Message
from providers.types import Progress

from .protocol import PROGRESS_TYPE, REQUEST_TYPE, STREAM_TYPE
from .protocol.requests import (
    CancelRequest,
    CopyRequest,
    EmbedRequest,
    GenerateRequest,
    ImportRequest,
    LoadRequest,
    PullRequest,
    RemoveRequest,
    Request,
    UnloadRequest,
    validate,
)
from .protocol.results import (
    CancelResult,
    CopyResult,
    EmbedResult,
    GenerateResult,
    ImportResult,
    LoadResult,
    PullResult,
    RemoveResult,
    Result,
    UnloadResult,
)
from .queries import Queries
from .records import find_kernel as find_kernel  # re-exported: callers import it from here

if TYPE_CHECKING:
    from .embedded import EmbeddedKernel
    from .tunnel import SSHTarget, SSHTunnel

log = logging.getLogger(__name__)

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
"""Kernel addresses that mean "on this machine"."""

DEFAULT_CONNECT_TIMEOUT = 10.0
# After a reply, how long to wait for the request's final IOPub messages (they travel on
# another socket, so they may arrive just after the reply).
IDLE_GRACE = 2.0
# After Ctrl-C, how long to wait for the interrupted request's reply before re-raising.
INTERRUPT_GRACE = 3.0
_POLL = 0.25
# How long the heartbeat must stay silent before a waiting request gives the kernel up.
HEARTBEAT_GRACE = 5.0
# The client lease the kernel is asked to hold (renewed every third of it): a client gone for
# this long has its model requests cancelled and its subshell deleted.
LEASE_SECONDS = 10.0
LEASES_SINCE = "1.1"

OutputCallback = Callable[[str, str], None]
InputCallback = Callable[[str, bool], str]
"""``on_input(prompt, password)`` of :meth:`LLMSpellClient.execute`: the line the code asked
for (without its newline), or :data:`END_OF_INPUT`."""
END_OF_INPUT = "\x04"
"""What an ``on_input`` handler returns at the end of its input: the code's ``input()`` raises
``EOFError`` (ipykernel's convention)."""
ProgressHandler = Callable[[Progress], None]
TextHandler = Callable[[str], None]
R = TypeVar("R", bound=Result)

_PROGRESS = TypeAdapter(Progress)


@dataclass
class ExecuteResult:
    """The outcome of :meth:`LLMSpellClient.execute`."""

    status: str
    execution_count: int | None
    ename: str | None = None
    evalue: str | None = None
    traceback: list[str] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    """nbformat-style outputs: ``stream``, ``execute_result``, ``display_data``, ``error``."""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class _Dispatcher(threading.Thread):
    """Owns the shell, control and IOPub sockets; routes messages by parent msg_id."""

    def __init__(self, kc: BlockingKernelClient) -> None:
        super().__init__(name="llmspell-client-dispatcher", daemon=True)
        self.session = kc.session
        identity = self.session.bsession
        self._sockets: dict[str, zmq.Socket[Any]] = {
            "shell": kc.connect_shell(identity=identity),
            "control": kc.connect_control(identity=identity),
            "iopub": kc.connect_iopub(),
            # The kernel sends input requests to the identity of the shell that asked.
            "stdin": kc.connect_stdin(identity=identity),
        }
        self._outbox: deque[tuple[str, dict[str, Any]]] = deque()
        self._waiters: dict[str, queue.Queue[tuple[str, dict[str, Any]]]] = {}
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        self._stopping = False
        self._lease_seconds: float | None = None
        self._lease_due = 0.0

    def hold_lease(self, seconds: float) -> None:
        """Renew a client lease of ``seconds`` on the control channel, three times a lease,
        for as long as this dispatcher runs: when this process is gone, the kernel stops its
        work (see :mod:`llmspell_kernel.tracking`)."""
        with self._lock:
            self._lease_seconds = seconds
            self._lease_due = 0.0
            os.write(self._wake_w, b"x")

    def _renew_lease(self) -> None:
        seconds = self._lease_seconds
        now = time.monotonic()
        if seconds is None or now < self._lease_due:
            return
        self._lease_due = now + seconds / 3
        msg = self.session.msg(REQUEST_TYPE, {"command": "lease", "seconds": seconds})
        self.session.send(self._sockets["control"], msg)  # its reply is not waited for

    def send(self, channel: str, msg: dict[str, Any]) -> queue.Queue[tuple[str, dict[str, Any]]]:
        """Queue ``msg`` for sending; returns the queue its reply and IOPub messages go to."""
        inbox: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        with self._lock:
            if self._stopping:
                raise KernelConnectionError("the client is closed")
            self._waiters[msg["header"]["msg_id"]] = inbox
            self._outbox.append((channel, msg))
            os.write(self._wake_w, b"x")
        return inbox

    def post(self, channel: str, msg: dict[str, Any]) -> None:
        """Queue ``msg`` for sending when nothing answers it (an ``input_reply``)."""
        with self._lock:
            if self._stopping:
                raise KernelConnectionError("the client is closed")
            self._outbox.append((channel, msg))
            os.write(self._wake_w, b"x")

    def forget(self, msg_id: str) -> None:
        with self._lock:
            self._waiters.pop(msg_id, None)

    def stop(self) -> None:
        with self._lock:
            if not self._stopping:
                self._stopping = True
                os.write(self._wake_w, b"x")
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=5)

    def run(self) -> None:
        poller = zmq.Poller()
        for sock in self._sockets.values():
            poller.register(sock, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        try:
            while not self._stopping:
                events = dict(poller.poll(int(_POLL * 1000)))
                if self._wake_r in events:
                    os.read(self._wake_r, 4096)
                self._flush_outbox()
                self._renew_lease()
                for channel, sock in self._sockets.items():
                    if sock in events:
                        self._drain(channel, sock)
        except Exception:
            log.exception("llmspell client dispatcher failed")
        finally:
            with self._lock:
                self._stopping = True
                os.close(self._wake_r)
                os.close(self._wake_w)
            for sock in self._sockets.values():
                sock.close(linger=0)

    def _flush_outbox(self) -> None:
        while True:
            with self._lock:
                if not self._outbox:
                    return
                channel, msg = self._outbox.popleft()
            self.session.send(self._sockets[channel], msg)

    def _drain(self, channel: str, sock: zmq.Socket[Any]) -> None:
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                return
            try:
                _, parts = self.session.feed_identities(frames, copy=True)
                msg = self.session.deserialize(parts, content=True, copy=True)
            except Exception as exc:  # a bad signature or a garbled message: drop it
                log.warning("dropping an invalid %s message: %s", channel, exc)
                continue
            parent_id = (msg.get("parent_header") or {}).get("msg_id")
            with self._lock:
                inbox = self._waiters.get(parent_id) if parent_id else None
            if inbox is not None:
                # An input request is handled like IOPub output: by the request's callback.
                inbox.put(("reply" if channel in ("shell", "control") else "iopub", msg))


class LLMSpellClient(Queries):
    """A connection to one llmspell kernel. Use as a context manager, or call :meth:`close`."""

    def __init__(
        self,
        connection_file: str | Path,
        *,
        timeout: float = DEFAULT_CONNECT_TIMEOUT,
        embedded_kernel: EmbeddedKernel | None = None,
        tunnel: SSHTunnel | None = None,
    ) -> None:
        self._connection_file = Path(connection_file)
        self._embedded = embedded_kernel
        self._tunnel = tunnel
        self._closed = False
        self.heartbeat_grace = HEARTBEAT_GRACE
        self.lease_seconds = LEASE_SECONDS
        self.kc = BlockingKernelClient(connection_file=str(self._connection_file))
        try:
            self.kc.load_connection_file()
        except (OSError, ValueError, KeyError) as exc:
            raise KernelConnectionError(
                f"cannot read connection file {self._connection_file}: {exc}"
            ) from exc
        self._dispatcher = _Dispatcher(self.kc)
        self._dispatcher.start()
        self.kc.start_channels(shell=False, iopub=False, stdin=False, hb=True, control=False)
        self._subshell_id: str | None = None
        try:
            self._kernel_info = self._handshake(timeout)
            if _speaks(self._kernel_info, LEASES_SINCE):
                self._dispatcher.hold_lease(self.lease_seconds)
            if "kernel subshells" in self._kernel_info.get("supported_features", []):
                self._subshell_id = self._create_subshell(timeout)
        except BaseException:
            self.close()
            raise

    # Construction ---------------------------------------------------------------------------

    @classmethod
    def connect(
        cls, file_or_name: str | Path, timeout: float = DEFAULT_CONNECT_TIMEOUT
    ) -> LLMSpellClient:
        """Connect to a running kernel by connection file path, or by name (like
        ``jupyter console --existing NAME``: the exact file, then ``*NAME*``, newest first, in
        the current directory and the Jupyter runtime directory)."""
        return cls(find_kernel(str(file_or_name)), timeout=timeout)

    @classmethod
    def connect_ssh(
        cls,
        target: SSHTarget,
        file_or_name: str | None = None,
        timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> LLMSpellClient:
        """Connect to a kernel on another host through an SSH tunnel: ``file_or_name`` is a
        connection file here (copied from the host, as for ``jupyter console --existing F
        --ssh HOST``), else a kernel's name or ID on the host; None: the newest kernel there."""
        from .tunnel import open_tunnel, remote_connection

        info: dict[str, Any] | None = None
        if file_or_name is not None:
            try:
                local = find_kernel(file_or_name)
            except KernelConnectionError:
                local = None
            if local is not None:
                try:
                    info = json.loads(local.read_text(encoding="utf-8"))
                except (OSError, ValueError) as exc:
                    raise KernelConnectionError(
                        f"cannot read connection file {local}: {exc}"
                    ) from exc
        if info is None:
            info = remote_connection(target, file_or_name)
        tunnel = open_tunnel(target, info)
        try:
            return cls(tunnel.connection_file, timeout=timeout, tunnel=tunnel)
        except BaseException:
            tunnel.close()
            raise

    @classmethod
    def embedded(
        cls, config_path: str | Path | None = None, *, timeout: float = 30.0
    ) -> LLMSpellClient:
        """Start a kernel on a thread of this process (real ZMQ on 127.0.0.1) and connect."""
        from .embedded import EmbeddedKernel

        kernel = EmbeddedKernel.start(config_path, timeout=timeout)
        try:
            return cls(kernel.connection_file, timeout=timeout, embedded_kernel=kernel)
        except BaseException:
            kernel.stop()
            raise

    # Properties -----------------------------------------------------------------------------

    @property
    def kernel_info(self) -> dict[str, Any]:
        return self._kernel_info

    @property
    def connection_file(self) -> Path:
        return self._connection_file

    @property
    def subshell_id(self) -> str | None:
        """The subshell model requests are sent on (None: the main shell)."""
        return self._subshell_id

    @property
    def is_embedded(self) -> bool:
        return self._embedded is not None

    @property
    def on_this_machine(self) -> bool:
        """Whether the kernel runs on this machine (embedded, or at a loopback address and not
        at the end of an SSH tunnel)."""
        if self._embedded is not None:
            return True
        return self._tunnel is None and self.kc.ip in LOOPBACK

    @property
    def tunnel(self) -> SSHTunnel | None:
        """The SSH tunnel the client reaches its kernel through, if any."""
        return self._tunnel

    # Requests -------------------------------------------------------------------------------

    def model_request(
        self,
        command: str,
        *,
        timeout: float | None = None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        on_stream: Callable[[str], None] | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Send one model request; returns the ok reply's content.

        Raises the llmspell error named by an error reply (``ModelNotFound``...), and
        :class:`KernelConnectionError` on a timeout or a dead kernel. Ctrl-C while waiting
        interrupts the kernel-side operation, then re-raises ``KeyboardInterrupt``.
        ``None`` fields are left out (they mean "not given").
        """
        content = {"command": command, **{k: v for k, v in fields.items() if v is not None}}

        def on_iopub(msg: dict[str, Any]) -> None:
            msg_type = msg["header"]["msg_type"]
            if msg_type == PROGRESS_TYPE and on_progress is not None:
                on_progress(msg["content"])
            elif msg_type == STREAM_TYPE and on_stream is not None:
                on_stream(msg["content"].get("text", ""))

        reply = self._request(
            "shell",
            REQUEST_TYPE,
            content,
            timeout=timeout,
            on_iopub=on_iopub,
            subshell_id=self._subshell_id,
            what=f"model request '{command}'",
        )
        result: dict[str, Any] = reply["content"]
        if result.get("status") != "ok":
            raise error_from_reply(result)
        return result

    # Typed requests: one method per command, taking and returning the protocol's models ----

    def send(
        self,
        request: Request,
        result: type[R],
        *,
        timeout: float | None = None,
        on_progress: ProgressHandler | None = None,
        on_text: TextHandler | None = None,
    ) -> R:
        """Send a validated ``request``; returns its ok result parsed as ``result``."""
        progress = None
        if on_progress is not None:
            handler = on_progress

            def progress(content: dict[str, Any]) -> None:
                handler(_PROGRESS.validate_python(content))

        reply = self.model_request(
            request.command,
            timeout=timeout,
            on_progress=progress,
            on_stream=on_text,
            **request.fields(),
        )
        return result.model_validate(reply)

    def pull(
        self,
        model: str,
        *,
        force: bool = False,
        quantization: str | None = None,
        on_progress: ProgressHandler | None = None,
        timeout: float | None = None,
    ) -> PullResult:
        """Download ``model``; ``on_progress`` is called with each :class:`Progress`."""
        fields = {"model": model, "force": force, "quantization": quantization}
        request = validate(PullRequest, fields)
        return self.send(request, PullResult, timeout=timeout, on_progress=on_progress)

    def remove(self, model: str, *, timeout: float | None = None) -> RemoveResult:
        return self.send(validate(RemoveRequest, {"model": model}), RemoveResult, timeout=timeout)

    def import_model(
        self,
        path: str | Path,
        name: str | None = None,
        *,
        link: bool = False,
        timeout: float | None = None,
    ) -> ImportResult:
        """Register a GGUF file (a path the kernel can read); ``link`` links it in place
        instead of copying it."""
        request = validate(ImportRequest, {"path": str(path), "name": name, "link": link})
        return self.send(request, ImportResult, timeout=timeout)

    def copy(self, model: str, name: str, *, timeout: float | None = None) -> CopyResult:
        """A second name ``name`` for the installed ``model`` (``ollama cp``)."""
        request = validate(CopyRequest, {"model": model, "name": name})
        return self.send(request, CopyResult, timeout=timeout)

    def load(
        self,
        model: str,
        *,
        on_progress: ProgressHandler | None = None,
        timeout: float | None = None,
    ) -> LoadResult:
        request = validate(LoadRequest, {"model": model})
        return self.send(request, LoadResult, timeout=timeout, on_progress=on_progress)

    def unload(self, model: str, *, timeout: float | None = None) -> UnloadResult:
        return self.send(validate(UnloadRequest, {"model": model}), UnloadResult, timeout=timeout)

    def cancel(self, request: str | None = None, *, timeout: float = 5.0) -> CancelResult:
        """Cancel one model request by its msg_id (None: every running one) — only that work:
        unlike :meth:`interrupt`, other requests and running cells go on. Sent on the control
        channel, so it is answered however busy the kernel is."""
        validated = validate(CancelRequest, {"request": request})
        reply = self._request(
            "control",
            REQUEST_TYPE,
            validated.content(),
            timeout=timeout,
            wait_idle=False,
            what="cancel",
        )
        content: dict[str, Any] = reply["content"]
        if content.get("status") != "ok":
            raise error_from_reply(content)
        return CancelResult.model_validate(content)

    def generate(
        self,
        model: str,
        *,
        prompt: str | None = None,
        messages: builtins.list[Message] | None = None,
        options: GenerationOptions | None = None,
        on_text: TextHandler | None = None,
        on_progress: ProgressHandler | None = None,
        timeout: float | None = None,
    ) -> GenerateResult:
        """Generate from ``prompt`` (plain continuation) or ``messages`` (chat); with
        ``on_text`` the text is streamed to it as it comes; ``on_progress`` hears of a load
        and of the wait for a model busy with other requests (phase ``queued``)."""
        fields = {
            "model": model,
            "prompt": prompt,
            "messages": messages,
            "options": options,
            "stream": on_text is not None,
        }
        request = validate(GenerateRequest, fields)
        return self.send(
            request, GenerateResult, timeout=timeout, on_text=on_text, on_progress=on_progress
        )

    def embed(
        self,
        model: str,
        input: str | builtins.list[str],
        *,
        truncate: bool = True,
        normalize: bool = True,
        timeout: float | None = None,
    ) -> EmbedResult:
        """Embedding vectors of ``input`` (one text or several: one vector each, in order)."""
        fields = {"model": model, "input": input, "truncate": truncate, "normalize": normalize}
        request = validate(EmbedRequest, fields)
        return self.send(request, EmbedResult, timeout=timeout)

    def execute(
        self,
        code: str,
        *,
        on_output: OutputCallback | None = None,
        on_input: InputCallback | None = None,
        timeout: float | None = None,
    ) -> ExecuteResult:
        """Run ``code`` on the main shell; output is passed to ``on_output(stream, text)`` live.

        With ``on_input`` the code may read input (``input()``): each ``input_request`` of the
        kernel is answered, on the stdin channel, with ``on_input(prompt, password)``; without
        it, ``input()`` raises ``StdinNotImplementedError`` in the kernel.
        """
        outputs: list[dict[str, Any]] = []

        def on_iopub(msg: dict[str, Any]) -> None:
            msg_type = msg["header"]["msg_type"]
            content = msg["content"]
            if msg_type == "stream":
                outputs.append({"output_type": "stream", **content})
                if on_output is not None:
                    on_output(content.get("name", "stdout"), content.get("text", ""))
            elif msg_type in ("execute_result", "display_data"):
                outputs.append({"output_type": msg_type, **content})
                text = content.get("data", {}).get("text/plain")
                if on_output is not None and text is not None:
                    on_output("stdout", text if text.endswith("\n") else text + "\n")
            elif msg_type == "error":
                outputs.append({"output_type": "error", **content})
            elif msg_type == "input_request" and on_input is not None:
                value = on_input(str(content.get("prompt", "")), bool(content.get("password")))
                reply = self.kc.session.msg("input_reply", {"value": value}, parent=msg["header"])
                self._dispatcher.post("stdin", reply)

        request = {
            "code": code,
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": on_input is not None,
            "stop_on_error": True,
        }
        reply = self._request(
            "shell", "execute_request", request, timeout=timeout, on_iopub=on_iopub, what="execute"
        )
        content = reply["content"]
        return ExecuteResult(
            status=content.get("status", "error"),
            execution_count=content.get("execution_count"),
            ename=content.get("ename"),
            evalue=content.get("evalue"),
            traceback=list(content.get("traceback", [])),
            outputs=outputs,
        )

    def interrupt(self, timeout: float = 5.0) -> None:
        """Interrupt the kernel: a running cell, and every running model operation."""
        self._request("control", "interrupt_request", {}, timeout=timeout, wait_idle=False)

    def shutdown(self, timeout: float = 5.0) -> None:
        """Ask the kernel to shut down (its process exits; an embedded kernel stops)."""
        self._request(
            "control", "shutdown_request", {"restart": False}, timeout=timeout, wait_idle=False
        )
        self._subshell_id = None  # gone with the kernel

    def is_alive(self) -> bool:
        if self._embedded is not None:
            return self._embedded.is_alive()
        if self._tunnel is not None and not self._tunnel.alive():
            return False
        return bool(self.kc.hb_channel.is_beating())

    # Plumbing -------------------------------------------------------------------------------

    def _request(
        self,
        channel: str,
        msg_type: str,
        content: dict[str, Any],
        *,
        timeout: float | None,
        on_iopub: Callable[[dict[str, Any]], None] | None = None,
        subshell_id: str | None = None,
        wait_idle: bool = True,
        what: str = "",
    ) -> dict[str, Any]:
        if self._closed:
            raise KernelConnectionError("the client is closed")
        msg = self.kc.session.msg(msg_type, content)
        if subshell_id is not None:
            msg["header"]["subshell_id"] = subshell_id
        msg_id = msg["header"]["msg_id"]
        inbox = self._dispatcher.send(channel, msg)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            return self._wait(inbox, deadline, on_iopub, wait_idle, what or msg_type, timeout)
        except KeyboardInterrupt:
            if channel == "shell":
                self._stop_after_ctrl_c(msg, inbox, on_iopub, wait_idle)
            raise
        finally:
            self._dispatcher.forget(msg_id)

    def _stop_after_ctrl_c(
        self,
        msg: dict[str, Any],
        inbox: queue.Queue[tuple[str, dict[str, Any]]],
        on_iopub: Callable[[dict[str, Any]], None] | None,
        wait_idle: bool,
    ) -> None:
        """Ctrl-C (or SIGTERM/SIGHUP, raised as KeyboardInterrupt by the CLI) while waiting: a
        model request is cancelled alone (other clients' work goes on); a cell is interrupted
        as Jupyter front-ends do. Then the reply is awaited briefly."""
        try:
            if msg["header"]["msg_type"] == REQUEST_TYPE and _speaks(
                self._kernel_info, LEASES_SINCE
            ):
                self.cancel(msg["header"]["msg_id"], timeout=INTERRUPT_GRACE)
            else:
                self.interrupt(timeout=INTERRUPT_GRACE)
            self._wait(
                inbox,
                time.monotonic() + INTERRUPT_GRACE,
                on_iopub,
                wait_idle,
                "interrupted request",
                INTERRUPT_GRACE,
            )
        except (LLMSpellError, KeyboardInterrupt) as exc:
            log.debug("after Ctrl-C: %s", exc)

    def _wait(
        self,
        inbox: queue.Queue[tuple[str, dict[str, Any]]],
        deadline: float | None,
        on_iopub: Callable[[dict[str, Any]], None] | None,
        wait_idle: bool,
        what: str,
        timeout: float | None,
    ) -> dict[str, Any]:
        reply: dict[str, Any] | None = None
        idle = False
        grace_end = 0.0
        silent_since: float | None = None
        while True:
            now = time.monotonic()
            if reply is not None and (idle or not wait_idle or now >= grace_end):
                return reply
            if reply is None and deadline is not None and now >= deadline:
                raise KernelConnectionError(
                    f"no reply to {what} from the kernel within {timeout:g} s"
                )
            limit = grace_end if reply is not None else deadline
            wait = _POLL if limit is None else max(0.0, min(_POLL, limit - now))
            try:
                kind, msg = inbox.get(timeout=wait)
            except queue.Empty:
                if self._closed:
                    raise KernelConnectionError(
                        f"the client was closed while waiting for {what}"
                    ) from None
                if self._tunnel is not None and not self._tunnel.alive():
                    raise KernelConnectionError(
                        f"{self._tunnel.closed_message()} while waiting for {what}"
                    ) from None
                if reply is None and not self.is_alive():
                    # One missed heartbeat can be a busy machine; a silence is a dead kernel.
                    silent_since = silent_since or time.monotonic()
                    if time.monotonic() - silent_since > self.heartbeat_grace:
                        raise KernelConnectionError(
                            f"the kernel died while waiting for {what}"
                        ) from None
                else:
                    silent_since = None
                continue
            if kind == "reply":
                reply = msg
                grace_end = time.monotonic() + IDLE_GRACE
            elif msg["header"]["msg_type"] == "status":
                idle = idle or msg["content"].get("execution_state") == "idle"
            elif on_iopub is not None:
                on_iopub(msg)

    def _handshake(self, timeout: float) -> dict[str, Any]:
        """kernel_info until both its reply and its IOPub status arrive: then IOPub is live."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if self._tunnel is not None and not self._tunnel.alive():
                raise KernelConnectionError(self._tunnel.closed_message())
            if remaining <= 0:
                where = "" if self._tunnel is None else f" (through SSH to {self._tunnel.target})"
                raise KernelConnectionError(
                    f"the kernel of {self._connection_file}{where} did not answer within"
                    f" {timeout:g} s (is it running?)"
                )
            msg = self.kc.session.msg("kernel_info_request", {})
            msg_id = msg["header"]["msg_id"]
            inbox = self._dispatcher.send("shell", msg)
            try:
                reply: dict[str, Any] | None = None
                iopub = False
                attempt_end = time.monotonic() + min(remaining, 1.0)
                while reply is None or not iopub:
                    left = attempt_end - time.monotonic()
                    if left <= 0:
                        break
                    try:
                        kind, got = inbox.get(timeout=left)
                    except queue.Empty:
                        break
                    if kind == "reply":
                        reply = got
                    else:
                        iopub = True
                if reply is not None and iopub:
                    return dict(reply["content"])
            finally:
                self._dispatcher.forget(msg_id)

    def _create_subshell(self, timeout: float) -> str | None:
        reply = self._request(
            "control", "create_subshell_request", {}, timeout=timeout, wait_idle=False
        )
        subshell_id = reply["content"].get("subshell_id")
        return str(subshell_id) if subshell_id else None

    # Lifetime -------------------------------------------------------------------------------

    def close(self) -> None:
        """Disconnect; an embedded kernel is stopped. Safe to call twice."""
        if self._closed:
            return
        if self._subshell_id is not None and self._embedded is None and self.is_alive():
            try:
                self._request(
                    "control",
                    "delete_subshell_request",
                    {"subshell_id": self._subshell_id},
                    timeout=2.0,
                    wait_idle=False,
                )
            except LLMSpellError as exc:
                log.debug("could not delete subshell %s: %s", self._subshell_id, exc)
        self._closed = True
        self._dispatcher.stop()
        self.kc.stop_channels()
        if self._embedded is not None:
            self._embedded.stop()
        if self._tunnel is not None:
            self._tunnel.close()

    def __enter__(self) -> LLMSpellClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "embedded" if self._embedded is not None else "connected"
        return f"<LLMSpellClient {mode} {self._connection_file}>"


def _speaks(kernel_info: dict[str, Any], version: str) -> bool:
    """Whether the kernel's llmspell protocol is at least ``version``."""
    spoken = str((kernel_info.get("llmspell") or {}).get("protocol_version", "0"))
    try:
        return tuple(map(int, spoken.split("."))) >= tuple(map(int, version.split(".")))
    except ValueError:
        return False


def error_from_reply(content: dict[str, Any]) -> LLMSpellError:
    """The llmspell error an error reply names (``ename``), with its message and context."""
    ename = str(content.get("ename") or "LLMSpellError")
    evalue = str(content.get("evalue") or "")
    cls = error_class(ename)
    # A foreign exception in the kernel (a bug) keeps its name in the message.
    exc = cls(evalue if cls.__name__ == ename else f"{ename}: {evalue}")
    exc.model = content.get("model")
    exc.backend = content.get("backend")
    remote = content.get("traceback")
    if remote:
        exc.add_note("kernel traceback:\n" + "".join(str(line) for line in remote))
    return exc
