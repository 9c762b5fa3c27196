"""The llmspell error tree.

Every failure a user can meet is one of these, named for what went wrong::

    LLMSpellError
    ├── InvalidModelSpec        a model spec that does not parse or is unsafe
    ├── InvalidRequest          a malformed protocol request (wrong or missing fields)
    ├── ConfigError             a broken configuration file or value
    ├── ModelNotFound           the model is not installed / does not exist upstream
    ├── BackendUnavailable      the backend cannot be reached or is disabled
    ├── UnsupportedOperation    the backend cannot do this (e.g. `import` on Ollama)
    ├── DownloadError           a pull failed (network, offline, unknown quant, ...)
    │   └── ChecksumMismatch    the downloaded bytes are not what the source promised
    ├── ModelLoadError          a model file could not be loaded
    ├── GenerationError         generation failed
    │   └── ChatTemplateError   no chat template could be found for the model
    ├── Cancelled               the operation was interrupted by the user
    └── KernelConnectionError   the kernel cannot be reached, or died, or timed out

Foreign exceptions (httpx, huggingface_hub, llama_cpp, zmq) are translated to these at one
boundary per backend, with ``raise ... from exc``. The ``ename`` of a protocol error reply is
the class name, and :func:`error_class` maps it back on the client side.
"""

from __future__ import annotations

from typing import Any


class LLMSpellError(Exception):
    """Base of every llmspell error; carries the model and backend it concerns."""

    def __init__(
        self, message: str, *, model: str | None = None, backend: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.model = model
        self.backend = backend

    def to_dict(self) -> dict[str, Any]:
        return {
            "ename": type(self).__name__,
            "evalue": self.message,
            "model": self.model,
            "backend": self.backend,
        }


class InvalidModelSpec(LLMSpellError):
    """A model spec that does not parse, or that would name a path outside the store."""


class InvalidRequest(LLMSpellError):
    """A protocol request with missing, unknown or wrongly typed fields."""


class ConfigError(LLMSpellError):
    """A configuration file or value that is wrong; names the key and the file."""

    def __init__(self, message: str, *, key: str | None = None, path: str | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.path = path


class ModelNotFound(LLMSpellError):
    """The model is not installed (or does not exist at its source)."""


class BackendUnavailable(LLMSpellError):
    """The backend cannot be reached, is disabled, or is not installed."""


class UnsupportedOperation(LLMSpellError):
    """The backend does not support this operation."""


class DownloadError(LLMSpellError):
    """A pull failed: network, offline, unknown repository or quantization."""


class ChecksumMismatch(DownloadError):
    """Downloaded bytes do not match the size or sha256 the source announced."""


class ModelLoadError(LLMSpellError):
    """A model file exists but could not be loaded."""


class GenerationError(LLMSpellError):
    """Generation failed in the backend."""


class ChatTemplateError(GenerationError):
    """No chat template: the GGUF has none and its architecture's family is unknown."""


class Cancelled(LLMSpellError):
    """The operation was interrupted."""


class KernelConnectionError(LLMSpellError):
    """The kernel cannot be reached, died mid-request, or did not answer in time."""


_ALL: tuple[type[LLMSpellError], ...] = (
    LLMSpellError,
    InvalidModelSpec,
    InvalidRequest,
    ConfigError,
    ModelNotFound,
    BackendUnavailable,
    UnsupportedOperation,
    DownloadError,
    ChecksumMismatch,
    ModelLoadError,
    GenerationError,
    ChatTemplateError,
    Cancelled,
    KernelConnectionError,
)
_BY_NAME = {cls.__name__: cls for cls in _ALL}


def error_class(ename: str) -> type[LLMSpellError]:
    """The error class for an ``ename`` from a reply; unknown names map to the base."""
    return _BY_NAME.get(ename, LLMSpellError)
