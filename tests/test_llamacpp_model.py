"""The llamacpp backend with the real Gemma 3 270M GGUF.

One backend with the model loaded is shared by the module (loading costs ~0.5 s); tests that
need their own cache settings build small backends over a store of hard links, so the 253 MB
file is never copied more than once.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pydantic import ValidationError

from providers import (
    Cancelled,
    ChatTemplateError,
    Chunk,
    Config,
    GenerationError,
    GenerationOptions,
    InvalidRequest,
    Message,
    ModelNotFound,
    ModelSpec,
    Progress,
    ProviderManager,
)
from providers.llamacpp import LlamaCppBackend
from providers.llamacpp.metadata import read_metadata
from providers.types import ChunkStream, Removed

pytestmark = pytest.mark.model

T = TypeVar("T")
GEMMA = ModelSpec.parse("gemma")
SHORT = GenerationOptions(max_tokens=12, temperature=0.0, seed=1)


def make_backend(models: Path, **options: Any) -> LlamaCppBackend:
    # One thread: the two cores here are shared, and llama.cpp's threads stall when
    # oversubscribed.
    settings = {"model_directory": str(models), "n_ctx": 1024, "n_threads": 1, **options}
    return LlamaCppBackend(Config.from_dict({"providers": {"llamacpp": {"options": settings}}}))


def bounded(function: Callable[[], T], seconds: float = 60) -> T:
    """Run ``function`` on a thread; fail (instead of hanging) if it takes too long."""
    result: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(function())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    if errors:
        raise errors[0]
    return result[0]


def closable(stream: ChunkStream) -> Generator[Chunk, None, None]:
    assert isinstance(stream, Generator)
    return stream


def text_and_metrics(chunks: list[Chunk]) -> tuple[str, Any]:
    assert chunks and chunks[-1].done and chunks[-1].metrics is not None
    assert all(not c.done for c in chunks[:-1])
    return "".join(c.text for c in chunks), chunks[-1].metrics


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("llamacpp-models")


@pytest.fixture(scope="module")
def backend(store_dir: Path, gemma_path: Path) -> Iterator[LlamaCppBackend]:
    backend = make_backend(store_dir)
    backend.import_model(gemma_path, "gemma", link=True)
    try:
        yield backend
    finally:
        backend.close()


def test_import_list_info(backend: LlamaCppBackend, gemma_path: Path) -> None:
    rows = {m.id: m for m in backend.list_models()}
    row = rows["gemma"]
    assert row.size_bytes == gemma_path.stat().st_size
    assert row.quantization == "Q4_K_M"
    assert row.family == "gemma3"
    assert row.parameter_size == "270M"
    assert row.modified_at and row.modified_at.endswith("Z")

    info = backend.info(GEMMA)
    assert info.format == "gguf"
    assert info.architecture == "gemma3"
    assert info.quantization == "Q4_K_M"
    assert info.context_length == 32768
    assert info.size_bytes == gemma_path.stat().st_size
    assert info.chat_template == "family:gemma"
    assert info.details["manifest"]["sha256"] and info.details["manifest"]["linked"]
    assert Path(info.details["path"]).is_file()


def test_reimport_of_the_same_file_is_idempotent(
    backend: LlamaCppBackend, gemma_path: Path
) -> None:
    again = backend.import_model(gemma_path, "gemma", link=True)
    assert again.id == "gemma"
    assert [m.id for m in backend.list_models()].count("gemma") == 1


def test_metadata_of_the_real_file(gemma_path: Path) -> None:
    metadata = read_metadata(gemma_path)
    assert metadata.architecture == "gemma3"
    assert metadata.quantization == "Q4_K_M"
    assert metadata.context_length == 32768
    assert metadata.parameter_size == "270M"
    assert metadata.chat_template is None
    assert read_metadata(gemma_path) is metadata  # cached


def test_load_reports_progress_then_chat_and_complete_stream(backend: LlamaCppBackend) -> None:
    backend.unload(GEMMA)
    events: list[Progress] = []
    loaded = backend.load(GEMMA, events.append)
    assert [e.phase for e in events] == ["loading", "done"]
    assert loaded.id == "gemma" and loaded.expires_at
    loads = backend.load_count

    chunks = list(backend.chat(GEMMA, [Message("user", "Say hello.")], SHORT))
    text, metrics = text_and_metrics(chunks)
    assert text.strip()
    assert len(chunks) > 2  # streamed in pieces, not one block
    assert metrics.prompt_tokens > 5
    assert 0 < metrics.generated_tokens <= 12
    assert metrics.stop_reason in ("stop", "length")
    assert metrics.load_seconds == 0.0  # already loaded
    assert metrics.time_to_first_token is not None

    chunks = list(backend.complete(GEMMA, "The capital of France is", SHORT))
    text, metrics = text_and_metrics(chunks)
    assert text.strip()
    assert metrics.generated_tokens == 12 and metrics.stop_reason == "length"
    assert metrics.tokens_per_second and metrics.tokens_per_second > 0
    assert backend.load_count == loads  # neither request loaded the model again
    assert [m.id for m in backend.loaded()] == ["gemma"]


def test_system_prompt_and_history_are_accepted(backend: LlamaCppBackend) -> None:
    messages = [
        Message("system", "You answer in one word."),
        Message("user", "Name a colour."),
        Message("assistant", "Blue."),
        Message("user", "Another one."),
    ]
    _, metrics = text_and_metrics(list(backend.chat(GEMMA, messages, SHORT)))
    assert metrics.prompt_tokens > 20
    assert metrics.generated_tokens > 0


def test_first_request_after_unload_reports_its_load_time(backend: LlamaCppBackend) -> None:
    backend.unload(GEMMA)
    assert backend.loaded() == []
    loads = backend.load_count
    _, metrics = text_and_metrics(list(backend.complete(GEMMA, "Hello", SHORT)))
    assert metrics.load_seconds > 0
    assert metrics.total_seconds >= metrics.load_seconds
    assert backend.load_count == loads + 1


def test_seed_makes_sampling_repeatable(backend: LlamaCppBackend, store_dir: Path) -> None:
    """With ``reproducible`` (the prompt evaluated as on a cold model each time): by default a
    warm model reuses the evaluated prompt, whose last bits can differ, and a temperature-1
    sample near a boundary with them (seen on an AMD EPYC: the same seed, another story)."""
    exact = make_backend(store_dir, reproducible=True)
    try:
        options = GenerationOptions(max_tokens=10, temperature=1.0, seed=42)
        first, _ = text_and_metrics(list(exact.complete(GEMMA, "Once upon a time", options)))
        second, _ = text_and_metrics(list(exact.complete(GEMMA, "Once upon a time", options)))
    finally:
        exact.close()
    assert first == second


def test_stop_strings_end_generation(backend: LlamaCppBackend) -> None:
    options = GenerationOptions(max_tokens=30, temperature=0.0, stop=(",",))
    text, metrics = text_and_metrics(list(backend.complete(GEMMA, "1, 2, 3, 4", options)))
    assert "," not in text
    assert metrics.stop_reason == "stop"


def test_cancel_mid_stream_leaves_the_model_usable(backend: LlamaCppBackend) -> None:
    options = GenerationOptions(max_tokens=200)
    stream = closable(backend.complete(GEMMA, "Write a long story about a cat.", options))
    first = [next(stream), next(stream)]
    assert all(c.text and not c.done for c in first)
    stream.close()
    assert not any(e.in_use for e in backend.cache.snapshot())

    def again() -> str:
        text, _ = text_and_metrics(list(backend.chat(GEMMA, [Message("user", "Hi")], SHORT)))
        return text

    assert bounded(again).strip()


def test_cancel_event_stops_the_generation_with_cancelled(backend: LlamaCppBackend) -> None:
    cancel = threading.Event()
    options = GenerationOptions(max_tokens=200)
    pieces: list[str] = []
    with pytest.raises(Cancelled, match="interrupted"):
        for chunk in backend.complete(
            GEMMA, "Write a long story about a cat.", options, cancel=cancel
        ):
            pieces.append(chunk.text)
            if len(pieces) == 3:
                cancel.set()
    assert len(pieces) == 3  # not one token after the cancel
    assert not any(e.in_use for e in backend.cache.snapshot())


def test_a_stream_never_started_holds_nothing(backend: LlamaCppBackend) -> None:
    stream = closable(backend.complete(GEMMA, "unused", SHORT))
    stream.close()
    assert not any(e.in_use for e in backend.cache.snapshot())
    assert bounded(lambda: text_and_metrics(list(backend.complete(GEMMA, "Hi", SHORT))))


def test_concurrent_generations_on_one_model_are_serialized(backend: LlamaCppBackend) -> None:
    results: list[str] = []

    def generate() -> None:
        text, _ = text_and_metrics(list(backend.complete(GEMMA, "Hello there", SHORT)))
        results.append(text)

    threads = [threading.Thread(target=generate) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 3
    assert len(set(results)) == 1  # greedy + same prompt: same text, no interleaving damage


def test_bad_requests(backend: LlamaCppBackend) -> None:
    with pytest.raises(InvalidRequest, match="at least one message"):
        backend.chat(GEMMA, [], SHORT)
    with pytest.raises(ValidationError, match="max_tokens"):  # options check themselves
        GenerationOptions(max_tokens=0)
    with pytest.raises(ModelNotFound, match="not installed"):
        backend.complete(ModelSpec.parse("absent"), "x", SHORT)


def test_context_size_option_reloads_only_when_it_changes(backend: LlamaCppBackend) -> None:
    backend.load(GEMMA)
    loads = backend.load_count
    options = GenerationOptions(max_tokens=4, temperature=0.0, num_ctx=512)
    list(backend.complete(GEMMA, "Hi", options))
    assert backend.load_count == loads + 1
    list(backend.complete(GEMMA, "Hi", options))
    list(backend.complete(GEMMA, "Hi", SHORT))  # no num_ctx: whatever is loaded
    assert backend.load_count == loads + 1
    assert backend.info(GEMMA).details["n_ctx"] == 512
    tiny = GenerationOptions(max_tokens=4, num_ctx=16)  # llama.cpp's minimum is 256
    list(backend.complete(GEMMA, "Hi", tiny))
    assert backend.info(GEMMA).details["n_ctx"] == 256
    with pytest.raises(GenerationError, match="the context holds 256"):
        list(backend.complete(GEMMA, "word " * 300, tiny))


def test_a_conversation_longer_than_the_context_truncates_or_is_refused(
    backend: LlamaCppBackend,
) -> None:
    """num_ctx 256 and ten turns of about 40 tokens: ``truncate`` leaves out the oldest turns
    (in pairs, after the system prompt) and says how many; ``error`` refuses the request."""
    history = [Message("system", "You answer briefly.")]
    for n in range(10):
        history.append(Message("user", f"Tell me fact {n} about the sea, in detail, please. " * 3))
        history.append(Message("assistant", f"Fact {n}: the sea is large and salty."))
    history.append(Message("user", "And the last fact?"))
    small = GenerationOptions(max_tokens=8, temperature=0.0, num_ctx=256)
    with pytest.raises(GenerationError, match="set overflow to truncate"):
        list(backend.chat(GEMMA, history, small))
    kept = GenerationOptions(max_tokens=8, temperature=0.0, num_ctx=256, overflow="truncate")
    text, metrics = text_and_metrics(list(backend.chat(GEMMA, history, kept)))
    assert metrics.dropped_messages % 2 == 0 and 2 <= metrics.dropped_messages < 20
    assert metrics.prompt_tokens + 8 <= 256 and metrics.generated_tokens > 0
    # what is left is the system prompt and the latest turns: the same prompt as sending them
    rest = [history[0], *history[1 + metrics.dropped_messages :]]
    same = GenerationOptions(max_tokens=8, temperature=0.0, num_ctx=256)
    again, again_metrics = text_and_metrics(list(backend.chat(GEMMA, rest, same)))
    assert (again, again_metrics.prompt_tokens) == (text, metrics.prompt_tokens)
    assert again_metrics.dropped_messages == 0
    alone = [Message("user", "word " * 400)]
    with pytest.raises(GenerationError, match="its last message alone does not fit"):
        list(backend.chat(GEMMA, alone, kept))


def test_fit_conversation_keeps_the_system_prompt_and_whole_turns() -> None:
    from providers.llamacpp.generation import Prompt, fit_conversation

    def tokens_of(messages: Any) -> Prompt:
        return Prompt([0] * sum(len(m.content) for m in messages))

    messages = [
        Message("system", "ss"),
        Message("user", "u1u1"),
        Message("assistant", "a1a1"),
        Message("user", "u2u2"),
        Message("assistant", "a2a2"),
        Message("user", "u3"),
    ]
    assert fit_conversation(messages, tokens_of, 100).dropped == 0
    fitted = fit_conversation(messages, tokens_of, 12)
    assert (fitted.dropped, len(fitted.tokens)) == (2, 12)
    assert fit_conversation(messages, tokens_of, 1).dropped == 4  # the last message stays


def test_native_log_goes_to_python_logging(
    store_dir: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="providers.llamacpp.native")
    fresh = make_backend(store_dir, n_ctx=256)
    try:
        capfd.readouterr()
        fresh.load(GEMMA)
        list(fresh.complete(GEMMA, "Hi", GenerationOptions(max_tokens=2)))
        out, err = capfd.readouterr()
    finally:
        fresh.close()
    assert out == ""
    assert err == ""
    native = [r for r in caplog.records if r.name == "providers.llamacpp.native"]
    assert any("llama" in r.getMessage() for r in native)


def test_unload_then_remove(store_dir: Path, gemma_path: Path) -> None:
    local = make_backend(store_dir)
    try:
        local.import_model(gemma_path, "to-remove:v1", link=True)
        local.load(ModelSpec.parse("to-remove"))
        assert [m.id for m in local.loaded()] == ["to-remove:v1"]
        assert local.unload(ModelSpec.parse("to-remove")) == "to-remove:v1"
        assert local.loaded() == []
        local.load(ModelSpec.parse("to-remove:v1"))
        assert local.remove(ModelSpec.parse("to-remove")) == Removed("to-remove:v1")  # unloads
        assert local.loaded() == []
        assert "to-remove:v1" not in [m.id for m in local.list_models()]
        assert gemma_path.is_file()
    finally:
        local.close()


def test_lru_eviction_with_one_slot(tmp_path: Path, gemma_path: Path) -> None:
    local = make_backend(tmp_path / "m", max_loaded_models=1, n_ctx=256)
    try:
        local.import_model(gemma_path, "first", link=True)
        local.import_model(gemma_path, "second", link=True)
        local.load(ModelSpec.parse("first"))
        local.load(ModelSpec.parse("second"))
        assert [m.id for m in local.loaded()] == ["second"]
        list(local.complete(ModelSpec.parse("first"), "Hi", GenerationOptions(max_tokens=2)))
        assert [m.id for m in local.loaded()] == ["first"]
        assert local.load_count == 3
    finally:
        local.close()


def test_keep_alive_expiry(tmp_path: Path, gemma_path: Path) -> None:
    local = make_backend(tmp_path / "m", keep_alive=0.3, n_ctx=256)
    try:
        local.import_model(gemma_path, "brief", link=True)
        local.load(ModelSpec.parse("brief"))
        gone = threading.Event()
        for _ in range(100):  # bounded: 10 s at most
            if not local.cache.is_loaded("brief"):  # does not itself expire anything
                gone.set()
                break
            gone.wait(0.1)
        assert gone.is_set()
        assert local.loaded() == []
    finally:
        local.close()


def test_concurrent_loads_of_one_model_load_once(tmp_path: Path, gemma_path: Path) -> None:
    local = make_backend(tmp_path / "m", n_ctx=256)
    try:
        local.import_model(gemma_path, "shared", link=True)
        barrier = threading.Barrier(4)
        ids: list[str] = []

        def load() -> None:
            barrier.wait(10)
            ids.append(local.load(ModelSpec.parse("shared")).id)

        threads = [threading.Thread(target=load) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert ids == ["shared"] * 4
        assert local.load_count == 1
    finally:
        local.close()


def test_through_the_provider_manager(store_dir: Path, backend: LlamaCppBackend) -> None:
    config = Config.from_dict(
        {
            "default_backend": "ollama",
            "providers": {"llamacpp": {"options": {"model_directory": str(store_dir)}}},
        }
    )
    manager = ProviderManager(config)
    try:
        listing = manager.list_models()
        assert "gemma" in [m.id for m in listing.models if m.backend == "llamacpp"]
        chosen, spec = manager.resolve("gemma")
        assert chosen.name == "llamacpp" and spec.backend == "llamacpp"
        assert manager.info("gemma").architecture == "gemma3"
        # Routing (issue 21, item 2): a name no backend knows is not sent to Ollama
        with pytest.raises(ModelNotFound, match="not installed anywhere"):
            manager.resolve("not-installed-anywhere")
    finally:
        manager.close()


def test_unknown_architecture_without_template_refuses_chat(
    backend: LlamaCppBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    from providers.llamacpp import backend as backend_module

    real = read_metadata

    def renamed(path: Path) -> Any:
        metadata = real(path)
        values = {**metadata.values, "general.architecture": "mystery"}
        return type(metadata)(**{**metadata.__dict__, "values": values})

    monkeypatch.setattr(backend_module, "read_metadata", renamed)
    with pytest.raises(ChatTemplateError, match=r"'gemma'.*'mystery'"):
        backend.chat(GEMMA, [Message("user", "Hi")], SHORT)
    assert backend.info(GEMMA).chat_template is None


GEMMA_JINJA = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}"
    "<start_of_turn>{{ role }}\n{{ message['content'] | trim }}<end_of_turn>\n"
    "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def use_chat_template(monkeypatch: pytest.MonkeyPatch, template: str) -> None:
    """Make the backend read ``template`` as every GGUF's own chat template."""
    from providers.llamacpp import backend as backend_module

    def with_template(path: Path) -> Any:
        metadata = read_metadata(path)
        values = {**metadata.values, "tokenizer.chat_template": template}
        return type(metadata)(**{**metadata.__dict__, "values": values})

    monkeypatch.setattr(backend_module, "read_metadata", with_template)


