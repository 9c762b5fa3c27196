"""The OpenAI backend against a real OpenAI-compatible server: llama-cpp-python's
``llama_cpp.server`` serving Gemma 3 270M on 127.0.0.1 (tests/openai_server.py), which demands
an API key. Through the backend, through the manager beside other endpoints (one of them down),
and through the CLI with an embedded kernel and with a daemon kernel."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from providers.config import Config
from providers.errors import BackendUnavailable, Cancelled, ModelNotFound, UnsupportedOperation
from providers.manager import ProviderManager
from providers.openai import OpenAIBackend
from providers.spec import ModelSpec
from providers.types import Chunk, GenerationOptions, Message
from tests.cli_fixtures import invoke, isolated_env, json_of, run_cli
from tests.isolation import closed_port_url
from tests.ollama_fixtures import scripted_standin
from tests.ollama_standin import OllamaStandin
from tests.openai_server import API_KEY, MODEL_ID, openai_server
from tests.openai_server import OpenAIServer as Server

__all__ = ["openai_server", "scripted_standin"]

pytestmark = [pytest.mark.model, pytest.mark.timeout(600)]
KEY_ENV = "LLMSPELL_TEST_GPU_KEY"
SPEC = ModelSpec.parse(f"{MODEL_ID}@gpu")
GREEDY = GenerationOptions(max_tokens=12, temperature=0.0)


def endpoint(url: str, **settings: Any) -> dict[str, Any]:
    return {"type": "openai", "base_url": url, "api_key_env": KEY_ENV, **settings}


@pytest.fixture
def keyed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, API_KEY)


@pytest.fixture
def gpu(openai_server: Server, keyed: None) -> Iterator[OpenAIBackend]:
    config = Config.from_dict({"providers": {"gpu": endpoint(openai_server.url)}})
    settings = config.endpoints["gpu"]
    assert settings.type == "openai"
    backend = OpenAIBackend("gpu", settings)
    try:
        yield backend
    finally:
        backend.close()


def text_of(chunks: list[Chunk]) -> str:
    return "".join(c.text for c in chunks)


# The backend ---------------------------------------------------------------------------------


def test_list_status_and_info(gpu: OpenAIBackend, openai_server: Server) -> None:
    models = gpu.list_models()
    assert [(m.id, m.backend) for m in models] == [(MODEL_ID, "gpu")]
    health = gpu.health()
    assert health.available, health.reason
    assert (health.models, health.loaded) == (1, 0)
    assert health.details["url"] == openai_server.url
    assert health.details["api_key_env"] == KEY_ENV and health.details["api_key_set"] is True
    info = gpu.info(SPEC)
    assert (info.id, info.backend, info.details["url"]) == (MODEL_ID, "gpu", openai_server.url)
    assert info.details["owned_by"] == "me"  # what llama-cpp-python's server says of it
    assert gpu.has_model(SPEC) and not gpu.has_model(ModelSpec.parse("llama3.1-70b@gpu"))
    assert gpu.loaded() == []


def test_a_completion_streams_greedy_text_with_its_metrics(gpu: OpenAIBackend) -> None:
    chunks = list(gpu.complete(SPEC, "The capital of France is", GREEDY))
    again = list(gpu.complete(SPEC, "The capital of France is", GREEDY))
    pieces = [c for c in chunks if c.text]
    assert len(pieces) > 1 and text_of(chunks).strip()
    assert text_of(chunks) == text_of(again)  # greedy: the options reached the server
    final = chunks[-1]
    assert final.done and final.metrics is not None
    metrics = final.metrics
    # This server sends no usage: the tokens are the text-bearing events, one per token.
    assert 1 < metrics.generated_tokens <= 12
    assert metrics.generated_tokens == len(pieces)
    assert metrics.stop_reason in ("length", "stop")
    assert metrics.time_to_first_token is not None and metrics.time_to_first_token > 0
    assert metrics.tokens_per_second is not None and metrics.tokens_per_second > 0
    assert metrics.total_seconds >= metrics.generation_seconds > 0


def test_max_tokens_and_stop_reach_the_server(gpu: OpenAIBackend) -> None:
    short = list(gpu.complete(SPEC, "Once upon a time", GenerationOptions(max_tokens=3)))
    assert short[-1].metrics is not None
    assert short[-1].metrics.generated_tokens <= 3
    assert short[-1].metrics.stop_reason == "length"


def test_a_chat_goes_through_the_servers_chat_format(gpu: OpenAIBackend) -> None:
    messages = [Message("user", "Name a colour.")]
    chunks = list(gpu.chat(SPEC, messages, GREEDY))
    assert text_of(chunks).strip(), "Gemma answers nothing without its chat format"
    assert chunks[-1].done


def test_a_model_the_server_does_not_list_is_not_found(gpu: OpenAIBackend) -> None:
    # The server itself would answer it with its default model.
    with pytest.raises(ModelNotFound, match=rf"'llama3.1-70b' is not served by gpu.*{MODEL_ID}"):
        list(gpu.complete(ModelSpec.parse("llama3.1-70b@gpu"), "Hi", GREEDY))


def test_without_the_key_the_error_names_api_key_env(
    openai_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    config = Config.from_dict({"providers": {"gpu": endpoint(openai_server.url)}})
    backend = OpenAIBackend("gpu", config.endpoints["gpu"])  # type: ignore[arg-type]
    try:
        with pytest.raises(BackendUnavailable, match=rf"HTTP 401.*{KEY_ENV} .* is not set"):
            backend.list_models()
        assert "HTTP 401" in (backend.health().reason or "")
    finally:
        backend.close()
    config = Config.from_dict(
        {"providers": {"gpu": {"type": "openai", "base_url": openai_server.url}}}
    )
    backend = OpenAIBackend("gpu", config.endpoints["gpu"])  # type: ignore[arg-type]
    try:
        with pytest.raises(BackendUnavailable, match=r"set api_key_env in \[providers\.gpu\]"):
            list(backend.complete(SPEC, "Hi", GREEDY))
    finally:
        backend.close()


def test_closing_a_stream_early_leaves_the_server_ready(gpu: OpenAIBackend) -> None:
    long = GenerationOptions(max_tokens=300, temperature=0.0)
    stream = gpu.complete(SPEC, "Count from one to a hundred:", long)
    assert next(stream).text
    stream.close()
    after = list(gpu.complete(SPEC, "The capital of France is", GREEDY))
    assert after[-1].done and text_of(after).strip()


def test_a_cancel_stops_a_generation_promptly(gpu: OpenAIBackend) -> None:
    cancel = threading.Event()
    long = GenerationOptions(max_tokens=400, temperature=0.0)
    received: list[Chunk] = []
    with pytest.raises(Cancelled, match="gpu's completions was interrupted"):
        for chunk in gpu.complete(SPEC, "Count from one to five hundred:", long, cancel=cancel):
            received.append(chunk)
            if len(received) == 2:
                started = time.monotonic()
                threading.Timer(0.05, cancel.set).start()
    assert time.monotonic() - started < 30, "the stream went on after the cancel"
    assert 2 <= len(received) < 400


def test_the_key_is_in_no_reply_error_or_log_line(
    gpu: OpenAIBackend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    seen.append(repr([m.to_dict() for m in gpu.list_models()]))
    seen.append(repr(gpu.health().to_dict()))
    seen.append(repr(gpu.info(SPEC).to_dict()))
    seen.append(repr([c.metrics for c in gpu.complete(SPEC, "Hi", GREEDY)]))
    for failing in (
        lambda: gpu.pull(SPEC),
        lambda: list(gpu.complete(ModelSpec.parse("nope@gpu"), "Hi", GREEDY)),
    ):
        with pytest.raises((UnsupportedOperation, ModelNotFound)) as caught:
            failing()
        seen.append(repr(caught.value.to_dict()))
    assert caplog.records, "nothing was logged: the check below would see nothing"
    assert all(API_KEY not in text for text in seen)
    assert API_KEY not in caplog.text


# Several endpoints ---------------------------------------------------------------------------


def test_several_endpoints_one_down_through_the_manager(
    openai_server: Server, scripted_standin: OllamaStandin, keyed: None
) -> None:
    dead = closed_port_url()
    config = Config.from_dict(
        {
            "providers": {
                "gpu": endpoint(openai_server.url),
                "down": {"type": "openai", "base_url": f"{dead}/v1"},
                "lab": {"type": "ollama", "base_url": scripted_standin.url},
                "llamacpp": {"enabled": False},
                "ollama": {"enabled": False},
            }
        }
    )
    manager = ProviderManager(config)
    try:
        listing = manager.list_models()
        backends = {m.backend for m in listing.models}
        assert backends == {"gpu", "lab"}
        assert f"down at {dead}/v1 cannot be reached" in listing.errors["down"]
        status = manager.status()
        assert status["gpu"].available and status["lab"].available
        assert not status["down"].available and dead in (status["down"].reason or "")
        # Without @backend, the endpoint that lists the model gets it.
        backend, spec = manager.resolve(MODEL_ID)
        assert (backend.name, spec.backend) == ("gpu", "gpu")
        assert text_of(list(manager.complete(MODEL_ID, "Hello", GREEDY))).strip()
        assert manager.ps() == []
    finally:
        manager.close()


# The CLI and the kernel -----------------------------------------------------------------------


def config_file(tmp_path: Path, url: str) -> Path:
    dead = closed_port_url()
    path = tmp_path / "endpoints.toml"
    path.write_text(
        f'[providers.gpu]\ntype = "openai"\nbase_url = "{url}"\napi_key_env = "{KEY_ENV}"\n'
        f'[providers.down]\ntype = "openai"\nbase_url = "{dead}/v1"\n',
        encoding="utf-8",
    )
    return path


def test_the_cli_lists_generates_and_reports_the_endpoint_that_is_down(
    openai_server: Server, keyed: None, tmp_path: Path
) -> None:
    config = str(config_file(tmp_path, openai_server.url))
    listed = invoke(["--config", config, "--output", "json", "model", "list"])
    assert listed.exit_code == 0, listed.stderr
    document = json_of(listed)
    assert {"id": MODEL_ID, "backend": "gpu"}.items() <= document["models"][0].items()
    assert "cannot be reached" in document["errors"]["down"]
    status = invoke(["--config", config, "model", "status"])
    assert status.exit_code == 0, status.stderr
    rows = {line.split()[0]: line for line in status.stdout.splitlines() if line.strip()}
    assert "yes" in rows["gpu"] and "no" in rows["down"]
    prompt = invoke(
        ["--config", config, "--log-level", "debug", "prompt", "--raw",
         "-m", f"{MODEL_ID}@gpu", "--max-tokens", "8", "--temperature", "0",
         "The capital of France is"]
    )  # fmt: skip
    assert prompt.exit_code == 0, prompt.stderr
    assert prompt.stdout.strip()
    pulled = invoke(["--config", config, "model", "pull", f"{MODEL_ID}@gpu"])
    assert pulled.exit_code == 1
    assert "manages its own models" in " ".join(pulled.stderr.split())
    unknown = invoke(["--config", config, "model", "list", "--backend", "nope"])
    assert unknown.exit_code == 1
    assert "unknown backend 'nope'" in unknown.stderr
    for result in (listed, status, prompt, pulled, unknown):
        assert API_KEY not in result.stdout + result.stderr


def test_a_daemon_kernel_keeps_the_key_out_of_its_files_replies_and_log(
    openai_server: Server, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    env = isolated_env(home, tmp_path / "models")
    env.update({KEY_ENV: API_KEY, "LLMSPELL_CONFIG": str(config_file(tmp_path, openai_server.url))})
    started = run_cli(["--output", "json", "kernel", "start", "--daemon"], env)
    assert started.returncode == 0, started.stderr
    record = json.loads(started.stdout)
    try:
        outputs = [started.stdout + started.stderr]
        for args in (
            ["model", "status"],
            ["--output", "json", "model", "info", f"{MODEL_ID}@gpu"],
            ["prompt", "--raw", "-m", f"{MODEL_ID}@gpu", "--max-tokens", "4", "Hello"],
            ["model", "info", "nope@gpu"],
        ):
            done = run_cli(["--connect", record["id"], *args], env)
            outputs.append(done.stdout + done.stderr)
        assert "gpu" in outputs[1] and MODEL_ID in outputs[2]
        assert "is not served by gpu" in " ".join(outputs[4].split())
        # While it runs: its connection file, its record and its log.
        files = {p: p.read_text(errors="replace") for p in home.rglob("*") if p.is_file()}
    finally:
        stopped = run_cli(["kernel", "stop", record["id"]], env, timeout=60)
    assert stopped.returncode == 0, stopped.stderr
    connection = Path(record["connection_file"])
    assert connection in files and '"shell_port"' in files[connection]
    assert any(p.suffix == ".log" and p.stem == record["id"] for p in files)
    for path, text in files.items():
        assert API_KEY not in text, path
    for text in outputs:
        assert API_KEY not in text
