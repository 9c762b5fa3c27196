"""Every Ollama backend operation against the stand-in Ollama server (real HTTP)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from providers.base import Backend
from providers.errors import InvalidRequest, ModelNotFound, UnsupportedOperation
from providers.ollama import OllamaBackend
from providers.spec import ModelSpec
from providers.types import Chunk, GenerationOptions, Message, Progress, Removed
from tests.ollama_fixtures import gemma_runner, ollama, ollama_config, standin
from tests.ollama_standin import STANDIN_VERSION, OllamaStandin, StandinModel

__all__ = ["gemma_runner", "ollama", "standin"]

SPEC = ModelSpec.parse("gemma3:270m@ollama")


def _collect(chunks: list[Chunk]) -> tuple[str, Chunk]:
    assert chunks, "the stream yielded nothing"
    final = chunks[-1]
    assert final.done and final.metrics is not None
    assert all(not c.done and c.metrics is None for c in chunks[:-1])
    return "".join(c.text for c in chunks), final


def test_public_surface(ollama: OllamaBackend) -> None:
    import providers.ollama as package

    assert package.__all__ == ["OllamaBackend"]
    assert isinstance(ollama, Backend) and ollama.name == "ollama"


def test_health_reports_version_and_counts(ollama: OllamaBackend, standin: OllamaStandin) -> None:
    health = ollama.health()
    assert health.available and health.reason is None
    assert health.version == STANDIN_VERSION
    assert health.models == len(standin.installed)
    assert health.loaded == 0
    assert health.details["url"] == standin.url


def test_list_models_with_details(ollama: OllamaBackend, standin: OllamaStandin) -> None:
    models = {m.id: m for m in ollama.list_models()}
    assert set(models) == set(standin.installed)
    for name, served in standin.installed.items():
        info = models[name]
        assert info.backend == "ollama"
        assert info.size_bytes == served.size
        assert info.family == served.family
        assert info.parameter_size == served.parameter_size
        assert info.quantization == served.quantization
        assert info.loaded is False
        # Served with a +02:00 offset and nanoseconds; listed in UTC, whole seconds.
        assert info.modified_at is not None and info.modified_at.endswith("Z")
        listed = datetime.fromisoformat(info.modified_at)
        assert listed == served.modified.astimezone(UTC).replace(microsecond=0)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("gemma3:270m", True),
        ("local/gemma3:270m@ollama", True),
        ("GEMMA3:270M", True),
        ("gemma3", False),  # means gemma3:latest, which is not installed
        ("gemma3:1b", False),
        ("hf:unsloth/gemma-3-270m-it-GGUF:Q4_K_M", True),
        ("hf.co/unsloth/gemma-3-270m-it-GGUF:Q4_K_M@ollama", True),
    ],
)
def test_has_model(ollama: OllamaBackend, spec: str, expected: bool) -> None:
    assert ollama.has_model(ModelSpec.parse(spec)) is expected


def test_spec_without_variant_means_latest(ollama: OllamaBackend, standin: OllamaStandin) -> None:
    standin.installed["phi3:latest"] = StandinModel("phi3:latest", 2_176_178_913, family="phi3")
    assert ollama.has_model(ModelSpec.parse("phi3"))
    assert ollama.info(ModelSpec.parse("phi3")).id == "phi3:latest"


def test_info_from_show(ollama: OllamaBackend, standin: OllamaStandin) -> None:
    served = standin.installed["gemma3:270m"]
    info = ollama.info(SPEC)
    assert info.id == "gemma3:270m"
    assert info.architecture == served.family
    assert info.context_length == served.context_length
    assert info.size_bytes == served.size
    assert info.quantization == served.quantization
    assert info.parameter_size == served.parameter_size
    assert info.chat_template == "ollama"
    assert info.details["template"] == served.template
    assert info.details["capabilities"] == list(served.capabilities)
    assert info.details["parameter_count"] == served.parameter_count
    params = info.details["parameters"]
    assert params["stop"] == ["<end_of_turn>"]
    assert params["top_k"] == 64 and params["top_p"] == 0.95
    assert standin.bodies("/api/show")[-1] == {"model": "gemma3:270m"}


def test_info_of_a_missing_model_says_pull_it_first(ollama: OllamaBackend) -> None:
    with pytest.raises(ModelNotFound, match=r"pull it first.*llmspell model pull nope:1b@ollama"):
        ollama.info(ModelSpec.parse("nope:1b"))


def test_pull_reports_progress_like_llamacpp(ollama: OllamaBackend, standin: OllamaStandin) -> None:
    events: list[Progress] = []
    result = ollama.pull(ModelSpec.parse("smollm2:135m@ollama"), events.append)
    layers = standin.registry["smollm2:135m"].layers
    assert standin.bodies("/api/pull") == [{"model": "smollm2:135m", "stream": True}]

    phases = [e.phase for e in events]
    assert phases[0] == "resolving" and phases[-1] == "done"
    assert {"resolving", "downloading", "verifying", "done"} == set(phases)
    # Phases never go back: resolving → downloading → verifying → done.
    order = ["resolving", "downloading", "verifying", "done"]
    assert [order.index(p) for p in phases] == sorted(order.index(p) for p in phases)
    downloads = [e for e in events if e.phase == "downloading"]
    completed = [e.completed for e in downloads]
    assert completed == sorted(completed), "byte progress went backwards"
    assert downloads[-1].completed == downloads[-1].total == sum(layers)
    assert all(e.model == "smollm2:135m" for e in events)
    assert events[-1].completed == events[-1].total == sum(layers)

    assert result.bytes == sum(layers)
    assert result.model.id == "smollm2:135m"
    assert result.model.context_length == standin.registry["smollm2:135m"].context_length
    assert "smollm2:135m" in {m.id for m in ollama.list_models()}


def test_pull_of_an_unknown_model_is_model_not_found(ollama: OllamaBackend) -> None:
    events: list[Progress] = []
    with pytest.raises(ModelNotFound, match="file does not exist"):
        ollama.pull(ModelSpec.parse("no-such-model:7b"), events.append)
    assert [e.phase for e in events] == ["resolving"]


def test_pull_with_quantization_needs_a_tag(ollama: OllamaBackend) -> None:
    with pytest.raises(UnsupportedOperation, match="by tag"):
        ollama.pull(ModelSpec.parse("llama3.1:8b"), quantization="Q4_K_M")


def test_remove(ollama: OllamaBackend, standin: OllamaStandin) -> None:
    assert ollama.remove(SPEC) == Removed("gemma3:270m")
    assert standin.requests[-1] == ("DELETE", "/api/delete", {"model": "gemma3:270m"})
    assert "gemma3:270m" not in {m.id for m in ollama.list_models()}
    with pytest.raises(ModelNotFound, match=r"not installed in the Ollama at .*nothing to remove"):
        ollama.remove(SPEC)


def test_available_is_the_curated_library(ollama: OllamaBackend) -> None:
    everything = ollama.available()
    recommended = ollama.available(recommended_only=True)
    assert everything and recommended
    assert {m.name for m in recommended} < {m.name for m in everything}
    assert all(m.recommended and m.backend == "ollama" for m in recommended)
    for model in everything:
        assert model.variants and model.description
        # Every offered name:variant is a spec llmspell accepts.
        for variant in model.variants:
            assert (
                ModelSpec.parse(f"{model.name}:{variant}@ollama").name == f"{model.name}:{variant}"
            )


def test_import_is_unsupported_and_says_what_to_do(ollama: OllamaBackend, tmp_path: Path) -> None:
    with pytest.raises(UnsupportedOperation, match="ollama create"):
        ollama.import_model(tmp_path / "model.gguf", "mine")


def test_complete_with_empty_prompt_is_refused(ollama: OllamaBackend) -> None:
    with pytest.raises(InvalidRequest, match="non-empty prompt"):
        ollama.complete(SPEC, "", GenerationOptions())


@pytest.mark.model
def test_load_ps_unload(standin: OllamaStandin) -> None:
    backend = OllamaBackend(ollama_config(standin.url, options={"keep_alive": "10m"}))
    try:
        events: list[Progress] = []
        loaded = backend.load(SPEC, events.append)
        assert [e.phase for e in events] == ["loading", "done"]
        body = standin.bodies("/api/generate")[-1]
        assert body == {"model": "gemma3:270m", "stream": False, "keep_alive": "10m"}
        assert loaded.id == "gemma3:270m" and loaded.size_bytes == standin.installed[loaded.id].size
        assert loaded.expires_at is not None and loaded.expires_at.endswith("Z")
        expires = datetime.fromisoformat(loaded.expires_at)
        assert 500 < (expires - datetime.now(UTC)).total_seconds() <= 600

        assert [m.id for m in backend.loaded()] == ["gemma3:270m"]
        assert {m.id: m.loaded for m in backend.list_models()}["gemma3:270m"] is True
        assert backend.info(SPEC).loaded is True
        assert backend.health().loaded == 1

        assert backend.unload(SPEC) == "gemma3:270m"
        assert standin.bodies("/api/generate")[-1]["keep_alive"] == 0
        assert backend.loaded() == []
    finally:
        backend.close()


@pytest.mark.model
def test_chat_streams_text_with_metrics(ollama: OllamaBackend, standin: OllamaStandin) -> None:
    options = GenerationOptions(
        temperature=0.0,
        top_p=0.9,
        top_k=20,
        repeat_penalty=1.1,
        seed=7,
        max_tokens=12,
        num_ctx=1024,
        stop=("\n\n",),
    )
    messages = [Message("user", "Name three colours.")]
    chunks = list(ollama.chat(SPEC, messages, options))
    text, final = _collect(chunks)
    assert text.strip(), "Gemma produced no text"
    assert len(chunks) >= 2, "the reply was not streamed in pieces"

    body = standin.bodies("/api/chat")[-1]
    assert body["messages"] == [{"role": "user", "content": "Name three colours."}]
    assert body["stream"] is True
    assert body["options"] == {
        "temperature": 0.0,
        "top_p": 0.9,
        "top_k": 20,
        "repeat_penalty": 1.1,
        "seed": 7,
        "num_predict": 12,
        "num_ctx": 1024,
        "stop": ["\n\n"],
    }

    sent = standin.finals[-1]
    m = final.metrics
    assert m is not None
    assert m.prompt_tokens == sent["prompt_eval_count"] > 0
    assert 0 < m.generated_tokens == sent["eval_count"] <= 12
    assert m.total_seconds == sent["total_duration"] / 1e9
    assert m.load_seconds == sent["load_duration"] / 1e9
    assert m.prompt_seconds == sent["prompt_eval_duration"] / 1e9
    assert m.generation_seconds == sent["eval_duration"] / 1e9
    assert m.tokens_per_second == pytest.approx(m.generated_tokens / m.generation_seconds)
    assert m.stop_reason == sent["done_reason"]
    assert m.time_to_first_token is not None and m.time_to_first_token > 0


@pytest.mark.model
def test_complete_streams_text_with_metrics(ollama: OllamaBackend, standin: OllamaStandin) -> None:
    options = GenerationOptions(temperature=0.0, max_tokens=8)
    chunks = list(ollama.complete(SPEC, "The capital of France is", options))
    text, final = _collect(chunks)
    assert text.strip()
    body = standin.bodies("/api/generate")[-1]
    assert body["prompt"] == "The capital of France is"
    assert body["raw"] is True  # a completion is not wrapped in the chat template
    assert body["options"] == {"temperature": 0.0, "num_predict": 8}
    assert final.metrics is not None
    assert final.metrics.generated_tokens == standin.finals[-1]["eval_count"]
    assert final.metrics.stop_reason in ("stop", "length")


@pytest.mark.model
def test_closing_the_stream_cancels_it(ollama: OllamaBackend, standin: OllamaStandin) -> None:
    stream = ollama.complete(SPEC, "Count from one to fifty:", GenerationOptions(max_tokens=48))
    first = next(iter(stream))
    assert first.text and not first.done
    stream.close()
    with pytest.raises(StopIteration):
        next(iter(stream))
    # Closing dropped the connection: the server stopped generating before the end.
    assert standin.client_left.wait(30), "the server never saw the client leave"
    assert standin.abandoned == ["/api/generate"] and standin.finals == []
    # The backend and its connection pool still work after a cancelled stream.
    assert ollama.health().available


@pytest.mark.model
def test_standin_answers_stream_false_with_one_object(standin: OllamaStandin) -> None:
    """The stand-in's non-streamed shape (what other clients of Ollama use)."""
    body = {"model": "gemma3:270m", "prompt": "Hello", "stream": False}
    body["options"] = {"num_predict": 4, "temperature": 0}
    reply = httpx.post(f"{standin.url}/api/generate", json=body, timeout=60)
    assert reply.status_code == 200
    data = reply.json()
    assert data["done"] is True and data["response"] == "".join(data["response"])
    assert 0 < data["eval_count"] <= 4 and data["total_duration"] > 0
    assert data == standin.finals[-1]
