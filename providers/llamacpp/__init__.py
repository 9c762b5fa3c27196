"""The embedded GGUF backend (llama-cpp-python) and its model store.

``LlamaCppBackend(config)`` implements :class:`providers.base.Backend`. Importing this package
does not import llama_cpp; that happens on the first load, generation or metadata read.
"""

from __future__ import annotations

from pathlib import Path

from ..config import Config
from ..types import ModelInfo
from .backend import LlamaCppBackend

__all__ = ["LlamaCppBackend", "import_model"]


def import_model(
    path: str | Path, name: str | None = None, *, config: Config | None = None, link: bool = False
) -> ModelInfo:
    """Register the GGUF at ``path`` in the store of ``config`` (default: ``Config.load()``)."""
    backend = LlamaCppBackend(config if config is not None else Config.load())
    try:
        return backend.import_model(Path(path), name, link=link)
    finally:
        backend.close()
