# mypy: disallow-untyped-calls=False
"""The kernel application: ``python -m llmspell_kernel -f {connection_file}``."""

from __future__ import annotations

import signal
import threading
from functools import partial
from types import FrameType
from typing import Any

from ipykernel.kernelapp import IPKernelApp
from traitlets import Type

LOOPBACK = ("127.0.0.1", "localhost", "::1")


class LLMSpellKernelApp(IPKernelApp):
    name = "llmspell-kernel"
    description = "The llmspell kernel: IPython plus local LLMs (model_request protocol)."
    # IPKernelApp's "install" subcommand would install ipykernel's python3 spec; ours is
    # `llmspell kernel install` (llmspell_kernel.kernelspec).
    subcommands: dict[str, Any] = {}  # noqa: RUF012 (traitlets reads a class attribute)
    kernel_class = Type(
        "llmspell_kernel.kernel.LLMSpellKernel", klass="ipykernel.kernelbase.Kernel"
    ).tag(config=True)

    def initialize(self, argv: Any = None) -> None:
        super().initialize(argv)
        if self.subapp is None and self.transport == "tcp" and self.ip not in LOOPBACK:
            self.log.warning(
                "llmspell kernel listening on %s: anyone who can reach this address and "
                "read the connection file's key can run code here",
                self.ip,
            )

    def init_signal(self) -> None:
        # Signals can only be set up on the main thread; an embedded kernel runs elsewhere.
        if threading.current_thread() is threading.main_thread():
            super().init_signal()
            # What systemd, Docker, CI and a closed terminal send: a clean shutdown (running
            # model requests cancelled, backends closed, connection file removed), not death.
            for signum in (signal.SIGTERM, signal.SIGHUP):
                signal.signal(signum, self._shut_down_on_signal)

    def _shut_down_on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.log.warning("%s: shutting down", signal.Signals(signum).name)
        kernel = self.kernel
        if kernel is not None:
            kernel.cancel_operations()
            kernel.io_loop.add_callback_from_signal(partial(_shut_down, kernel))

    def log_connection_info(self) -> None:
        """ipykernel's, without the note it prints for the ``ipython kernel`` entry point
        ("Ctrl-C will not work"), which is wrong for llmspell (``llmspell kernel start``
        stops on Ctrl-C, SIGTERM and SIGHUP)."""
        handle = self.parent_handle
        self.parent_handle = 1  # ipykernel prints its note only without a parent handle
        try:
            super().log_connection_info()
        finally:
            self.parent_handle = handle


async def _shut_down(kernel: Any) -> None:
    """What a shutdown_request does, without a client to answer."""
    await kernel.do_shutdown(False)
    await kernel._at_shutdown()
    if kernel.control_stream:
        loop = kernel.control_stream.io_loop
        loop.add_callback(loop.stop)
    kernel.io_loop.add_callback(kernel.io_loop.stop)


def main(argv: list[str] | None = None) -> None:
    """Run the kernel in this process until it is shut down."""
    LLMSpellKernelApp.launch_instance(argv=argv)
