"""Model runners, with the real Gemma 3 270M: each loaded model lives in its own process, so a
llama.cpp that aborts, a ``kill -9``, a cancel inside a long prompt evaluation or a template
that renders for too long ends a runner, never this process; the next request starts a new
runner. Unload returns the runner's memory to the system; a load that would not fit in memory,
or a context above ``max_context``, is refused before a runner starts.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from providers import (
    Cancelled,
    Config,
    GenerationError,
    GenerationOptions,
    InvalidRequest,
    Message,
    ModelLoadError,
    ModelSpec,
)
from providers.llamacpp import LlamaCppBackend
from providers.llamacpp import memory as memory_module
from providers.llamacpp.metadata import read_metadata
from providers.llamacpp.runner import Bounds, Runner
from providers.llamacpp.runner_messages import ChatRequest, Load
from providers.llamacpp.templates import ChatTemplate
from tests.gguf_files import edited_copy

pytestmark = pytest.mark.model

GEMMA = ModelSpec.parse("gemma")
SHORT = GenerationOptions(max_tokens=8, temperature=0.0)
HANG = 120.0  # seconds: only catches a hang


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def runner_pid(backend: LlamaCppBackend) -> int:
    pid = backend.info(GEMMA).details["runner_pid"]
    assert isinstance(pid, int)
    return pid


def ended(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return True
    return state == "Z"


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory, gemma_path: Path) -> Path:
    models = tmp_path_factory.mktemp("runner-models")
    backend = make_backend(models)
    try:
        backend.import_model(gemma_path, "gemma", link=True)  # with the probe load
    finally:
        backend.close()
    return models


def make_backend(models: Path, **options: Any) -> LlamaCppBackend:
    settings = {"model_directory": str(models), "n_ctx": 1024, "n_threads": 1, **options}
    return LlamaCppBackend(Config.from_dict({"providers": {"llamacpp": {"options": settings}}}))


@pytest.fixture
def backend(store_dir: Path) -> Iterator[LlamaCppBackend]:
    made = make_backend(store_dir)
    try:
        yield made
    finally:
        made.close()


def text_of(backend: LlamaCppBackend) -> str:
    chunks = list(backend.complete(GEMMA, "The capital of France is", SHORT))
    assert chunks[-1].done
    return "".join(c.text for c in chunks)


def test_kill_9_of_a_runner_mid_generation_is_an_error_and_the_next_request_works(
    backend: LlamaCppBackend,
) -> None:
    before = text_of(backend)
    first = runner_pid(backend)
    stream = backend.complete(GEMMA, "Once upon a time", GenerationOptions(max_tokens=400))
    started = time.monotonic()
    with pytest.raises(GenerationError) as crashed:
        for index, _chunk in enumerate(stream):
            if index == 2:
                os.kill(first, signal.SIGKILL)
            assert time.monotonic() - started < HANG
    message = crashed.value.message
    assert "the llama.cpp runner for gemma crashed (killed by SIGKILL) while generating" in message
    assert "the next request starts a new one" in message
    assert backend.loaded() == []  # the dead runner is not listed as loaded
    assert text_of(backend) == before  # a new runner, the same greedy answer
    assert runner_pid(backend) != first

    # A runner that dies while idle (the OOM killer) is replaced on the next request too.
    second = runner_pid(backend)
    os.kill(second, signal.SIGKILL)
    deadline = time.monotonic() + HANG
    while backend.loaded() and time.monotonic() < deadline:  # once its exit is collected
        time.sleep(0.05)
    assert text_of(backend) == before
    assert runner_pid(backend) not in (first, second)


def test_unload_ends_the_runner_and_its_memory_returns(backend: LlamaCppBackend) -> None:
    own_before = rss_kib(os.getpid())
    backend.load(GEMMA)
    text_of(backend)
    pid = runner_pid(backend)
    runner_rss = rss_kib(pid)
    own_after = rss_kib(os.getpid())
    assert runner_rss > 150 * 1024, runner_rss  # the weights are paged in, in the runner
    assert own_after - own_before < 50 * 1024, (own_before, own_after)  # not in this process
    backend.unload(GEMMA)
    assert ended(pid)
    assert backend.loaded() == []


def test_a_cancel_inside_a_long_prompt_evaluation_stops_the_runner_at_once(
    store_dir: Path,
) -> None:
    """llama.cpp cannot be interrupted inside the evaluation of a prompt (here ~4,000 tokens
    on one thread, 10-20 s): the runner is stopped after the grace of 2 s."""
    backend = make_backend(store_dir, n_ctx=4096)
    try:
        text_of(backend)
        pid = runner_pid(backend)
        cancel = threading.Event()
        long_prompt = "The quick brown fox jumps over the lazy dog. " * 400
        stream = backend.complete(
            GEMMA, long_prompt, GenerationOptions(max_tokens=5), cancel=cancel
        )
        timer = threading.Timer(0.5, cancel.set)
        started = time.monotonic()
        timer.start()
        with pytest.raises(Cancelled, match=r"did not stop within 2 s, inside llama\.cpp"):
            list(stream)
        took = time.monotonic() - started
        assert took < 30, f"{took:.1f} s"  # (the message says it was stopped, not finished)
        assert ended(pid)
        assert text_of(backend)  # a new runner
    finally:
        backend.close()


def test_a_num_ctx_above_max_context_is_refused_and_the_default_is_clamped(
    store_dir: Path,
) -> None:
    backend = make_backend(store_dir, max_context=512)
    try:
        with pytest.raises(InvalidRequest, match=r"num_ctx 1024 is more than 512.*max_context"):
            backend.complete(GEMMA, "hi", GenerationOptions(num_ctx=1024))
        with pytest.raises(InvalidRequest, match="num_ctx 16777216 is more than gemma's"):
            backend.complete(GEMMA, "hi", GenerationOptions(num_ctx=2**24))
        assert backend.load_count == 0
        backend.load(GEMMA)  # n_ctx 1024 configured, 512 allowed
        assert [row.id for row in backend.loaded()] == ["gemma"]
        assert backend.info(GEMMA).details["n_ctx"] == 512
    finally:
        backend.close()


def test_a_load_that_would_not_fit_in_memory_is_refused_with_the_estimate(
    backend: LlamaCppBackend, monkeypatch: pytest.MonkeyPatch, gemma_path: Path
) -> None:
    metadata = read_metadata(gemma_path)
    need = memory_module.estimate(metadata, gemma_path.stat().st_size, 32768)
    # 18 layers x 1 KV head x (256 + 256) x 2 bytes per position: 576 MiB for 32768 positions
    assert need.context == 18 * 512 * 2 * 32768
    assert need.weights == gemma_path.stat().st_size
    monkeypatch.setattr(memory_module, "available_bytes", lambda: 300 * 2**20)
    with pytest.raises(ModelLoadError) as refused:
        backend.complete(GEMMA, "hi", GenerationOptions(num_ctx=32768))
    assert "gemma with num_ctx 32768 needs about" in refused.value.message
    assert (
        "context 576 MiB" in refused.value.message
        and "300 MiB is available" in refused.value.message
    )
    assert backend.load_count == 0 and backend.loaded() == []


# The runner itself --------------------------------------------------------------------------


def load_of(path: Path, **overrides: Any) -> Load:
    fields: dict[str, Any] = {
        "model_id": "gemma",
        "path": path,
        "n_ctx": 512,
        "n_threads": 1,
        "n_gpu_layers": 0,
        "conversation_cache_bytes": 0,
        "reproducible": False,
    }
    return Load(**(fields | overrides))


def test_a_llama_cpp_abort_ends_the_runner_with_its_last_words(
    tmp_path: Path, gemma_path: Path
) -> None:
    """What the header check refuses in the backend (block_count 0), given to llama.cpp: its
    GGML_ASSERT aborts the runner, which is an error here, with llama.cpp's own line."""
    hostile = edited_copy(gemma_path, tmp_path / "no-layers.gguf", block_count=0)
    with pytest.raises(ModelLoadError) as crashed:
        Runner(load_of(hostile), Bounds(load_seconds=HANG, render_seconds=HANG))
    message = crashed.value.message
    assert "the llama.cpp runner for gemma crashed (killed by SIGABRT) while loading it" in message
    assert "GGML_ASSERT" in message and "n_layer" in message


