# ipykernel is only partly annotated: calls into it are untyped.
# mypy: disallow-untyped-calls=False
"""An llmspell kernel on a background thread of the host process (the CLI's default mode).

It is the real kernel with real ZMQ sockets on 127.0.0.1 and a 0600 connection file in a
private temporary directory, so the same client code talks to it as to a remote kernel.

The host keeps its terminal: ``sys.stdout``/``sys.stderr`` become a thread-aware proxy that
sends what the kernel's threads write (code run in cells) to IOPub, and what every other
thread writes to the host's original streams. Signals cannot reach the kernel's thread, so
interrupts only cancel model operations, cooperatively; the host process is never signalled.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO, cast

from traitlets.config import Config as TraitletsConfig

from providers.config import Config
from providers.errors import KernelConnectionError
from providers.leftovers import owned_name, remove_orphans

from .kernelapp import LLMSpellKernelApp

EMBEDDED_PREFIX = "llmspell-embedded-"
"""The temporary folder of an embedded kernel: its connection file, named for its process."""


class ThreadRoutedStream:
    """A text stream that writes to ``kernel`` on the kernel's threads, else to ``host``."""

    def __init__(self, host: TextIO, kernel: Any, is_kernel_thread: Callable[[], bool]) -> None:
        self.host = host
        self.kernel = kernel
        self._is_kernel_thread = is_kernel_thread

    def _target(self) -> Any:
        return self.kernel if self._is_kernel_thread() else self.host

    def write(self, text: str) -> int:
        return int(self._target().write(text) or 0)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._target().flush()

    def isatty(self) -> bool:
        return bool(self._target().isatty())

    def set_parent(self, parent: Any) -> None:
        self.kernel.set_parent(parent)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target(), name)


class EmbeddedKernelApp(LLMSpellKernelApp):
    """The kernel app adapted to living on a thread of someone else's process."""

    def init_io(self) -> None:
        from ipykernel.displayhook import ZMQDisplayHook
        from ipykernel.iostream import OutStream
        from ipykernel.subshell import SubshellThread

        kernel_thread = threading.current_thread()

        def is_kernel_thread() -> bool:
            current = threading.current_thread()
            return current is kernel_thread or isinstance(current, SubshellThread)

        self._host_io = (sys.stdout, sys.stderr)
        streams = []
        for name, host in (("stdout", sys.stdout), ("stderr", sys.stderr)):
            out = OutStream(self.session, self.iopub_thread, name, watchfd=False)
            streams.append(ThreadRoutedStream(host, out, is_kernel_thread))
        self._routed = streams
        sys.stdout, sys.stderr = cast(TextIO, streams[0]), cast(TextIO, streams[1])
        self.displayhook = ZMQDisplayHook(self.session, self.iopub_socket)

    def reset_io(self) -> None:
        routed: list[ThreadRoutedStream] | None = getattr(self, "_routed", None)
        if routed is None:
            return
        # Put back what the host had, unless the host has replaced our proxies since.
        if sys.stdout is routed[0]:
            sys.stdout = self._host_io[0]
        if sys.stderr is routed[1]:
            sys.stderr = self._host_io[1]
        for stream in routed:
            stream.kernel.close()
        del self._routed

    def init_crash_handler(self) -> None:
        # The host's excepthook is the host's business.
        pass

    def configure_tornado_logger(self) -> None:
        pass


