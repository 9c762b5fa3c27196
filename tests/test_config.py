"""Configuration loading (SPEC §4)."""

from __future__ import annotations

from pathlib import Path

import pytest

from providers import Config, ConfigError
from providers.config import DEFAULT_OLLAMA_URL, default_config_path, normalize_ollama_url

FULL = """
default_backend = "llamacpp"
[providers.ollama]
enabled = true
base_url = "http://localhost:11434"
timeout_seconds = 120
[providers.llamacpp]
enabled = true
[providers.llamacpp.options]
model_directory = "${HOME}/.local/share/llmspell/models"
n_ctx = 4096
n_threads = 0
n_gpu_layers = -1
max_loaded_models = 2
keep_alive = 300
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_works_with_no_file() -> None:
    config = Config.load()
    assert config.source is None
    assert config.default_backend is None
    assert config.providers.llamacpp.options.n_ctx == 4096
    assert config.model_directory().name == "models"
    # the isolated environment points OLLAMA_HOST at a dead port
    assert config.ollama_url() == "http://127.0.0.1:9"


def test_the_spec_example_loads_and_expands_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", "/home/someone")
    config = Config.load(write(tmp_path, FULL))
    assert config.default_backend == "llamacpp"
    assert config.ollama_url() == "http://localhost:11434"
    assert config.model_directory() == Path("/home/someone/.local/share/llmspell/models")
    assert config.providers.llamacpp.options.max_loaded_models == 2


def test_search_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user_file = default_config_path()
    user_file.parent.mkdir(parents=True, exist_ok=True)
    user_file.write_text('default_backend = "ollama"\n', encoding="utf-8")
    assert Config.load().default_backend == "ollama"
    env_file = tmp_path / "env.toml"
    env_file.write_text('default_backend = "candle"\n', encoding="utf-8")
    monkeypatch.setenv("LLMSPELL_CONFIG", str(env_file))
    assert Config.load().default_backend == "llamacpp"
    assert Config.load(user_file).default_backend == "ollama"


def test_named_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        Config.load(tmp_path / "missing.toml")


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        ("colour = 1\n", "colour", "unknown key 'colour'"),
        ("[providers.ollama]\nbase_ur = 'x'\n", "providers.ollama.base_ur", "unknown key"),
        (
            "[providers.llamacpp.options]\nn_ctx = 'big'\n",
            "providers.llamacpp.options.n_ctx",
            "invalid value",
        ),
        (
            "[providers.llamacpp.options]\nmax_loaded_models = 0\n",
            "providers.llamacpp.options.max_loaded_models",
            "invalid value",
        ),
        ("[providers.vllm]\nenabled = true\n", "providers.vllm.type", "needs a type"),
        ("default_backend = 'tgi'\n", "default_backend", "default_backend"),
        (
            "[providers.ollama]\nbase_url = '${LLMSPELL_SURELY_UNSET}'\n",
            "providers.ollama.base_url",
            "LLMSPELL_SURELY_UNSET",
        ),
    ],
)
def test_errors_name_the_key_and_the_file(
    tmp_path: Path, text: str, key: str, fragment: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        Config.load(path)
    assert info.value.key == key
    assert fragment in str(info.value)
    assert str(path) in str(info.value)


def test_broken_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "default_backend = \n")
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        Config.load(path)
    assert str(path) in str(info.value)


def test_models_env_overrides_the_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMSPELL_MODELS", str(tmp_path / "store"))
    assert Config.load().model_directory() == tmp_path / "store"


@pytest.mark.parametrize(
    ("value", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:11434"),
        ("127.0.0.1:11500", "http://127.0.0.1:11500"),
        ("http://example.test:8080/", "http://example.test:8080"),
        ("https://ollama.example.test", "https://ollama.example.test:443"),
        ("0.0.0.0", "http://127.0.0.1:11434"),
        ("0.0.0.0:9999", "http://127.0.0.1:9999"),
        ("localhost", "http://localhost:11434"),
        ("[::1]", "http://[::1]:11434"),
        ("[::1]:8000", "http://[::1]:8000"),
    ],
)
def test_ollama_host_forms(value: str, url: str) -> None:
    assert normalize_ollama_url(value) == url


def test_ollama_default_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OLLAMA_HOST")
    assert Config.load().ollama_url() == DEFAULT_OLLAMA_URL
