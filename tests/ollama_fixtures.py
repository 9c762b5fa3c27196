"""Fixtures for the Ollama backend tests: the stand-in server and a backend pointed at it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from providers.config import Config
from providers.ollama import OllamaBackend
from tests.ollama_standin import GemmaRunner, OllamaStandin, ScriptedRunner


def ollama_config(url: str, **settings: Any) -> Config:
    """A config whose Ollama provider points at ``url`` (``settings`` go in its table)."""
    return Config.from_dict({"providers": {"ollama": {"base_url": url, **settings}}})


@pytest.fixture(scope="session")
def gemma_runner(gemma_path: Path) -> GemmaRunner:
    """Generation for the stand-in; the model loads on the first generation of the session."""
    return GemmaRunner(gemma_path)


@pytest.fixture
def standin(gemma_runner: GemmaRunner) -> Iterator[OllamaStandin]:
    server = OllamaStandin(gemma_runner, model_size=gemma_runner.model_path.stat().st_size)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def scripted_standin() -> Iterator[OllamaStandin]:
    """The stand-in with scripted generation (no model): for tests of the protocol alone."""
    server = OllamaStandin(ScriptedRunner())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def ollama(standin: OllamaStandin) -> Iterator[OllamaBackend]:
    backend = OllamaBackend(ollama_config(standin.url, timeout_seconds=30))
    try:
        yield backend
    finally:
        backend.close()
