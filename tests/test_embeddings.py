"""Embeddings (``embed``) with the real Gemma 3 270M: in its runner (the llamacpp backend), through
the kernel's protocol and the client, ``LocalLLM.embed``, the CLI (``llmspell embed``, with
stdin), the Ollama backend against the stand-in's ``/api/embed`` (raw llama-cpp-python, so the
two paths are compared), and the OpenAI backend's ``/v1/embeddings`` over a mock transport.

One runner per module serves the backend tests (the model loads once); the kernel, the CLI and
the stand-in load theirs once each.
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmspell_kernel.client import LLMSpellClient
from llmspell_kernel.local_llm import LocalLLM
from providers.config import Config
from providers.errors import (
    Cancelled,
    GenerationError,
    InvalidRequest,
    ModelNotFound,
    UnsupportedOperation,
)
from providers.llamacpp import LlamaCppBackend
from providers.llamacpp.embedding import EMBEDDING_CONTEXT, pooling_for
from providers.llamacpp.metadata import read_metadata
from providers.manager import ProviderManager
from providers.ollama import OllamaBackend
from providers.openai import OpenAIBackend
from providers.spec import ModelSpec, parse_spec
from providers.types import GenerationOptions
from tests.cli_fixtures import GEMMA_SPEC, invoke, json_of
from tests.isolation import closed_port_url
from tests.kernel_fixtures import (
    GEMMA_ID,
    KernelProcess,
    kernel_environment,
    start_kernel_process,
)
from tests.namespace_fixtures import gemma_store
from tests.ollama_fixtures import gemma_runner, ollama_config
from tests.ollama_standin import OllamaStandin

__all__ = ["gemma_runner", "gemma_store"]  # fixtures, used by name

pytestmark = [pytest.mark.model, pytest.mark.timeout(300)]

CAT = "The cat sat on the mat."
PARAPHRASE = "A cat is sitting on a mat."
UNRELATED = "Stock markets fell sharply today."
TEXTS = [CAT, PARAPHRASE, UNRELATED]
SPEC = parse_spec(GEMMA_ID)
PACKED_TOLERANCE = 1e-2
"""How far (per component of a normalized vector) a text packed with others may be from the
same text alone: 3e-3 measured."""


def cosine(a: list[float], b: list[float]) -> float:
    dot = math.fsum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(math.fsum(x * x for x in a) * math.fsum(y * y for y in b))


def norm(vector: list[float]) -> float:
    return math.sqrt(math.fsum(x * x for x in vector))


def max_difference(a: list[list[float]], b: list[list[float]]) -> float:
    assert len(a) == len(b)
    return max(abs(x - y) for u, v in zip(a, b, strict=True) for x, y in zip(u, v, strict=True))


@pytest.fixture(scope="module")
def backend(gemma_store: Path) -> Iterator[LlamaCppBackend]:
    config = Config.from_dict(
        {"providers": {"llamacpp": {"options": {"model_directory": gemma_store}}}}
    )
    backend = LlamaCppBackend(config)
    try:
        yield backend
    finally:
        backend.close()


@pytest.fixture(scope="module")
def vectors(backend: LlamaCppBackend) -> list[list[float]]:
    """TEXTS embedded together (normalized): the reference of the module."""
    return backend.embed(SPEC, TEXTS).vectors


@pytest.fixture(scope="module")
def alone(backend: LlamaCppBackend) -> list[list[float]]:
    """Each of TEXTS embedded in a request of its own."""
    return [backend.embed(SPEC, [text]).vectors[0] for text in TEXTS]


@pytest.fixture(scope="module")
def dimension(gemma_path: Path) -> int:
    """The model's embedding length, from its GGUF metadata."""
    values = read_metadata(gemma_path).values
    return int(values[f"{values['general.architecture']}.embedding_length"])


# The llamacpp backend (its runner) -----------------------------------------------------------


