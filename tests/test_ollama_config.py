"""Ollama base URL from config / OLLAMA_HOST, spec → Ollama names, and the JSON conversions."""

from __future__ import annotations

import pytest

from providers.config import DEFAULT_OLLAMA_URL, Config
from providers.errors import DownloadError, ModelNotFound
from providers.ollama import OllamaBackend
from providers.ollama.client import classify
from providers.ollama.convert import metrics, ollama_options, parse_parameters, utc_iso
from providers.ollama.names import ollama_name, same_model
from providers.ollama.progress import PullTracker
from providers.spec import ModelSpec
from providers.types import GenerationOptions
from tests.ollama_fixtures import gemma_runner, ollama_config, standin
from tests.ollama_standin import OllamaStandin

__all__ = ["gemma_runner", "standin"]


def _backend_from_env(monkeypatch: pytest.MonkeyPatch, host: str | None) -> OllamaBackend:
    if host is None:
        monkeypatch.delenv("OLLAMA_HOST", raising=False)
    else:
        monkeypatch.setenv("OLLAMA_HOST", host)
    return OllamaBackend(Config())


@pytest.mark.parametrize(
    ("host", "url"),
    [
        (None, DEFAULT_OLLAMA_URL),
        ("127.0.0.1", "http://127.0.0.1:11434"),
        ("0.0.0.0", "http://127.0.0.1:11434"),
        ("127.0.0.1:11500", "http://127.0.0.1:11500"),
        ("localhost:11434/", "http://localhost:11434"),
        ("https://ollama.example.com", "https://ollama.example.com:443"),
    ],
)
def test_base_url_from_ollama_host(
    monkeypatch: pytest.MonkeyPatch, host: str | None, url: str
) -> None:
    backend = _backend_from_env(monkeypatch, host)
    try:
        assert backend.base_url == url
    finally:
        backend.close()


@pytest.mark.parametrize("form", ["127.0.0.1:{port}", "http://127.0.0.1:{port}", "0.0.0.0:{port}"])
def test_ollama_host_forms_reach_the_server(
    monkeypatch: pytest.MonkeyPatch, standin: OllamaStandin, form: str
) -> None:
    backend = _backend_from_env(monkeypatch, form.format(port=standin.port))
    try:
        assert backend.base_url == standin.url
        health = backend.health()
        assert health.available, health.reason
        assert health.models == len(standin.installed)
    finally:
        backend.close()


def test_configured_base_url_wins_over_ollama_host(
    monkeypatch: pytest.MonkeyPatch, standin: OllamaStandin
) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:9")
    backend = OllamaBackend(ollama_config(f"127.0.0.1:{standin.port}"))
    try:
        assert backend.base_url == standin.url
        assert backend.health().available
    finally:
        backend.close()


@pytest.mark.parametrize(
    ("spec", "name"),
    [
        ("llama3.1:8b@ollama", "llama3.1:8b"),
        ("local/llama3.1:8b@ollama", "llama3.1:8b"),
        ("ollama/phi3", "phi3"),
        ("huihui_ai/deepseek-r1-abliterated:8b", "huihui_ai/deepseek-r1-abliterated:8b"),
        ("deepseek-coder:6.7b:q4", "deepseek-coder:6.7b:q4"),
        (
            "hf:bartowski/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M",
            "hf.co/bartowski/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M",
        ),
        (
            "hf.co/bartowski/Qwen2.5-0.5B-Instruct-GGUF",
            "hf.co/bartowski/Qwen2.5-0.5B-Instruct-GGUF",
        ),
    ],
)
def test_ollama_name(spec: str, name: str) -> None:
    assert ollama_name(ModelSpec.parse(spec)) == name


def test_same_model_applies_the_default_tag() -> None:
    assert same_model("phi3", "phi3:latest")
    assert same_model("library/phi3", "PHI3:latest")
    assert same_model("hf.co/org/repo", "hf.co/org/repo:latest")
    assert not same_model("phi3", "phi3:mini")
    assert not same_model("user/phi3", "phi3")


