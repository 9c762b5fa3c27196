"""``llmspell repl``: jupyter_console attached to the CLI's kernel (embedded or connected).

Two changes to the stock console: Ctrl-C during a cell interrupts it through llmspell's client
(the stock console can only interrupt kernels it started), and leaving the console never shuts
the kernel down — an embedded kernel is closed by the CLI, a connected one keeps serving others.
Importing this module imports jupyter_console; only ``repl`` does.
"""

from __future__ import annotations

import asyncio
import signal
from typing import TYPE_CHECKING, Any

from jupyter_client.consoleapp import JupyterConsoleApp
from jupyter_console.app import ZMQTerminalIPythonApp
from jupyter_console.ptshell import ZMQTerminalInteractiveShell

if TYPE_CHECKING:
    from llmspell_kernel.client import LLMSpellClient


class LLMSpellConsoleShell(ZMQTerminalInteractiveShell):  # type: ignore[misc]
    def mainloop(self) -> None:
        # The stock mainloop ends by shutting down (or "keeping alive") the kernel; the
        # kernel's lifetime belongs to llmspell, so only the loop itself is kept.
        while True:
            try:
                asyncio.run(self._main_task())
                break
            except KeyboardInterrupt:
                print("\nKeyboardInterrupt escaped interact()\n")
        if self._eventloop:
            self._eventloop.close()


class LLMSpellConsoleApp(ZMQTerminalIPythonApp):  # type: ignore[misc]
    llmspell_client: Any = None
    llmspell_simple_prompt = False

    def init_shell(self) -> None:
        JupyterConsoleApp.initialize(self)
        signal.signal(signal.SIGINT, self.handle_sigint)
        self.shell = LLMSpellConsoleShell(
            parent=self,
            manager=None,
            client=self.kernel_client,
            confirm_exit=self.confirm_exit,
            simple_prompt=self.llmspell_simple_prompt,
        )
        self.shell.own_kernel = False

    def handle_sigint(self, *args: Any) -> None:
        if self.shell._executing:
            self.llmspell_client.interrupt()
        else:
            raise KeyboardInterrupt


def run_console(client: LLMSpellClient, *, simple_prompt: bool, confirm_exit: bool) -> None:
    """Run the console on ``client``'s kernel until the user leaves it (Ctrl-D, EOF, exit)."""
    app = LLMSpellConsoleApp(confirm_exit=confirm_exit)
    app.llmspell_client = client
    app.llmspell_simple_prompt = simple_prompt
    previous = signal.getsignal(signal.SIGINT)
    try:
        app.initialize(["--existing", str(client.connection_file)])
        app.start()
    finally:
        signal.signal(signal.SIGINT, previous)
        kernel_client = getattr(app, "kernel_client", None)
        if kernel_client is not None:
            kernel_client.stop_channels()