def test_vectors_have_the_models_dimension_and_length_one(
    vectors: list[list[float]], dimension: int
) -> None:
    assert dimension == 640  # Gemma 3 270M; read from the file, not assumed
    assert [len(v) for v in vectors] == [dimension] * len(TEXTS)
    assert all(abs(norm(v) - 1.0) < 1e-9 for v in vectors)
    assert all(math.isfinite(x) for v in vectors for x in v)


def test_a_paraphrase_is_closer_than_an_unrelated_sentence(vectors: list[list[float]]) -> None:
    cat, paraphrase, unrelated = vectors
    close, far = cosine(cat, paraphrase), cosine(cat, unrelated)
    assert close > 0.85 and far < 0.7, (close, far)  # measured: 0.91 and 0.55


def test_embeddings_are_deterministic_and_batches_keep_their_order(
    backend: LlamaCppBackend, vectors: list[list[float]], alone: list[list[float]]
) -> None:
    assert backend.embed(SPEC, TEXTS).vectors == vectors  # identical, not only close
    assert [backend.embed(SPEC, [text]).vectors[0] for text in TEXTS] == alone
    single = backend.embed(SPEC, CAT).vectors  # a str is one input
    assert single == alone[:1]
    # Texts packed into one decode differ slightly from each alone (llama.cpp's kernels sum
    # in another order: see providers/llamacpp/embedding.py), and stay in the inputs' order.
    assert max_difference(vectors, alone) < PACKED_TOLERANCE
    assert all(cosine(a, b) > 0.9995 for a, b in zip(vectors, alone, strict=True))
    reversed_batch = backend.embed(SPEC, TEXTS[::-1]).vectors[::-1]
    assert max_difference(reversed_batch, vectors) < PACKED_TOLERANCE
    assert all(cosine(a, b) > 0.9995 for a, b in zip(reversed_batch, vectors, strict=True))


def test_unnormalized_vectors_point_the_same_way(
    backend: LlamaCppBackend, vectors: list[list[float]]
) -> None:
    done = backend.embed(SPEC, [CAT], normalize=False)
    raw = done.vectors[0]
    assert norm(raw) > 2.0  # Gemma's pooled hidden states are far from unit length
    assert max(abs(x / norm(raw) - y) for x, y in zip(raw, vectors[0], strict=True)) < 1e-6
    assert done.metrics.prompt_tokens == 8 and done.metrics.total_seconds > 0


def test_a_long_input_is_cut_to_the_context_or_refused_naming_it(backend: LlamaCppBackend) -> None:
    long = "word " * (EMBEDDING_CONTEXT + 100)
    cut = backend.embed(SPEC, [CAT, long])
    assert cut.metrics.truncated_inputs == 1
    assert cut.metrics.prompt_tokens == 8 + EMBEDDING_CONTEXT
    with pytest.raises(InvalidRequest, match=r"input\[1\] has \d+ tokens, more than the 512"):
        backend.embed(SPEC, [CAT, long], truncate=False)


def test_bad_input_is_refused_before_the_model_is_asked(backend: LlamaCppBackend) -> None:
    with pytest.raises(InvalidRequest, match="must not be empty"):
        backend.embed(SPEC, [])
    with pytest.raises(InvalidRequest, match=r"input\[1\] is empty"):
        backend.embed(SPEC, [CAT, "  "])
    with pytest.raises(ModelNotFound):
        backend.embed(parse_spec("no-such-model"), [CAT])


def test_generation_and_embedding_share_the_runner(
    backend: LlamaCppBackend, vectors: list[list[float]]
) -> None:
    options = GenerationOptions(max_tokens=4, temperature=0.0)
    pids = {row.model.pid for row in backend.cache.snapshot()}
    text = "".join(c.text for c in backend.complete(SPEC, "The sea is", options))
    assert text.strip()
    assert backend.embed(SPEC, TEXTS).vectors == vectors  # the contexts do not disturb each other
    assert {row.model.pid for row in backend.cache.snapshot()} == pids  # one runner, one load