def test_a_template_that_renders_too_long_stops_the_runner(gemma_path: Path) -> None:
    runner = Runner(load_of(gemma_path), Bounds(load_seconds=HANG, render_seconds=0.02))
    pid = runner.pid
    slow = ChatTemplate(
        source="gguf",
        # A million numbers: seconds to render and tokenize, within the renderer's own bounds.
        jinja="{% for a in range(999) %}{% for b in range(999) %}{{ b }}{% endfor %}{% endfor %}",
    )
    stream = runner.generate(
        ChatRequest(slow, (Message("user", "hi"),)),
        SHORT,
        load_seconds=0.0,
        queue_seconds=0.0,
        cancel=None,
    )
    with pytest.raises(GenerationError, match=r"took more than 0\.02 s .*render_timeout"):
        list(stream)
    assert not runner.alive and ended(pid)
    runner.close()


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        ({"block_count": 0}, "gemma3.block_count is 0"),
        ({"block_count": 2**32 - 1}, "gemma3.block_count is 4294967295"),
        ({"attention__layer_norm_rms_epsilon": math.nan}, "layer_norm_rms_epsilon is nan"),
        ({"attention__head_count_kv": 0}, "has wrong shape"),  # found by the probe load
    ],
    ids=["no layers", "2^32-1 layers", "NaN epsilon", "no KV heads"],
)
def test_a_hostile_edit_of_the_real_model_is_refused_and_the_model_works_after(
    edit: dict[str, float], reason: str, tmp_path: Path, backend: LlamaCppBackend
) -> None:
    stored = backend.store.get("gemma")
    assert stored is not None
    hostile = edited_copy(stored.path, tmp_path / "upload.gguf", **edit)
    with pytest.raises(ModelLoadError) as refused:
        backend.import_model(hostile, "hostile")
    assert reason in refused.value.message and str(hostile) in refused.value.message
    assert [m.id for m in backend.list_models()] == ["gemma"]
    assert text_of(backend)
