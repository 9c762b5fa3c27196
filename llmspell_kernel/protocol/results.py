"""The ok result of every ``model_request`` command, as one pydantic model each.

The kernel's command handlers return these; the reply is ``{"status": "ok", "command": C,
...result}``; :meth:`LLMSpellClient <llmspell_kernel.client.LLMSpellClient>`'s typed methods
parse a reply back into the same model. The value objects inside (``ModelInfo``,
``BackendHealth``...) are the provider layer's own dataclasses, so a result says exactly what a
backend said.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from providers.types import (
    AvailableModel,
    BackendHealth,
    EmbedMetrics,
    LoadedModel,
    Metrics,
    ModelInfo,
)


class Result(BaseModel):
    """The result part of an ok ``model_reply``."""

    # A reply from a newer kernel may carry fields this client does not know: keep working.
    model_config = ConfigDict(extra="ignore", frozen=True)

    command: ClassVar[str]

    def content(self) -> dict[str, Any]:
        """The JSON-ready fields of the reply."""
        return self.model_dump(mode="json")


class ModelRow(BaseModel):
    """One installed model in a ``list`` reply: the short form of ``ModelInfo``."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str
    backend: str
    size_bytes: int | None = None
    quantization: str | None = None
    modified_at: str | None = Field(default=None, description="ISO 8601, UTC.")
    loaded: bool = False
    family: str | None = None
    parameter_size: str | None = None

    @classmethod
    def of(cls, info: ModelInfo) -> ModelRow:
        return cls(
            id=info.id,
            backend=info.backend,
            size_bytes=info.size_bytes,
            quantization=info.quantization,
            modified_at=info.modified_at,
            loaded=info.loaded,
            family=info.family,
            parameter_size=info.parameter_size,
        )


class ListResult(Result):
    command: ClassVar[str] = "list"
    models: list[ModelRow]
    errors: dict[str, str] = Field(
        default_factory=dict, description="Backends that could not be asked, with the reason."
    )


class StatusResult(Result):
    command: ClassVar[str] = "status"
    backends: dict[str, BackendHealth]


class InfoResult(Result):
    command: ClassVar[str] = "info"
    model: ModelInfo


class PullResult(Result):
    command: ClassVar[str] = "pull"
    model: ModelInfo
    bytes: int = Field(description="Bytes downloaded by this pull.")
    resumed_bytes: int = Field(
        default=0,
        description="Bytes an interrupted earlier pull had downloaded, kept and not downloaded"
        " again (llamacpp). Since 1.1.",
    )
    seconds: float


class RemoveResult(Result):
    command: ClassVar[str] = "remove"
    removed: str = Field(description="The id of the removed model.")
    unfinished_download_bytes: int | None = Field(
        default=None,
        description="Set when only an unfinished download was deleted: its size.",
    )


class AvailableResult(Result):
    command: ClassVar[str] = "available"
    models: list[AvailableModel]


class ImportResult(Result):
    command: ClassVar[str] = "import"
    model: ModelInfo


class CopyResult(Result):
    command: ClassVar[str] = "copy"
    model: ModelInfo = Field(description="The model under its new name.")


class LoadResult(Result):
    command: ClassVar[str] = "load"
    model: LoadedModel


class UnloadResult(Result):
    command: ClassVar[str] = "unload"
    unloaded: str = Field(description="The id of the unloaded model.")
    was_loaded: bool | None = Field(
        default=None,
        description="False when the model was not loaded (nothing was freed). Since 1.1;"
        " absent (null) from older kernels.",
    )


class RequestRow(BaseModel):
    """A model request the kernel is working on (``ps``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    request: str = Field(description="Its msg_id.")
    command: str
    model: str | None = None
    session: str = Field(description="The Jupyter session of the client that sent it.")
    state: Literal["running", "queued"]
    ahead: int | None = Field(default=None, description="Requests ahead of a queued one.")
    seconds: float = Field(description="Since the kernel received it.")


class PsResult(Result):
    command: ClassVar[str] = "ps"
    models: list[LoadedModel]
    requests: list[RequestRow] = Field(
        default_factory=list, description="Running and queued model requests, oldest first."
    )


class GenerateResult(Result):
    command: ClassVar[str] = "generate"
    model: str = Field(description="The resolved spec, e.g. gemma3-270m@llamacpp.")
    text: str
    metrics: Metrics


class CancelResult(Result):
    command: ClassVar[str] = "cancel"
    cancelled: bool = Field(description="Whether a running request was asked to stop.")
    requests: list[str] = Field(default_factory=list, description="The msg_ids cancelled.")


class LeaseResult(Result):
    command: ClassVar[str] = "lease"
    seconds: float
    running: list[str] = Field(description="This client's model requests still running.")


class EmbedResult(Result):
    command: ClassVar[str] = "embed"
    model: str = Field(description="The resolved spec, e.g. gemma3-270m@llamacpp.")
    embeddings: list[list[float]] = Field(description="One vector per input, in order.")
    dimensions: int = Field(description="The length of each vector.")
    metrics: EmbedMetrics


RESULTS: dict[str, type[Result]] = {
    model.command: model
    for model in (
        ListResult,
        StatusResult,
        InfoResult,
        PullResult,
        RemoveResult,
        AvailableResult,
        ImportResult,
        CopyResult,
        LoadResult,
        UnloadResult,
        PsResult,
        GenerateResult,
        CancelResult,
        LeaseResult,
        EmbedResult,
    )
}
"""The result model of every command, by name."""
