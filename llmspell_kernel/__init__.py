"""llmspell's kernel: IPython plus the model protocol, its client, and kernel processes.

Importing this package is cheap (no ipykernel, no zmq): the names below are loaded on first
use, so that a CLI's ``--help`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .client import ExecuteResult, LLMSpellClient
    from .kernel import LLMSpellKernel
    from .process import start_kernel, stop_all, stop_kernel
    from .protocol import PROTOCOL_VERSION
    from .records import KernelRecord, list_kernels

_LAZY: dict[str, str] = {
    "ExecuteResult": "client",
    "KernelRecord": "records",
    "LLMSpellClient": "client",
    "LLMSpellKernel": "kernel",
    "PROTOCOL_VERSION": "protocol",
    "list_kernels": "records",
    "start_kernel": "process",
    "stop_all": "process",
    "stop_kernel": "process",
}

__all__ = [
    "PROTOCOL_VERSION",
    "ExecuteResult",
    "KernelRecord",
    "LLMSpellClient",
    "LLMSpellKernel",
    "__version__",
    "list_kernels",
    "start_kernel",
    "stop_all",
    "stop_kernel",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'llmspell_kernel' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
