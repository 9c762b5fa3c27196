"""The read-only model commands (``list``, ``status``, ``info``, ``available``, ``ps``), typed,
once for every way of running them: :class:`~llmspell_kernel.client.LLMSpellClient` sends them
to a kernel; :class:`LocalQueries` runs the kernel's own handlers in this process, without a
kernel, for a CLI that would otherwise start one only to ask it (``llmspell model list``
without ``--connect``: no ipykernel, no ZeroMQ, no IPython shell).

This module imports neither jupyter_client nor ipykernel.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from providers.config import Config
from providers.manager import ProviderManager

from .commands import run_local
from .protocol.requests import (
    AvailableRequest,
    InfoRequest,
    ListRequest,
    PsRequest,
    Request,
    StatusRequest,
    validate,
)
from .protocol.results import (
    AvailableResult,
    InfoResult,
    ListResult,
    PsResult,
    Result,
    StatusResult,
)

R = TypeVar("R", bound=Result)


class Queries:
    """The typed read-only commands over :meth:`send`, which a subclass provides."""

    def send(self, request: Request, result: type[R], *, timeout: float | None = None) -> R:
        raise NotImplementedError

    def list(self, backend: str | None = None, *, timeout: float | None = None) -> ListResult:
        """Installed models of every backend, or of ``backend``."""
        request = validate(ListRequest, {"backend": backend})
        return self.send(request, ListResult, timeout=timeout)

    def status(self, backend: str | None = None, *, timeout: float | None = None) -> StatusResult:
        """Each backend's health."""
        request = validate(StatusRequest, {"backend": backend})
        return self.send(request, StatusResult, timeout=timeout)

    def info(self, model: str, *, timeout: float | None = None) -> InfoResult:
        return self.send(validate(InfoRequest, {"model": model}), InfoResult, timeout=timeout)

    def available(
        self,
        backend: str | None = None,
        *,
        recommended: bool = False,
        timeout: float | None = None,
    ) -> AvailableResult:
        request = validate(AvailableRequest, {"backend": backend, "recommended": recommended})
        return self.send(request, AvailableResult, timeout=timeout)

    def ps(self, *, timeout: float | None = None) -> PsResult:
        return self.send(validate(PsRequest, {}), PsResult, timeout=timeout)


class LocalQueries(Queries):
    """The read-only commands answered in this process by the kernel's handlers, with a
    provider manager of the config at ``config_path`` (what an embedded kernel would load; a
    broken config raises :class:`~providers.errors.ConfigError` here, as it would there).
    Nothing is loaded, so ``ps`` lists what an embedded kernel would: nothing."""

    def __init__(self, config_path: str | Path | None = None) -> None:
        self.manager = ProviderManager(Config.load(config_path))

    def send(self, request: Request, result: type[R], *, timeout: float | None = None) -> R:
        answer = run_local(self.manager, request)
        assert isinstance(answer, result), f"{request.command} answered {type(answer).__name__}"
        return answer

    def close(self) -> None:
        self.manager.close()
