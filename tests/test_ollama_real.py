"""Opt-in: the Ollama backend against a real Ollama server.

Set ``LLMSPELL_TEST_OLLAMA_URL`` (e.g. ``http://127.0.0.1:11434``) to run it; optionally
``LLMSPELL_TEST_OLLAMA_MODEL`` to pick the model to generate with (default: the smallest one
installed). Nothing is pulled or removed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from providers.errors import ModelNotFound
from providers.ollama import OllamaBackend
from providers.spec import ModelSpec
from providers.types import GenerationOptions, Message
from tests.ollama_fixtures import ollama_config

URL = os.environ.get("LLMSPELL_TEST_OLLAMA_URL")
pytestmark = [
    pytest.mark.skipif(
        not URL, reason="set LLMSPELL_TEST_OLLAMA_URL to test against a real Ollama server"
    ),
    pytest.mark.timeout(300),
]


@pytest.fixture
def real() -> Iterator[OllamaBackend]:
    assert URL is not None
    backend = OllamaBackend(ollama_config(URL))
    try:
        health = backend.health()
        if not health.available:
            pytest.fail(f"LLMSPELL_TEST_OLLAMA_URL={URL} is set but unusable: {health.reason}")
        yield backend
    finally:
        backend.close()


def _model(backend: OllamaBackend) -> ModelSpec:
    chosen = os.environ.get("LLMSPELL_TEST_OLLAMA_MODEL")
    if chosen:
        return ModelSpec.parse(chosen)
    models = [m for m in backend.list_models() if m.size_bytes]
    if not models:
        pytest.skip(f"the Ollama at {URL} has no models installed")
    return ModelSpec.parse(min(models, key=lambda m: m.size_bytes or 0).id)


def test_real_status_list_info_ps(real: OllamaBackend) -> None:
    health = real.health()
    assert health.version
    models = real.list_models()
    assert len(models) == health.models
    if models:
        info = real.info(ModelSpec.parse(models[0].id))
        assert info.id == models[0].id and info.details["capabilities"] is not None
    assert isinstance(real.loaded(), list)
    with pytest.raises(ModelNotFound):
        real.info(ModelSpec.parse("llmspell-no-such-model:0b"))


def test_real_chat_streams_with_metrics(real: OllamaBackend) -> None:
    spec = _model(real)
    chunks = list(
        real.chat(spec, [Message("user", "Say hello.")], GenerationOptions(max_tokens=16, seed=1))
    )
    final = chunks[-1]
    assert final.done and final.metrics is not None
    assert final.metrics.generated_tokens > 0
    assert final.metrics.tokens_per_second is not None