def test_a_cancelled_embed_raises_cancelled(backend: LlamaCppBackend) -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        backend.embed(SPEC, TEXTS, cancel=cancel)
    assert len(backend.embed(SPEC, [CAT]).vectors) == 1  # the model is free again


def test_a_cancel_stops_an_embed_between_batches_and_keeps_the_runner(
    backend: LlamaCppBackend,
) -> None:
    pids = {row.model.pid for row in backend.cache.snapshot()}
    cancel = threading.Event()
    outcome: list[BaseException | None] = []

    def embed_long() -> None:
        try:
            backend.embed(SPEC, ["word " * 400] * 8, cancel=cancel)  # 8 batches
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=embed_long)
    thread.start()
    time.sleep(0.5)
    cancel.set()
    thread.join(30)
    assert isinstance(outcome[0], Cancelled), outcome
    assert "did not stop" not in outcome[0].message  # the runner answered the cancel
    assert {row.model.pid for row in backend.cache.snapshot()} == pids
    assert len(backend.embed(SPEC, [CAT]).vectors) == 1


def test_a_runner_killed_while_embedding_is_an_error_and_the_next_request_works(
    backend: LlamaCppBackend, alone: list[list[float]]
) -> None:
    pids = [row.model.pid for row in backend.cache.snapshot()]
    assert len(pids) == 1
    outcome: list[BaseException | None] = []

    def embed_long() -> None:
        try:
            backend.embed(SPEC, ["word " * 400] * 8)  # seconds of work
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=embed_long)
    thread.start()
    time.sleep(0.5)
    os.kill(pids[0], signal.SIGKILL)
    thread.join(60)
    error = outcome[0]
    assert isinstance(error, GenerationError), error
    assert "crashed (killed by SIGKILL) while embedding" in error.message
    assert backend.embed(SPEC, [CAT]).vectors == alone[:1]  # a new runner, the same vector


def test_pooling_comes_from_the_metadata_or_is_mean() -> None:
    assert pooling_for({"general.architecture": "gemma3"}, "m") == 1  # none declared: mean
    assert pooling_for({"general.architecture": "bert", "bert.pooling_type": "2"}, "m") == 2
    assert pooling_for({"general.architecture": "bert", "bert.pooling_type": "0"}, "m") == 1
    with pytest.raises(UnsupportedOperation, match="reranker"):
        pooling_for({"general.architecture": "bert", "bert.pooling_type": "4"}, "m")


def test_local_llm_embed_returns_lists_of_floats(
    backend: LlamaCppBackend, vectors: list[list[float]]
) -> None:
    manager = ProviderManager(Config(), backends={"llamacpp": backend})
    local = LocalLLM(manager)
    with pytest.raises(InvalidRequest, match="no model"):
        local.embed(CAT)
    local.set_default_model(GEMMA_ID)
    one = local.embed(CAT)
    assert isinstance(one, list) and len(one) == 1 and isinstance(one[0][0], float)
    assert one == backend.embed(SPEC, [CAT]).vectors
    assert local.embed(TEXTS, model=GEMMA_ID) == vectors
    with pytest.raises(InvalidRequest, match=r"embed: input\[0\] must not be empty"):
        local.embed([""])


# Through the kernel ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory, gemma_store: Path) -> Iterator[KernelProcess]:
    base = tmp_path_factory.mktemp("embed-kernel")
    process = start_kernel_process(base, kernel_environment(base, gemma_store))
    try:
        yield process
    finally:
        process.stop()


