"""llmspell's provider layer: model specs, config, errors and the backends.

Imports no Jupyter code. Backends (``providers.llamacpp``, ``providers.ollama``) are imported
lazily by :class:`ProviderManager`, so importing this package stays cheap.
"""

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
from .spec import BACKENDS, ModelSpec, normalize_backend, parse_spec
from .types import (
    AvailableModel,
    BackendHealth,
    Chunk,
    GenerationOptions,
    LoadedModel,
    Message,
    Metrics,
    ModelInfo,
    Progress,
    ProgressCallback,
    PullResult,
)

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
    "UnsupportedOperation",
    "error_class",
    "normalize_backend",
    "parse_spec",
]
