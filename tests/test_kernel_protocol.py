"""Every model_request command over real ZMQ against a kernel subprocess.

One kernel for the module: the real Gemma 3 270M imported into its store, the Ollama stand-in
as its Ollama, the Hub stand-in as its Hugging Face Hub. Parenting of ``model_progress`` and
``model_stream`` is checked with a plain jupyter_client client; the llmspell client is checked
against the same kernel.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.blocking.client import BlockingKernelClient

from llmspell_kernel.client import LLMSpellClient
from llmspell_kernel.protocol import PROTOCOL_VERSION
from providers.errors import (
    Cancelled,
    InvalidModelSpec,
    InvalidRequest,
    ModelNotFound,
)
from tests.hub_standin import HubStandin
from tests.kernel_fixtures import (
    GEMMA_ID,
    KernelProcess,
    exchange,
    gemma_store,
    kernel_environment,
    raw_client,
    start_kernel_process,
)
from tests.ollama_fixtures import gemma_runner
from tests.ollama_standin import GemmaRunner, OllamaStandin

__all__ = ["gemma_runner", "gemma_store"]

pytestmark = pytest.mark.model

GEMMA_REPO = "unsloth/gemma-3-270m-it-GGUF"
GEMMA_FILE = "gemma-3-270m-it-Q4_K_M.gguf"
SLOW_REPO = "example-org/Slow-Gemma-GGUF"


@pytest.fixture(scope="module")
def hub_server(gemma_path: Path) -> Iterator[HubStandin]:
    server = HubStandin()
    server.add_repo(GEMMA_REPO, {GEMMA_FILE: gemma_path})
    server.add_repo(SLOW_REPO, {"slow-gemma-Q4_K_M.gguf": gemma_path})
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def ollama_server(gemma_runner: GemmaRunner) -> Iterator[OllamaStandin]:
    server = OllamaStandin(gemma_runner, model_size=gemma_runner.model_path.stat().st_size)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def kernel(
    tmp_path_factory: pytest.TempPathFactory,
    gemma_store: Path,
    hub_server: HubStandin,
    ollama_server: OllamaStandin,
) -> Iterator[KernelProcess]:
    base = tmp_path_factory.mktemp("kernel")
    env = kernel_environment(
        base, gemma_store, OLLAMA_HOST=ollama_server.url, HF_ENDPOINT=hub_server.url
    )
    process = start_kernel_process(base, env)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def down_kernel(tmp_path_factory: pytest.TempPathFactory, gemma_store: Path) -> Iterator[str]:
    """A kernel whose Ollama is down (a closed port)."""
    base = tmp_path_factory.mktemp("down")
    process = start_kernel_process(base, kernel_environment(base, gemma_store))
    try:
        yield process.connection_file
    finally:
        process.stop()


@pytest.fixture(scope="module")
def raw(kernel: KernelProcess) -> Iterator[BlockingKernelClient]:
    client = raw_client(kernel.connection_file)
    try:
        yield client
    finally:
        client.stop_channels()


@pytest.fixture(scope="module")
def client(kernel: KernelProcess) -> Iterator[LLMSpellClient]:
    with LLMSpellClient(kernel.connection_file) as llm:
        yield llm


def model_request(raw: BlockingKernelClient, content: Any, **kwargs: Any) -> Any:
    result = exchange(raw, "model_request", content, **kwargs)
    assert result.reply["header"]["msg_type"] == "model_reply"
    return result


def assert_error(content: dict[str, Any], ename: str, *needles: str) -> None:
    assert content["status"] == "error", content
    assert content["ename"] == ename, content
    assert isinstance(content["traceback"], list)
    for needle in needles:
        assert needle in content["evalue"], content["evalue"]


# kernel_info ------------------------------------------------------------------------------------


def test_kernel_info_carries_the_protocol_version(raw: BlockingKernelClient) -> None:
    info = raw.kernel_info(reply=True)["content"]
    assert info["llmspell"]["protocol_version"] == PROTOCOL_VERSION
    assert info["language_info"]["name"] == "python"
    assert "kernel subshells" in info["supported_features"]


# Queries ----------------------------------------------------------------------------------------


def test_status_reports_both_backends(raw: BlockingKernelClient) -> None:
    content = model_request(raw, {"command": "status"}).content
    assert content["status"] == "ok" and content["command"] == "status"
    backends = content["backends"]
    assert backends["llamacpp"]["available"] is True
    assert backends["llamacpp"]["models"] >= 1
    assert backends["ollama"]["available"] is True
    assert backends["ollama"]["version"]


def test_list_shows_models_of_every_backend(raw: BlockingKernelClient) -> None:
    content = model_request(raw, {"command": "list"}).content
    assert content["status"] == "ok"
    rows = {(m["id"], m["backend"]) for m in content["models"]}
    assert (GEMMA_ID, "llamacpp") in rows
    assert ("gemma3:270m", "ollama") in rows
    assert content["errors"] == {}
    only = model_request(raw, {"command": "list", "backend": "llamacpp"}).content
    assert {m["backend"] for m in only["models"]} == {"llamacpp"}


def test_info_describes_the_gguf(raw: BlockingKernelClient) -> None:
    content = model_request(raw, {"command": "info", "model": GEMMA_ID}).content
    model = content["model"]
    assert model["id"] == GEMMA_ID and model["backend"] == "llamacpp"
    assert model["architecture"] == "gemma3"
    assert model["size_bytes"] > 100_000_000
    assert model["context_length"] > 0
    ollama = model_request(raw, {"command": "info", "model": "gemma3:270m@ollama"}).content
    assert ollama["model"]["backend"] == "ollama"


def test_available_lists_the_catalog(raw: BlockingKernelClient) -> None:
    content = model_request(
        raw, {"command": "available", "backend": "llamacpp", "recommended": True}
    ).content
    names = [m["name"] for m in content["models"]]
    assert "gemma3-270m" in names
    assert all(m["recommended"] for m in content["models"])


# Memory -----------------------------------------------------------------------------------------


def test_load_publishes_progress_parented_to_the_request(raw: BlockingKernelClient) -> None:
    result = model_request(raw, {"command": "load", "model": GEMMA_ID})
    assert result.content["status"] == "ok"
    assert result.content["model"]["id"] == GEMMA_ID
    progress = result.of_type("model_progress")
    assert progress, "a load reports its progress"
    msg_id = result.request["header"]["msg_id"]
    assert all(m["parent_header"]["msg_id"] == msg_id for m in progress)
    assert {"model", "phase", "completed", "total"} <= set(progress[0]["content"])
    ps = model_request(raw, {"command": "ps"}).content
    assert GEMMA_ID in [m["id"] for m in ps["models"]]


def test_unload_frees_the_model(raw: BlockingKernelClient) -> None:
    model_request(raw, {"command": "load", "model": GEMMA_ID})
    content = model_request(raw, {"command": "unload", "model": GEMMA_ID}).content
    assert content["unloaded"] == GEMMA_ID
    ps = model_request(raw, {"command": "ps"}).content
    assert GEMMA_ID not in [m["id"] for m in ps["models"]]


# Generation -------------------------------------------------------------------------------------


def test_generate_streams_text_parented_to_the_request(raw: BlockingKernelClient) -> None:
    result = model_request(
        raw,
        {
            "command": "generate",
            "model": GEMMA_ID,
            "prompt": "The capital of France is",
            "options": {"max_tokens": 12, "temperature": 0.0},
            "stream": True,
        },
    )
    content = result.content
    assert content["status"] == "ok", content
    assert content["text"].strip()
    streams = result.of_type("model_stream")
    msg_id = result.request["header"]["msg_id"]
    assert streams and all(m["parent_header"]["msg_id"] == msg_id for m in streams)
    assert "".join(m["content"]["text"] for m in streams) == content["text"]
    assert all(m["content"]["model"] == content["model"] for m in streams)
    metrics = content["metrics"]
    assert 0 < metrics["generated_tokens"] <= 12
    assert metrics["prompt_tokens"] > 0


def test_generate_chat_without_stream_sends_no_stream_messages(raw: BlockingKernelClient) -> None:
    result = model_request(
        raw,
        {
            "command": "generate",
            "model": GEMMA_ID,
            "messages": [{"role": "user", "content": "Say hello."}],
            "options": {"max_tokens": 8, "seed": 1},
        },
    )
    assert result.content["status"] == "ok", result.content
    assert result.content["text"]
    assert result.of_type("model_stream") == []


def test_generate_on_ollama(client: LLMSpellClient) -> None:
    pieces: list[str] = []
    reply = client.model_request(
        "generate",
        model="gemma3:270m@ollama",
        prompt="Hello",
        options={"max_tokens": 8},
        stream=True,
        on_stream=pieces.append,
    )
    assert reply["text"] and "".join(pieces) == reply["text"]
    assert reply["metrics"]["generated_tokens"] > 0


# Store ------------------------------------------------------------------------------------------


def test_import_then_remove(client: LLMSpellClient, gemma_path: Path) -> None:
    imported = client.model_request("import", path=str(gemma_path), name="gemma-copy")
    assert imported["model"]["id"] == "gemma-copy"
    listed = client.model_request("list", backend="llamacpp")
    assert "gemma-copy" in [m["id"] for m in listed["models"]]
    assert client.model_request("remove", model="gemma-copy")["removed"] == "gemma-copy"
    with pytest.raises(ModelNotFound):
        client.model_request("info", model="gemma-copy@llamacpp")


def test_pull_reports_progress_then_remove(
    raw: BlockingKernelClient, hub_server: HubStandin
) -> None:
    hub_server.faults.reset()
    # force: the kernel's store has this file already (imported), which a pull would reuse
    pull = {"command": "pull", "model": "gemma3-270m@llamacpp", "force": True}
    result = model_request(raw, pull)
    content = result.content
    assert content["status"] == "ok", content
    assert content["model"]["id"] == "gemma3-270m:Q4_K_M"
    assert content["bytes"] == content["model"]["size_bytes"]
    msg_id = result.request["header"]["msg_id"]
    progress = result.of_type("model_progress")
    assert all(m["parent_header"]["msg_id"] == msg_id for m in progress)
    phases = [m["content"]["phase"] for m in progress]
    assert phases[0] == "resolving" and phases[-1] == "done"
    assert "downloading" in phases and "verifying" in phases
    removed = model_request(raw, {"command": "remove", "model": "gemma3-270m:Q4_K_M"})
    assert removed.content["removed"] == "gemma3-270m:Q4_K_M"


# Errors -----------------------------------------------------------------------------------------


def test_missing_command(raw: BlockingKernelClient) -> None:
    content = model_request(raw, {}).content
    assert_error(content, "InvalidRequest", "no 'command'", "list, status")
    assert content["command"] is None


def test_unknown_command_lists_the_known_ones(raw: BlockingKernelClient) -> None:
    content = model_request(raw, {"command": "explode"}).content
    assert_error(content, "InvalidRequest", "unknown command 'explode'", "generate")
    assert content["command"] == "explode"


PROMPT = {"command": "generate", "model": GEMMA_ID, "prompt": "x"}
CHAT = {"command": "generate", "model": GEMMA_ID}


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ({"command": 7}, "'command' must be a string"),
        ({"command": "info", "model": 5}, "'model' must be a string, not a number"),
        ({"command": "list", "backend": True}, "'backend' must be a string"),
        ({"command": "pull", "model": "x", "force": "yes"}, "'force' must be a boolean"),
        ({"command": "info"}, "missing required field 'model'"),
        ({"command": "ps", "model": "x"}, "unknown field 'model'"),
        (
            {
                "command": "generate",
                "model": GEMMA_ID,
                "prompt": "x",
                "options": {"max_tokens": "9"},
            },
            "'max_tokens' must be an integer",
        ),
        (
            {"command": "generate", "model": GEMMA_ID, "prompt": "x", "options": {"warp": 9}},
            "generate: unknown option 'warp' (accepted: temperature,",
        ),
        ({"command": "generate", "model": GEMMA_ID}, "exactly one of 'prompt' or 'messages'"),
        (
            {
                "command": "generate",
                "model": GEMMA_ID,
                "messages": [{"role": "god", "content": ""}],
            },
            "field 'role' of messages[0] must be one of 'system', 'user' or 'assistant'",
        ),
    ],
)
def test_malformed_requests_get_precise_errors(
    raw: BlockingKernelClient, content: dict[str, Any], needle: str
) -> None:
    assert_error(model_request(raw, content).content, "InvalidRequest", needle)


def test_content_that_is_not_an_object(raw: BlockingKernelClient) -> None:
    # Valid JSON of the wrong shape (a list), passed as already-serialized content.
    content = model_request(raw, '["list"]').content
    assert_error(content, "InvalidRequest", "must be an object, not list")


@pytest.mark.parametrize("spec", ["@ollama", "phi3@", "../etc@llamacpp", "x@nowhere", "a\x00b"])
def test_bad_spec(raw: BlockingKernelClient, spec: str) -> None:
    assert_error(model_request(raw, {"command": "info", "model": spec}).content, "InvalidModelSpec")


def test_unknown_model(raw: BlockingKernelClient) -> None:
    content = model_request(raw, {"command": "info", "model": "no-such-model@llamacpp"}).content
    assert_error(content, "ModelNotFound", "no-such-model")
    content = model_request(raw, {"command": "info", "model": "nope:1b@ollama"}).content
    assert_error(content, "ModelNotFound")


def test_backend_down(down_kernel: str) -> None:
    raw_down = BlockingKernelClient(connection_file=down_kernel)
    raw_down.load_connection_file()
    raw_down.start_channels()
    try:
        raw_down.wait_for_ready(timeout=30)
        listed = model_request(raw_down, {"command": "list", "backend": "ollama"}).content
        assert_error(listed, "BackendUnavailable", "127.0.0.1:9")
        info = model_request(raw_down, {"command": "info", "model": "x@ollama"}).content
        assert_error(info, "BackendUnavailable")
        # Without a backend named, the others still answer and the failure is reported.
        everything = model_request(raw_down, {"command": "list"}).content
        assert everything["status"] == "ok"
        assert GEMMA_ID in [m["id"] for m in everything["models"]]
        assert "ollama" in everything["errors"]
        status = model_request(raw_down, {"command": "status"}).content
        assert status["backends"]["ollama"]["available"] is False
        assert status["backends"]["ollama"]["reason"]
    finally:
        raw_down.stop_channels()


def test_client_raises_the_named_errors(client: LLMSpellClient) -> None:
    with pytest.raises(InvalidRequest, match="unknown command"):
        client.model_request("explode")
    with pytest.raises(InvalidModelSpec):
        client.model_request("info", model="@ollama")
    with pytest.raises(ModelNotFound) as caught:
        client.model_request("info", model="no-such-model@llamacpp")
    assert caught.value.backend == "llamacpp"
    with pytest.raises(InvalidModelSpec, match="unknown backend 'nowhere'"):
        client.model_request("status", backend="nowhere")


def test_the_kernel_still_works_after_all_those_errors(raw: BlockingKernelClient) -> None:
    assert model_request(raw, {"command": "ps"}).content["status"] == "ok"
    executed = exchange(raw, "execute_request", {"code": "40 + 2", "silent": False})
    assert executed.content["status"] == "ok"


# Concurrency ------------------------------------------------------------------------------------


def test_model_request_answered_while_a_cell_is_busy(
    client: LLMSpellClient, tmp_path: Path
) -> None:
    assert client.subshell_id is not None
    flag = tmp_path / "release"
    code = (
        "import os, time\n"
        f"for _ in range(3000):\n    if os.path.exists({str(flag)!r}): break\n"
        "    time.sleep(0.01)\n"
        "print('released')"
    )
    results: list[Any] = []
    cell = threading.Thread(target=lambda: results.append(client.execute(code, timeout=60)))
    cell.start()
    try:
        # The cell blocks until the flag exists: an answer now proves the subshell.
        reply = client.model_request("ps", timeout=20)
        assert reply["status"] == "ok"
        assert cell.is_alive() and not results
    finally:
        flag.touch()
        cell.join(timeout=60)
    assert results and results[0].status == "ok"
    assert "released" in "".join(o.get("text", "") for o in results[0].outputs)


def test_cell_runs_while_a_pull_runs_and_interrupt_stops_the_pull(
    client: LLMSpellClient, hub_server: HubStandin
) -> None:
    hub_server.faults.reset()
    hub_server.faults.delay = 0.05  # ~1.3 MB/s: the 253 MB pull would take minutes
    downloading = threading.Event()
    outcome: list[BaseException | dict[str, Any]] = []

    def on_progress(event: dict[str, Any]) -> None:
        if event["phase"] == "downloading" and event["completed"]:
            downloading.set()

    def pull() -> None:
        try:
            outcome.append(
                client.model_request(
                    "pull",
                    model=f"hf:{SLOW_REPO}",
                    force=True,  # the store has the file: a download only when forced
                    timeout=120,
                    on_progress=on_progress,
                )
            )
        except BaseException as exc:
            outcome.append(exc)

    puller = threading.Thread(target=pull)
    puller.start()
    try:
        assert downloading.wait(60), f"the pull never started downloading: {outcome}"
        executed = client.execute("sum(range(10))", timeout=20)
        assert executed.status == "ok"
        assert executed.outputs[0]["data"]["text/plain"] == "45"
        assert puller.is_alive(), "the pull was still running while the cell ran"
    finally:
        client.interrupt()
        puller.join(timeout=30)
        hub_server.faults.reset()
    assert len(outcome) == 1 and isinstance(outcome[0], Cancelled), outcome
    listed = client.model_request("list", backend="llamacpp")
    assert f"hf:{SLOW_REPO}:Q4_K_M" not in [m["id"] for m in listed["models"]]


def test_ollama_commands_through_the_kernel(raw: BlockingKernelClient) -> None:
    pulled = model_request(raw, {"command": "pull", "model": "smollm2:135m@ollama"})
    assert pulled.content["status"] == "ok", pulled.content
    assert pulled.content["model"]["backend"] == "ollama"
    msg_id = pulled.request["header"]["msg_id"]
    progress = pulled.of_type("model_progress")
    assert progress and all(m["parent_header"]["msg_id"] == msg_id for m in progress)
    assert progress[-1]["content"]["phase"] == "done"

    loaded = model_request(raw, {"command": "load", "model": "gemma3:270m@ollama"}).content
    assert loaded["status"] == "ok", loaded
    ps = model_request(raw, {"command": "ps"}).content
    assert ("gemma3:270m", "ollama") in [(m["id"], m["backend"]) for m in ps["models"]]
    unloaded = model_request(raw, {"command": "unload", "model": "gemma3:270m@ollama"}).content
    assert unloaded["unloaded"] == "gemma3:270m"

    available = model_request(raw, {"command": "available", "backend": "ollama"}).content
    assert available["models"] and {m["backend"] for m in available["models"]} == {"ollama"}
    removed = model_request(raw, {"command": "remove", "model": "smollm2:135m@ollama"}).content
    assert removed["removed"] == "smollm2:135m"
    gone = model_request(raw, {"command": "info", "model": "smollm2:135m@ollama"}).content
    assert_error(gone, "ModelNotFound")