def test_embed_through_the_kernel_protocol(
    kernel: KernelProcess, vectors: list[list[float]], dimension: int
) -> None:
    with LLMSpellClient(kernel.connection_file) as client:
        assert client.kernel_info["llmspell"]["protocol_version"] == "1.2"
        reply = client.model_request("embed", timeout=120, model=GEMMA_ID, input=TEXTS)
        assert set(reply) == {"status", "command", "model", "embeddings", "dimensions", "metrics"}
        assert reply["model"] == "gemma3-270m@llamacpp" and reply["dimensions"] == dimension
        assert reply["embeddings"] == vectors  # the same as in this process, exactly
        assert reply["metrics"]["prompt_tokens"] == 24
        typed = client.embed(GEMMA_ID, CAT, normalize=False)
        assert len(typed.embeddings) == 1 and norm(typed.embeddings[0]) > 2.0
        bad: list[tuple[dict[str, Any], str, str]] = [
            ({"input": []}, "InvalidRequest", "embed: field 'input' must not be empty"),
            ({"input": ""}, "InvalidRequest", "embed: field 'input' must not be empty"),
            ({"input": [CAT, ""]}, "InvalidRequest", "embed: input[1] must not be empty"),
            ({"input": [CAT, 7]}, "InvalidRequest", "embed: input[1] must be a string"),
            ({}, "InvalidRequest", "embed: missing required field 'input'"),
            ({"input": "x", "truncate": 1}, "InvalidRequest", "'truncate' must be a boolean"),
            ({"input": ["word " * 600], "truncate": False}, "InvalidRequest", "input[0] has"),
        ]
        for fields, ename, words in bad:
            with pytest.raises(InvalidRequest) as refused:
                client.model_request("embed", timeout=60, model=GEMMA_ID, **fields)
            assert type(refused.value).__name__ == ename
            assert words in refused.value.message, refused.value.message
        with pytest.raises(ModelNotFound):
            client.embed("no-such-model@llamacpp", CAT)
        assert client.embed(GEMMA_ID, [PARAPHRASE]).dimensions == dimension  # still serving


# The CLI -------------------------------------------------------------------------------------


