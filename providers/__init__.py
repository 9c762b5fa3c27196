"""llmspell's provider layer: model specs, config, errors and the backends.

Imports no Jupyter code. Backends (``providers.llamacpp``, ``providers.ollama``) are imported
lazily by :class:`ProviderManager`, and the names below are loaded on first use, so importing
this package (or only ``providers.errors``, as the CLI does) stays cheap: no pydantic, no
platformdirs until a config is needed.
"""

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from .base import Backend
    from .config import Config
    from .errors import (
        BackendUnavailable,
        Cancelled,
        ChatTemplateError,
        ChecksumMismatch,
        ConfigError,
        DownloadError,
        GenerationError,
        InvalidModelSpec,
        InvalidRequest,
        KernelConnectionError,
        LLMSpellError,
        ModelLoadError,
        ModelNotFound,
        UnsupportedOperation,
        error_class,
    )
    from .manager import ModelListing, ProviderManager
    from .options import GenerationOptions, Message, generation_options
    from .spec import BACKENDS, ModelSpec, normalize_backend, parse_spec
    from .types import (
        AvailableModel,
        BackendHealth,
        Chunk,
        ChunkStream,
        LoadedModel,
        Metrics,
        ModelInfo,
        Progress,
        ProgressCallback,
        PullResult,
        Removed,
    )

_EXPORTS: dict[str, str] = {
    "BACKENDS": "spec",
    "AvailableModel": "types",
    "Backend": "base",
    "BackendHealth": "types",
    "BackendUnavailable": "errors",
    "Cancelled": "errors",
    "ChatTemplateError": "errors",
    "ChecksumMismatch": "errors",
    "Chunk": "types",
    "ChunkStream": "types",
    "Config": "config",
    "ConfigError": "errors",
    "DownloadError": "errors",
    "GenerationError": "errors",
    "GenerationOptions": "options",
    "InvalidModelSpec": "errors",
    "InvalidRequest": "errors",
    "KernelConnectionError": "errors",
    "LLMSpellError": "errors",
    "LoadedModel": "types",
    "Message": "options",
    "Metrics": "types",
    "ModelInfo": "types",
    "ModelListing": "manager",
    "ModelLoadError": "errors",
    "ModelNotFound": "errors",
    "ModelSpec": "spec",
    "Progress": "types",
    "ProgressCallback": "types",
    "ProviderManager": "manager",
    "PullResult": "types",
    "Removed": "types",
    "UnsupportedOperation": "errors",
    "error_class": "errors",
    "generation_options": "options",
    "normalize_backend": "spec",
    "parse_spec": "spec",
}

__all__ = [
    "BACKENDS",
    "AvailableModel",
    "Backend",
    "BackendHealth",
    "BackendUnavailable",
    "Cancelled",
    "ChatTemplateError",
    "ChecksumMismatch",
    "Chunk",
    "ChunkStream",
    "Config",
    "ConfigError",
    "DownloadError",
    "GenerationError",
    "GenerationOptions",
    "InvalidModelSpec",
    "InvalidRequest",
    "KernelConnectionError",
    "LLMSpellError",
    "LoadedModel",
    "Message",
    "Metrics",
    "ModelInfo",
    "ModelListing",
    "ModelLoadError",
    "ModelNotFound",
    "ModelSpec",
    "Progress",
    "ProgressCallback",
    "ProviderManager",
    "PullResult",
    "Removed",
    "UnsupportedOperation",
    "error_class",
    "generation_options",
    "normalize_backend",
    "parse_spec",
]


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'providers' has no attribute {name!r}")
    value = getattr(_importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
