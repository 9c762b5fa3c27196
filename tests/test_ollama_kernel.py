"""The Ollama backend through the kernel protocol: a real kernel (embedded, real ZMQ) whose
config points at the stand-in Ollama; progress and streamed text arrive on IOPub."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmspell_kernel.client import LLMSpellClient
from providers.errors import ModelNotFound
from tests.ollama_fixtures import gemma_runner, standin
from tests.ollama_standin import OllamaStandin

__all__ = ["gemma_runner", "standin"]

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def client(standin: OllamaStandin, tmp_path: Path) -> Iterator[LLMSpellClient]:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[providers.ollama]\nbase_url = "{standin.url}"\ntimeout_seconds = 30\n'
        f'[providers.llamacpp.options]\nmodel_directory = "{tmp_path / "models"}"\n',
        encoding="utf-8",
    )
    with LLMSpellClient.embedded(config) as embedded:
        yield embedded


def test_status_list_pull_info_remove(client: LLMSpellClient, standin: OllamaStandin) -> None:
    status = client.model_request("status", backend="ollama")["backends"]["ollama"]
    assert status["available"] and status["models"] == len(standin.installed)

    events: list[dict[str, Any]] = []
    reply = client.model_request("pull", model="smollm2:135m@ollama", on_progress=events.append)
    total = sum(standin.registry["smollm2:135m"].layers)
    assert reply["model"]["id"] == "smollm2:135m" and reply["bytes"] == total
    phases = [e["phase"] for e in events]
    assert phases[0] == "resolving" and phases[-1] == "done" and "downloading" in phases
    assert events[-1]["completed"] == events[-1]["total"] == total

    listed = {m["id"] for m in client.model_request("list", backend="ollama")["models"]}
    assert listed == set(standin.installed)
    info = client.model_request("info", model="smollm2:135m@ollama")["model"]
    assert info["context_length"] == standin.registry["smollm2:135m"].context_length

    assert client.model_request("remove", model="smollm2:135m@ollama")["removed"] == "smollm2:135m"
    with pytest.raises(ModelNotFound, match="pull it first"):
        client.model_request("info", model="smollm2:135m@ollama")


@pytest.mark.model
def test_generate_streams_over_iopub(client: LLMSpellClient, standin: OllamaStandin) -> None:
    pieces: list[str] = []
    reply = client.model_request(
        "generate",
        model="gemma3:270m@ollama",
        messages=[{"role": "user", "content": "Say hello."}],
        options={"max_tokens": 8, "temperature": 0},
        stream=True,
        on_stream=pieces.append,
    )
    assert pieces and "".join(pieces) == reply["text"]
    metrics = reply["metrics"]
    assert metrics["generated_tokens"] == standin.finals[-1]["eval_count"] > 0
    assert metrics["tokens_per_second"] > 0


def test_ollama_down_is_reported_not_empty(client: LLMSpellClient, standin: OllamaStandin) -> None:
    standin.stop()
    status = client.model_request("status")["backends"]
    assert status["ollama"]["available"] is False
    assert "not running at" in status["ollama"]["reason"]
    listing = client.model_request("list")
    assert "not running at" in listing["errors"]["ollama"]