@pytest.fixture
def cli_store(gemma_store: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's environment pointed at the store (the CLI's embedded kernels use it)."""
    monkeypatch.setenv("LLMSPELL_MODELS", str(gemma_store))
    return gemma_store


def test_cli_prints_a_json_array_per_text(cli_store: Path, dimension: int) -> None:
    result = invoke(["embed", "-m", GEMMA_SPEC, CAT, PARAPHRASE])
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert len(first) == dimension and abs(norm(first) - 1) < 1e-9
    assert cosine(first, second) > 0.85


def test_cli_reads_stdin_a_text_per_line_and_prints_the_reply_as_json(
    cli_store: Path, dimension: int
) -> None:
    result = invoke(
        ["--output", "json", "embed", "-m", GEMMA_SPEC, "-"],
        input=f"{CAT}\n\n{PARAPHRASE}\n{UNRELATED}\n",
    )
    assert result.exit_code == 0, result.stderr
    document = json_of(result)
    assert set(document) == {"model", "embeddings", "dimensions", "metrics"}
    assert document["dimensions"] == dimension and len(document["embeddings"]) == 3
    cat, paraphrase, unrelated = document["embeddings"]
    assert cosine(cat, paraphrase) > cosine(cat, unrelated)
    empty = invoke(["embed", "-m", GEMMA_SPEC, "-"], input="\n  \n")
    assert empty.exit_code == 2 and "no text" in empty.stderr


# Ollama (the stand-in, raw llama-cpp-python behind it) ------------------------------------------


@pytest.fixture
def standin(gemma_runner: Any) -> Iterator[OllamaStandin]:
    server = OllamaStandin(gemma_runner, model_size=gemma_runner.model_path.stat().st_size)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_ollama_embed_through_api_embed(
    standin: OllamaStandin, alone: list[list[float]], dimension: int
) -> None:
    backend = OllamaBackend(ollama_config(standin.url, timeout_seconds=60))
    spec = ModelSpec.parse("gemma3:270m@ollama")
    try:
        done = backend.embed(spec, TEXTS)
        assert [len(v) for v in done.vectors] == [dimension] * 3
        assert done.metrics.prompt_tokens == 24
        # Raw llama-cpp-python's Llama.embed, a text at a time: what llmspell's runner gives
        # each text alone.
        assert max_difference(done.vectors, alone) < 1e-5
        body = standin.bodies("/api/embed")[-1]
        assert body["model"] == "gemma3:270m" and body["input"] == TEXTS and body["truncate"]
        with pytest.raises(ModelNotFound, match="pull it first"):
            backend.embed(ModelSpec.parse("nothing:here@ollama"), [CAT])
        with pytest.raises(GenerationError, match="exceeds the context length"):
            backend.embed(spec, ["word " * 600], truncate=False)
        with pytest.raises(InvalidRequest, match=r"input\[0\] is empty"):
            backend.embed(spec, [""])
    finally:
        backend.close()


def test_ollama_embed_through_the_manager_routes_like_generate(standin: OllamaStandin) -> None:
    config = Config.from_dict(
        {
            "providers": {"ollama": {"base_url": standin.url}},
            "default_backend": "ollama",
        }
    )
    manager = ProviderManager(config)
    try:
        done = manager.embed("gemma3:270m", [CAT])  # installed in Ollama only: routed there
        assert done.model == "gemma3:270m" and len(done.vectors[0]) == 640
    finally:
        manager.close()


# OpenAI-compatible endpoints (mock transport) ---------------------------------------------------


def openai_backend(handler: Any) -> OpenAIBackend:
    url = closed_port_url() + "/v1"
    config = Config.from_dict({"providers": {"gpu": {"type": "openai", "base_url": url}}})
    endpoint: Any = config.endpoints["gpu"]
    return OpenAIBackend("gpu", endpoint, transport=httpx.MockTransport(handler))


def test_openai_embeddings_are_ordered_by_index_and_normalized() -> None:
    seen: list[Any] = []

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "embedder"}]})
        assert request.url.path == "/v1/embeddings"
        seen.append(json.loads(request.content))
        data = [
            {"object": "embedding", "index": 1, "embedding": [0.0, 2.0]},
            {"object": "embedding", "index": 0, "embedding": [3.0, 4.0]},
        ]
        return httpx.Response(200, json={"data": data, "usage": {"prompt_tokens": 9}})

    backend = openai_backend(handle)
    try:
        spec = ModelSpec.parse("embedder@gpu")
        done = backend.embed(spec, ["first", "second"])
        assert seen == [{"model": "embedder", "input": ["first", "second"]}]
        assert done.vectors == [[0.6, 0.8], [0.0, 1.0]]
        assert done.metrics.prompt_tokens == 9 and done.dimensions == 2
        assert backend.embed(spec, ["first", "second"], normalize=False).vectors[0] == [3.0, 4.0]
        with pytest.raises(ModelNotFound, match="it serves embedder"):
            backend.embed(ModelSpec.parse("other@gpu"), ["x"])
    finally:
        backend.close()


@pytest.mark.parametrize(
    ("reply", "words"),
    [
        ({"data": [{"index": 0, "embedding": [1.0]}]}, "sent 1 embeddings for 2 inputs"),
        ({"data": [{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [1.0]}]}, "indexes"),
        ({"data": [{"index": 0, "embedding": [1.0]}, {"index": 1, "embedding": "x"}]}, "finite"),
        ({"object": "list"}, "no 'data' list"),
    ],
)
def test_openai_bad_embedding_replies_are_errors(reply: dict[str, Any], words: str) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "embedder"}]})
        return httpx.Response(200, json=reply)

    backend = openai_backend(handle)
    try:
        with pytest.raises(GenerationError, match=words):
            backend.embed(ModelSpec.parse("embedder@gpu"), ["a", "b"])
    finally:
        backend.close()
