# mypy: disallow-untyped-calls=False
"""The kernel application: ``python -m llmspell_kernel -f {connection_file}``."""

from __future__ import annotations

import threading
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


def main(argv: list[str] | None = None) -> None:
    """Run the kernel in this process until it is shut down."""
    LLMSpellKernelApp.launch_instance(argv=argv)
