"""The state of one CLI invocation: global options, output, and the kernel client.

The client is opened on first use, so commands that need no kernel (``--help``, ``kernel list``,
``model install-ollama``) never import the kernel's code. Without ``--connect`` the kernel is
embedded in this process; with it, the CLI talks to a running kernel. Both go through the same
:class:`~llmspell_kernel.client.LLMSpellClient`, so every command behaves the same in both modes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from providers.errors import KernelConnectionError

from .output import Output

if TYPE_CHECKING:
    from llmspell_kernel.client import LLMSpellClient
    from llmspell_kernel.conversation_log import ConversationLog
    from llmspell_kernel.queries import LocalQueries, Queries
    from providers.config import Config

log = logging.getLogger(__name__)


@dataclass
class CliState:
    output: Output
    connect: str | None = None
    ssh: str | None = None
    ssh_key: Path | None = None
    config: Path | None = None
    debug: bool = False
    no_log: bool = False
    _client: LLMSpellClient | None = field(default=None, repr=False)
    _config: Config | None = field(default=None, repr=False)
    _local: LocalQueries | None = field(default=None, repr=False)

    @property
    def json_mode(self) -> bool:
        return self.output.json_mode

    def client(self) -> LLMSpellClient:
        """The kernel client, opened on first use (embedded kernel or ``--connect``)."""
        if self._client is None:
            from llmspell_kernel.client import LLMSpellClient

            if self.connect is not None or self.ssh is not None:
                if self.config is not None:
                    self.output.warn(
                        "--config is ignored with --connect (the running kernel has its own)"
                    )
                self._client = self._connect()
            else:
                log.debug("starting an embedded kernel (config %s)", self.config)
                self._client = LLMSpellClient.embedded(self.config)
        return self._client

    def _connect(self) -> LLMSpellClient:
        """The client of the kernel ``--connect`` (and ``--ssh``) name."""
        from llmspell_kernel.client import LLMSpellClient
        from llmspell_kernel.tunnel import SSHTarget, remote_spec

        if self.ssh is not None:
            target, name = SSHTarget.parse(self.ssh, self.ssh_key), self.connect
        else:
            assert self.connect is not None
            remote = remote_spec(self.connect)
            if remote is None:
                log.debug("connecting to kernel %s", self.connect)
                return LLMSpellClient.connect(self.connect)
            found, name = remote
            target = SSHTarget(found.destination, found.port, self.ssh_key)
        log.debug("connecting to kernel %s on %s through SSH", name or "(newest)", target)
        return LLMSpellClient.connect_ssh(target, name)

    def model(self, spec: str | None) -> str:
        """``spec`` (``-m``), else ``$LLMSPELL_MODEL``, else ``default_model`` of the config;
        a usage error when none names a model."""
        if spec is not None:
            return spec
        from providers.config import MODEL_ENV

        chosen = self.local_config().model_default()
        if chosen is None:
            raise typer.BadParameter(
                f"no model: pass -m SPEC, or set {MODEL_ENV} or default_model in the config",
                param_hint="--model",
            )
        return chosen

    def conversation_log(self) -> ConversationLog | None:
        """The conversation log of this CLI's config; None when it is off (``--no-log``
        sets :attr:`no_log`)."""
        if self.no_log:
            return None
        from llmspell_kernel.conversation_log import ConversationLog

        return ConversationLog.of(self.local_config())

    def local_config(self) -> Config:
        """This CLI's configuration (``--config``, else ``$LLMSPELL_CONFIG``, else the user
        file), read once; with ``--connect`` the kernel has its own."""
        if self._config is None:
            from providers.config import Config  # pydantic: not on `--help`'s path

            self._config = Config.load(self.config)
        return self._config

    def kernel(self) -> LLMSpellClient:
        """The client of an llmspell kernel, for its typed model commands (``list()``,
        ``pull()``, ``generate()``...); another kind of kernel is refused here, since it would
        never answer a ``model_request``."""
        client = self.client()
        if "llmspell" not in client.kernel_info:
            raise KernelConnectionError(
                f"the kernel of {client.connection_file} is not an llmspell kernel"
                f" ({client.kernel_info.get('implementation', 'unknown')}): model commands"
                " need one (start it with 'llmspell kernel start')"
            )
        return client

    def queries(self) -> Queries:
        """Where the read-only model commands (``list``, ``status``, ``info``, ``available``,
        ``ps``) go: the kernel with ``--connect`` (or one already started), else the kernel's
        own handlers in this process, with the config an embedded kernel would load — the same
        answers, without starting a kernel only to ask it (ipykernel, ZeroMQ and an IPython
        shell are most of a ``model list``)."""
        if self.connect is not None or self.ssh is not None or self._client is not None:
            return self.kernel()
        if self._local is None:
            from llmspell_kernel.queries import LocalQueries

            log.debug("answering in this process, without a kernel (config %s)", self.config)
            self._local = LocalQueries(self.config)
        return self._local

    def close(self) -> None:
        local, self._local = self._local, None
        if local is not None:
            local.close()
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # closing must not turn a finished command into a failure
                log.warning("closing the kernel client failed", exc_info=True)


def state(ctx: typer.Context) -> CliState:
    """The :class:`CliState` the app callback put on the root context."""
    obj = ctx.find_root().obj
    if not isinstance(obj, CliState):
        raise RuntimeError("llmspell commands must run under the llmspell app")
    return obj