def test_options_are_mapped_to_ollama_names() -> None:
    assert ollama_options(GenerationOptions()) == {}
    # overflow is llmspell's (Ollama fits a conversation into num_ctx on its own side)
    assert ollama_options(GenerationOptions(overflow="truncate")) == {}
    options = GenerationOptions(
        temperature=0.2, top_p=0.8, top_k=30, min_p=0.1, repeat_penalty=1.2, seed=3,
        max_tokens=50, stop=("END", "\n\n"), num_ctx=8192,
    )  # fmt: skip
    assert ollama_options(options) == {
        "temperature": 0.2, "top_p": 0.8, "top_k": 30, "min_p": 0.1, "repeat_penalty": 1.2,
        "seed": 3, "num_predict": 50, "stop": ["END", "\n\n"], "num_ctx": 8192,
    }  # fmt: skip


def test_metrics_convert_nanoseconds_and_compute_tokens_per_second() -> None:
    final = {
        "done": True, "done_reason": "length", "total_duration": 2_500_000_000,
        "load_duration": 500_000_000, "prompt_eval_count": 26,
        "prompt_eval_duration": 250_000_000, "eval_count": 40, "eval_duration": 1_600_000_000,
    }  # fmt: skip
    m = metrics(final, time_to_first_token=0.3)
    assert (m.total_seconds, m.load_seconds, m.prompt_seconds, m.generation_seconds) == (
        2.5, 0.5, 0.25, 1.6,
    )  # fmt: skip
    assert (m.prompt_tokens, m.generated_tokens) == (26, 40)
    assert m.tokens_per_second == pytest.approx(25.0)
    assert m.stop_reason == "length" and m.time_to_first_token == 0.3
    # A final line without counts (a load reply) gives zeros, not a division by zero.
    empty = metrics({"done": True}, None)
    assert empty.generated_tokens == 0 and empty.tokens_per_second is None


def test_timestamps_become_utc() -> None:
    assert utc_iso("2024-06-04T14:38:31.83753-07:00") == "2024-06-04T21:38:31Z"
    assert utc_iso("2025-01-02T03:04:05.123456789+01:00") == "2025-01-02T02:04:05Z"
    assert utc_iso("2025-01-02T03:04:05Z") == "2025-01-02T03:04:05Z"
    assert utc_iso(None) is None


def test_show_parameters_are_parsed() -> None:
    text = 'num_ctx 4096\nstop "<|start_header_id|>"\nstop "<|eot_id|>"\ntemperature 0.6\nmode x'
    assert parse_parameters(text) == {
        "num_ctx": 4096,
        "stop": ["<|start_header_id|>", "<|eot_id|>"],
        "temperature": 0.6,
        "mode": "x",
    }


def test_pull_tracker_sums_layers_and_tolerates_missing_fields() -> None:
    tracker = PullTracker("m:1b")
    lines = [
        {"status": "pulling manifest"},
        {"status": "pulling aaa", "digest": "sha256:aaa"},  # no total, no completed
        {"status": "pulling aaa", "digest": "sha256:aaa", "total": 100},
        {"status": "pulling aaa", "digest": "sha256:aaa", "total": 100, "completed": 60},
        {"status": "pulling bbb", "digest": "sha256:bbb", "total": 20, "completed": 20},
        {"status": "pulling aaa", "digest": "sha256:aaa", "total": 100, "completed": 100},
        {"status": "verifying sha256 digest"},
        {"status": "writing manifest"},
        {"status": "success"},
    ]
    events = [tracker.update(line) for line in lines]
    assert [(e.phase, e.completed, e.total) for e in events] == [
        ("resolving", None, None),
        ("downloading", 0, None),
        ("downloading", 0, 100),
        ("downloading", 60, 100),
        ("downloading", 80, 120),
        ("downloading", 120, 120),
        ("verifying", 120, 120),
        ("verifying", 120, 120),
        ("done", 120, 120),
    ]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("model 'x:1b' not found", ModelNotFound),
        ("pull model manifest: file does not exist", ModelNotFound),
        (
            'pull model manifest: Get "https://registry.ollama.ai/v2/library/x/manifests/1b":'
            " dial tcp: lookup registry.ollama.ai: no such host",
            DownloadError,
        ),
        ("max retries exceeded: unexpected EOF", DownloadError),
    ],
)
def test_ollama_error_texts_are_classified(text: str, error: type[Exception]) -> None:
    found = classify(text, "x:1b", DownloadError)
    assert type(found) is error
    assert text in found.message
