"""The GGUF backend (llama-cpp-python) and its model store.

``LlamaCppBackend(config)`` implements :class:`providers.base.Backend`. The kernel never imports
llama_cpp: each loaded model runs in a runner process (:mod:`.runner`). The backend is imported
on first use, so that a runner (``python -m providers.llamacpp.runner_process``), which needs
only the generation code, does not import the store, the config and pydantic at its start.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..config import Config
    from ..types import ModelInfo
    from .backend import LlamaCppBackend

__all__ = ["LlamaCppBackend", "import_model"]

# A library logs, the application decides where it goes: without a handler here, Python's
# "last resort" handler would print llama.cpp's warnings (a runner's log) to stderr.
logging.getLogger(__name__).addHandler(logging.NullHandler())


def __getattr__(name: str) -> Any:
    if name == "LlamaCppBackend":
        from .backend import LlamaCppBackend

        return LlamaCppBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def import_model(
    path: str | Path, name: str | None = None, *, config: Config | None = None, link: bool = False
) -> ModelInfo:
    """Register the GGUF at ``path`` in the store of ``config`` (default: ``Config.load()``)."""
    from ..config import Config
    from .backend import LlamaCppBackend

    backend = LlamaCppBackend(config if config is not None else Config.load())
    try:
        return backend.import_model(Path(path), name, link=link)
    finally:
        backend.close()