class EmbeddedKernel:
    """A running embedded kernel: its thread, app and connection file."""

    def __init__(self, connection_file: Path, directory: Path) -> None:
        self.connection_file = connection_file
        self._directory = directory
        self._thread: threading.Thread | None = None
        self._app: EmbeddedKernelApp | None = None
        self._loop: Any = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @classmethod
    def start(
        cls, config_path: str | Path | None = None, *, timeout: float = 30.0
    ) -> EmbeddedKernel:
        """Start the kernel thread and wait until its sockets are bound.

        A broken configuration raises :class:`ConfigError` here, before anything starts.
        """
        Config.load(config_path)
        # The connection files (with their keys) of embedded kernels whose CLI was killed.
        remove_orphans(Path(tempfile.gettempdir()), f"{EMBEDDED_PREFIX}*", EMBEDDED_PREFIX)
        directory = Path(tempfile.gettempdir()) / owned_name(EMBEDDED_PREFIX)
        directory.mkdir(mode=0o700)
        kernel = cls(directory / "llmspell-embedded.json", directory)
        thread = threading.Thread(
            target=kernel._run,
            args=(None if config_path is None else str(config_path),),
            name="llmspell-embedded-kernel",
            daemon=True,
        )
        kernel._thread = thread
        thread.start()
        if not kernel._ready.wait(timeout):
            kernel.stop()
            raise KernelConnectionError(f"the embedded kernel did not start within {timeout:g} s")
        if kernel._error is not None:
            kernel.stop()
            raise KernelConnectionError(
                f"the embedded kernel failed to start: {kernel._error}"
            ) from kernel._error
        return kernel

    def _run(self, config_path: str | None) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        app: EmbeddedKernelApp | None = None
        try:
            settings = TraitletsConfig()
            settings.LLMSpellKernel.signal_interrupts = False
            if config_path is not None:
                settings.LLMSpellKernel.config_path = config_path
            app = EmbeddedKernelApp(
                config=settings,
                connection_file=str(self.connection_file),
                ip="127.0.0.1",
                capture_fd_output=False,
                log_level=logging.CRITICAL,
            )
            host_environ = dict(os.environ)
            app.initialize([])
            # IPython's kernel shell forces colours and a pager on "its" process (TERM,
            # FORCE_COLOR, PAGER...) and the app sets MPLBACKEND: here that process is the
            # host, whose own output must stay as it was (plain text into a pipe).
            _restore_environ(host_environ)
            self._app = app
            from tornado.ioloop import IOLoop

            self._loop = IOLoop.current()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            if app is not None:
                self._cleanup(app)
            return
        self._ready.set()
        try:
            app.start()
        finally:
            self._cleanup(app)
            loop.close()

    def _cleanup(self, app: EmbeddedKernelApp) -> None:
        kernel = getattr(app, "kernel", None)
        shell = getattr(kernel, "shell", None)
        if kernel is not None:
            kernel.cancel_operations()
            kernel.manager.close()
        if shell is not None:
            # What IPython would do at interpreter exit, done now: close the history
            # database, give the host back its sys.modules["__main__"].
            shell.atexit_operations()
            atexit.unregister(shell.atexit_operations)
            shell.cleanup()
        # ipykernel leaves tasks pending on the loops of its threads (a real kernel process
        # exits right after); here the host lives on and would print "Task was destroyed but
        # it is pending!" when they are collected.
        for owner in (app.control_thread, app.iopub_thread, app.shell_channel_thread):
            loop = getattr(owner, "io_loop", None)
            thread = getattr(owner, "thread", owner)  # IOPubThread wraps its Thread
            if loop is not None and isinstance(thread, threading.Thread) and thread.is_alive():
                _cancel_tasks_on(loop)
        _cancel_tasks_here()
        app.close()
        atexit.unregister(app.close)
        atexit.unregister(app.cleanup_connection_file)
        app.cleanup_connection_file()
        # ipykernel and IPython keep singletons; a later embedded kernel must get new ones.
        if kernel is not None:
            type(kernel).clear_instance()
        if shell is not None:
            type(shell).clear_instance()

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the kernel and wait for its thread; removes the connection file."""
        loop = self._loop
        if loop is not None and self.is_alive():
            app = self._app
            if app is not None and getattr(app, "kernel", None) is not None:
                app.kernel.cancel_operations()
            loop.add_callback(loop.stop)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        shutil.rmtree(self._directory, ignore_errors=True)


async def _cancel_all_tasks() -> None:
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _cancel_tasks_on(io_loop: Any, timeout: float = 2.0) -> None:
    """Cancel every task of another thread's tornado loop and wait until they are done."""
    done = threading.Event()

    async def cancel() -> None:
        try:
            await _cancel_all_tasks()
        finally:
            done.set()

    io_loop.add_callback(cancel)
    done.wait(timeout)


def _cancel_tasks_here() -> None:
    loop = asyncio.get_event_loop()
    if not loop.is_closed() and not loop.is_running():
        loop.run_until_complete(_cancel_all_tasks())


def _restore_environ(saved: dict[str, str]) -> None:
    for name in set(os.environ) - set(saved):
        del os.environ[name]
    for name, value in saved.items():
        if os.environ.get(name) != value:
            os.environ[name] = value
