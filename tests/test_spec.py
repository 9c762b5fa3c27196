"""Model spec grammar (SPEC §2), including the cases of the original's ModelSpecifier tests."""

from __future__ import annotations

import pytest

from providers import InvalidModelSpec, ModelSpec, normalize_backend, parse_spec


@pytest.mark.parametrize(
    ("text", "provider", "model", "variant", "backend"),
    [
        ("local/llama3.1:8b@ollama", "local", "llama3.1", "8b", "ollama"),
        ("llama3.1:8b@ollama", None, "llama3.1", "8b", "ollama"),
        ("tinyllama:Q4_K_M@llamacpp", None, "tinyllama", "Q4_K_M", "llamacpp"),
        ("phi3", None, "phi3", None, None),
        ("models/llama3.1:8b@llamacpp", "models", "llama3.1", "8b", "llamacpp"),
        # the original's ModelSpec tests
        ("llama3.1:8b", None, "llama3.1", "8b", None),
        ("llama3.1@ollama", None, "llama3.1", None, "ollama"),
        ("deepseek-coder:6.7b:q4", None, "deepseek-coder", "6.7b:q4", None),
        ("models/llama3.1:8b@candle", "models", "llama3.1", "8b", "llamacpp"),
        ("local/llama3.1:8b", "local", "llama3.1", "8b", None),
        ("llama3.1:8b@candle", None, "llama3.1", "8b", "llamacpp"),
        # whitespace trimmed, backend case-insensitive, nested provider paths
        ("  phi3:mini@Ollama \n", None, "phi3", "mini", "ollama"),
        ("org/team/qwen2.5:0.5b", "org/team", "qwen2.5", "0.5b", None),
        ("llama3.1:8b-instruct-q4_K_M", None, "llama3.1", "8b-instruct-q4_K_M", None),
    ],
)
def test_parse(
    text: str, provider: str | None, model: str, variant: str | None, backend: str | None
) -> None:
    spec = ModelSpec.parse(text)
    assert (spec.provider, spec.model, spec.variant, spec.backend) == (
        provider,
        model,
        variant,
        backend,
    )
    assert spec.hf_repo is None
    assert ModelSpec.parse(str(spec)) == spec


@pytest.mark.parametrize(
    "text",
    [
        "local/llama3.1:8b@ollama",
        "llama3.1:8b@ollama",
        "tinyllama:Q4_K_M@llamacpp",
        "phi3",
        "models/llama3.1:8b@llamacpp",
        "deepseek-coder:6.7b:q4",
        "hf:bartowski/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M",
        "hf:a/b@ollama",
    ],
)
def test_str_round_trips_exactly(text: str) -> None:
    assert str(ModelSpec.parse(text)) == text


def test_candle_is_an_alias_of_llamacpp() -> None:
    assert ModelSpec.parse("tinyllama@candle").backend == "llamacpp"
    assert normalize_backend("CANDLE") == "llamacpp"


@pytest.mark.parametrize(
    ("text", "repo", "quant"),
    [
        ("hf:bartowski/Qwen2.5-0.5B-Instruct-GGUF", "bartowski/Qwen2.5-0.5B-Instruct-GGUF", None),
        ("hf:TheBloke/TinyLlama-GGUF:q4_k_m", "TheBloke/TinyLlama-GGUF", "q4_k_m"),
        ("hf.co/unsloth/gemma-3-270m-it-GGUF:Q8_0", "unsloth/gemma-3-270m-it-GGUF", "Q8_0"),
        ("HF:org/repo", "org/repo", None),
    ],
)
def test_hugging_face_specs(text: str, repo: str, quant: str | None) -> None:
    spec = ModelSpec.parse(text)
    assert spec.is_hf
    assert spec.hf_repo == repo
    assert spec.variant == quant
    assert spec.name == (f"{repo}:{quant}" if quant else repo)
    assert ModelSpec.parse(str(spec)) == spec


def test_name_and_with_backend() -> None:
    spec = ModelSpec.parse("local/llama3.1:8b")
    assert spec.name == "llama3.1:8b"
    assert str(spec.with_backend("candle")) == "local/llama3.1:8b@llamacpp"
    assert parse_spec(spec) is spec


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty model spec"),
        ("   ", "empty model spec"),
        ("@ollama", "empty model name"),
        ("local/", "empty model name"),
        ("phi3@", "empty backend"),
        ("phi3@  ", "empty backend"),
        ("phi3@vllm box", "invalid backend name 'vllm box'"),
        ("phi\x013", "control characters"),
        ("phi3\x00", "control characters"),
        ("phi3\x7f", "control characters"),
        ("../etc/passwd", "'..'"),
        ("a/../b", "'..'"),
        ("..", "'..'"),
        ("x:../../y", "'..'"),
        ("/etc/passwd", "absolute paths"),
        ("//x", "absolute paths"),
        ("a//b", "empty path segment"),
        ("hf:onlyone", "hf:ORG/REPO"),
        ("hf:a/b/c", "hf:ORG/REPO"),
        ("hf:../b", "'..'"),
        ("model name", "invalid model name"),
        (".hidden", "invalid model name"),
        ("-rf", "invalid model name"),
        ("phi3:", "empty variant"),
        ("x" * 600, "longer than"),
    ],
)
def test_invalid_specs(text: str, fragment: str) -> None:
    with pytest.raises(InvalidModelSpec) as info:
        ModelSpec.parse(text)
    assert fragment in str(info.value)


def test_non_string_is_a_clear_error() -> None:
    with pytest.raises(InvalidModelSpec, match="must be a string"):
        ModelSpec.parse(42)  # type: ignore[arg-type]
