"""With Ollama down, ProviderManager still serves the llamacpp models and says why Ollama is not."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from providers.config import Config
from providers.errors import BackendUnavailable
from providers.manager import ProviderManager
from providers.types import GenerationOptions
from tests.isolation import closed_port_url

MODEL_ID = "gemma3-270m"


@pytest.fixture
def manager(tmp_path: Path, gemma_path: Path) -> Iterator[tuple[ProviderManager, str]]:
    url = closed_port_url()
    config = Config.from_dict(
        {
            "providers": {
                "ollama": {"base_url": url},
                "llamacpp": {"options": {"model_directory": str(tmp_path / "models")}},
            }
        }
    )
    manager = ProviderManager(config)
    try:
        llamacpp = manager.backend("llamacpp")
        llamacpp.import_model(gemma_path, MODEL_ID, link=True)  # type: ignore[call-arg]
        yield manager, url
    finally:
        manager.close()


def test_list_keeps_llamacpp_models_and_reports_ollama_down(
    manager: tuple[ProviderManager, str],
) -> None:
    providers, url = manager
    listing = providers.list_models()
    assert [(m.id, m.backend) for m in listing.models] == [(MODEL_ID, "llamacpp")]
    assert set(listing.errors) == {"ollama"}
    assert f"Ollama is not running at {url}" in listing.errors["ollama"]
    assert "ollama serve" in listing.errors["ollama"]

    with pytest.raises(BackendUnavailable, match="not running at"):
        providers.list_models("ollama")


def test_status_reports_ollama_unavailable_with_the_reason(
    manager: tuple[ProviderManager, str],
) -> None:
    providers, url = manager
    status = providers.status()
    assert status["llamacpp"].available and status["llamacpp"].models == 1
    ollama = status["ollama"]
    assert ollama.available is False
    assert ollama.reason is not None and url in ollama.reason and "ollama serve" in ollama.reason


@pytest.mark.model
def test_unqualified_spec_resolves_to_llamacpp_and_generates(
    manager: tuple[ProviderManager, str],
) -> None:
    providers, _ = manager
    backend, spec = providers.resolve(MODEL_ID)
    assert backend.name == "llamacpp" and spec.backend == "llamacpp"
    chunks = list(providers.complete(MODEL_ID, "The sky is", GenerationOptions(max_tokens=8)))
    assert chunks[-1].done and chunks[-1].metrics is not None
    assert "".join(c.text for c in chunks).strip()
    # An Ollama-only name goes to Ollama (the fallback), which says it is down.
    with pytest.raises(BackendUnavailable, match="not running at"):
        list(providers.complete("llama3.1:8b", "Hi", GenerationOptions(max_tokens=8)))
