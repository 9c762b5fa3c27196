"""Named endpoints: ``[providers.NAME]`` tables with a type, their errors, specs naming them,
and the manager building, listing and routing to them."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from providers import Config, ConfigError, InvalidModelSpec, ModelSpec, ProviderManager
from providers.config import OllamaEndpoint, OpenAIEndpoint
from providers.errors import BackendUnavailable, InvalidRequest
from providers.manager import build_backend
from providers.ollama import OllamaBackend
from providers.openai import OpenAIBackend
from providers.options import GenerationOptions, generation_options
from providers.spec import normalize_backend
from providers.types import BackendHealth, ModelInfo
from tests.cli_fixtures import invoke
from tests.isolation import closed_port_url

TWO = """
default_backend = "gpu"
[providers.gpu]
type = "openai"
base_url = "http://gpu-box:8000/v1"
api_key_env = "GPU_API_KEY"
timeout_seconds = 300
[providers.lab]
type = "ollama"
base_url = "lab-box"
[providers.studio]
type = "openai"
base_url = "http://studio.local:1234/"
enabled = false
[providers.ollama]
type = "ollama"
base_url = "http://127.0.0.1:11434"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_named_endpoints_load_in_the_files_order(tmp_path: Path) -> None:
    config = Config.load(write(tmp_path, TWO))
    assert list(config.endpoints) == ["gpu", "lab", "studio"]
    gpu = config.endpoints["gpu"]
    assert isinstance(gpu, OpenAIEndpoint)
    assert (gpu.base_url, gpu.api_key_env, gpu.timeout_seconds) == (
        "http://gpu-box:8000/v1",
        "GPU_API_KEY",
        300,
    )
    lab = config.endpoints["lab"]
    assert isinstance(lab, OllamaEndpoint)
    assert lab.base_url == "http://lab-box:11434"  # the forms OLLAMA_HOST takes
    assert config.endpoints["studio"].base_url == "http://studio.local:1234/v1"  # no path: /v1
    assert config.default_backend == "gpu"
    assert config.backend_names() == ("ollama", "llamacpp", "gpu", "lab", "studio")
    # the built-in tables keep working, [providers.ollama] may say its own type
    assert config.ollama_url() == "http://127.0.0.1:11434"


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        ("[providers.gpu]\nbase_url = 'http://x/v1'\n", "providers.gpu.type", "needs a type"),
        (
            "[providers.gpu]\ntype = 'vllm'\nbase_url = 'http://x'\n",
            "providers.gpu.type",
            "unknown type 'vllm' (expected one of openai, ollama)",
        ),
        (
            "[providers.ollama]\ntype = 'openai'\n",
            "providers.ollama.type",
            "[providers.ollama] is the built-in ollama backend",
        ),
        ("[providers.llamacpp]\ntype = 'ollama'\n", "providers.llamacpp.type", "takes no 'type'"),
        (
            "[providers.candle]\ntype = 'openai'\nbase_url = 'http://x'\n",
            "providers.candle",
            "alias of the built-in llamacpp",
        ),
        (
            "[providers.GPU]\ntype = 'openai'\nbase_url = 'http://x'\n",
            "providers.GPU",
            "invalid endpoint name 'GPU'",
        ),
        ("[providers.gpu]\ntype = 'openai'\n", "providers.gpu.base_url", "Field required"),
        (
            "[providers.gpu]\ntype = 'openai'\nbase_url = 'ftp://x'\n",
            "providers.gpu.base_url",
            "not an http:// or https:// URL",
        ),
        (
            "[providers.gpu]\ntype = 'openai'\nbase_url = 'gpu-box:8000'\n",
            "providers.gpu.base_url",
            "not an http:// or https:// URL",
        ),
        (
            "[providers.gpu]\ntype = 'openai'\nbase_url = 'http://x:port/v1'\n",
            "providers.gpu.base_url",
            "is not a URL",
        ),
        (
            "[providers.gpu]\ntype = 'openai'\nbase_url = 'http://me:secret@x/v1'\n",
            "providers.gpu.base_url",
            "must not hold a user name or password",
        ),
        (
            "[providers.gpu]\ntype = 'openai'\nbase_url = 'http://x/v1?key=1'\n",
            "providers.gpu.base_url",
            "query",
        ),
        (
            "[providers.gpu]\ntype = 'openai'\nbase_url = 'http://x'\napi_key_env = 'sk-123'\n",
            "providers.gpu.api_key_env",
            "not the name of an environment variable",
        ),
        (
            "[providers.gpu]\ntype = 'openai'\nbase_url = 'http://x'\napi_key = 'k'\n",
            "providers.gpu.api_key",
            "unknown key",
        ),
        (
            "[providers.gpu]\ntype = 'openai'\nbase_url = 'http://x'\ntimeout_seconds = 0\n",
            "providers.gpu.timeout_seconds",
            "invalid value",
        ),
        ("[providers.lab]\ntype = 'ollama'\n", "providers.lab.base_url", "Field required"),
        ("[providers]\ngpu = 3\n", "providers.gpu", "must be a table"),
        ("default_backend = 'nowhere'\n", "default_backend", "expected one of ollama, llamacpp"),
        ("endpoints = {}\n", "endpoints", "unknown key 'endpoints'"),
    ],
)
def test_endpoint_errors_name_the_table_and_the_file(
    tmp_path: Path, text: str, key: str, fragment: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        Config.load(path)
    assert info.value.key == key
    assert fragment in str(info.value)
    assert str(path) in str(info.value)
    table = key.split(".")[:2]
    if table[0] == "providers":
        assert ".".join(table) in str(info.value)


def test_default_backend_may_name_an_endpoint_only_if_it_exists() -> None:
    table = {"gpu": {"type": "openai", "base_url": "http://x"}}
    assert Config.from_dict({"default_backend": "GPU", "providers": table}).default_backend == "gpu"
    with pytest.raises(ConfigError, match="expected one of ollama, llamacpp, gpu"):
        Config.from_dict({"default_backend": "lab", "providers": table})


def test_the_openai_penalties_reach_every_backend() -> None:
    from providers.llamacpp.generation import _sampling
    from providers.ollama.convert import ollama_options

    options = GenerationOptions(frequency_penalty=0.5, presence_penalty=-1.0)
    assert ollama_options(options) == {"frequency_penalty": 0.5, "presence_penalty": -1.0}
    assert _sampling(options) == {"frequency_penalty": 0.5, "presence_penalty": -1.0}
    with pytest.raises(InvalidRequest, match="option 'presence_penalty'"):
        generation_options({"presence_penalty": 2.5}, what="generate")


def test_specs_name_any_endpoint() -> None:
    assert ModelSpec.parse("llama3.1-70b@gpu").backend == "gpu"
    assert ModelSpec.parse("meta-llama/Llama-3.1-8B@GPU-2").backend == "gpu-2"
    assert normalize_backend("gguf") == "llamacpp"
    for bad in ("x@gpu box", "x@gpu.box", "x@-gpu"):
        with pytest.raises(InvalidModelSpec, match="invalid backend name"):
            ModelSpec.parse(bad)


# The manager ---------------------------------------------------------------------------------


def manager_of(endpoints: dict[str, dict[str, object]]) -> ProviderManager:
    return ProviderManager(Config.from_dict({"providers": endpoints}))


def test_the_manager_builds_and_lists_the_endpoints() -> None:
    dead = closed_port_url()
    manager = manager_of(
        {
            "gpu": {"type": "openai", "base_url": f"{dead}/v1"},
            "lab": {"type": "ollama", "base_url": dead},
            "off": {"type": "openai", "base_url": f"{dead}/v1", "enabled": False},
            "ollama": {"enabled": False},
        }
    )
    try:
        assert manager.enabled() == ["llamacpp", "gpu", "lab"]
        gpu, lab = manager.backend("gpu"), manager.backend("lab")
        assert isinstance(gpu, OpenAIBackend) and gpu.name == "gpu"
        assert isinstance(lab, OllamaBackend) and (lab.name, lab.base_url) == ("lab", dead)
        with pytest.raises(BackendUnavailable, match="'off' is disabled"):
            manager.backend("off")
        with pytest.raises(InvalidModelSpec, match=r"unknown backend 'nope': expected one of"):
            manager.backend("nope")
        with pytest.raises(InvalidModelSpec, match="unknown backend 'nope'"):
            manager.info("x@nope")
        status = manager.status()
        assert set(status) == {"llamacpp", "ollama", "gpu", "lab", "off"}
        assert status["off"].reason == "disabled" and status["ollama"].reason == "disabled"
        assert not status["gpu"].available and dead in (status["gpu"].reason or "")
        assert not status["lab"].available and "Ollama is not running" in (
            status["lab"].reason or ""
        )
        assert "providers.lab.base_url" in (status["lab"].reason or "")
        listing = manager.list_models()
        assert set(listing.errors) == {"gpu", "lab"}
        assert manager.ps() == []  # the Ollama endpoint is down, the server lists nothing
    finally:
        manager.close()


def test_build_backend_refuses_an_unknown_name() -> None:
    with pytest.raises(InvalidModelSpec, match="unknown backend 'gpu'"):
        build_backend("gpu", Config())


def test_the_cli_names_an_unknown_backend() -> None:
    # Any well-formed name passes the option (it may be an endpoint of the kernel's config):
    # the kernel says which backends it has.
    result = invoke(["model", "list", "--backend", "nope"])
    assert result.exit_code == 1, result.stdout + result.stderr
    assert "unknown backend 'nope': expected one of ollama, llamacpp" in result.stderr


class Server:
    """A backend on a server that answers only once the other server is being asked too."""

    def __init__(self, name: str, together: threading.Barrier, down: bool = False) -> None:
        self.name = name
        self.together = together
        self.down = down

    def _wait(self) -> None:
        self.together.wait()  # asked one after the other, this times out (BrokenBarrierError)
        if self.down:
            raise BackendUnavailable(f"{self.name} is down", backend=self.name)

    def health(self) -> BackendHealth:
        self._wait()
        return BackendHealth(self.name, available=True, models=1)

    def list_models(self) -> list[ModelInfo]:
        self._wait()
        return [ModelInfo(id=f"m-{self.name}", backend=self.name)]

    def close(self) -> None:
        pass


def test_several_servers_are_asked_at_the_same_time() -> None:
    together = threading.Barrier(2, timeout=60)
    backends = {"gpu": Server("gpu", together), "lab": Server("lab", together, down=True)}
    manager = ProviderManager(Config(), backends=backends)  # type: ignore[arg-type]
    status = manager.status()
    assert list(status)[:2] == ["gpu", "lab"]
    assert status["gpu"].available and status["lab"].reason == "lab is down"
    listing = manager.list_models()
    assert [m.id for m in listing.models] == ["m-gpu"]
    assert listing.errors == {"lab": "lab is down"}
    alone = ProviderManager(
        Config(), backends={"gpu": Server("gpu", threading.Barrier(2, timeout=0.5))}
    )  # type: ignore[dict-item]
    with pytest.raises(threading.BrokenBarrierError):
        alone.status()  # one server is asked in this thread: nobody else reaches the barrier


def test_tls_is_verified_for_https_only_and_the_ca_store_is_loaded_once() -> None:
    import ssl

    from providers.tls import verify_for

    secure = verify_for("https://gpu-box:8000/v1")
    assert isinstance(secure, ssl.SSLContext) and secure.verify_mode == ssl.CERT_REQUIRED
    assert verify_for("HTTPS://other:443") is secure
    assert verify_for("http://127.0.0.1:11434") is False