def test_a_gguf_chat_template_is_used_when_present(
    backend: LlamaCppBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    messages = [Message("user", "Name a fruit.")]
    family_text, family = text_and_metrics(list(backend.chat(GEMMA, messages, SHORT)))

    use_chat_template(monkeypatch, GEMMA_JINJA)
    assert backend.info(GEMMA).chat_template == "gguf"
    own_text, own = text_and_metrics(list(backend.chat(GEMMA, messages, SHORT)))
    # The same prompt through the GGUF's template: one BOS, same tokens, same greedy text.
    assert own.prompt_tokens == family.prompt_tokens
    assert own_text == family_text


@pytest.mark.parametrize(
    ("template", "bound"),
    [
        ("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
         "range() handed out more than"),
        ("{{ 'x' * 3000000000 }}", "'*' would make 3000000000 items"),
    ],
)  # fmt: skip
def test_a_hostile_gguf_chat_template_fails_fast_and_the_model_stays_usable(
    backend: LlamaCppBackend, monkeypatch: pytest.MonkeyPatch, template: str, bound: str
) -> None:
    use_chat_template(monkeypatch, template)
    started = time.monotonic()
    with pytest.raises(ChatTemplateError, match=re.escape(bound)):
        list(backend.chat(GEMMA, [Message("user", "Hi")], SHORT))
    assert time.monotonic() - started < 60  # a hang guard: it fails in well under a second
    monkeypatch.undo()
    text, _ = text_and_metrics(list(backend.complete(GEMMA, "The sea is", SHORT)))
    assert text


def test_module_level_import_uses_the_configured_store(gemma_path: Path) -> None:
    from providers.llamacpp import import_model

    info = import_model(gemma_path, link=True)
    assert info.id == "gemma-3-270m-q4_k_m"  # derived from the file name
    store = Config.load().model_directory()
    assert (store / "gemma-3-270m-q4_k_m" / "manifest.json").is_file()
