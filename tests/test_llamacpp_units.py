"""Unit tests of the llamacpp pieces that need no model: chat template choice, metadata
interpretation and the loaded-model cache (with stand-in model objects)."""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import pytest

from providers import BackendUnavailable, Cancelled, ChatTemplateError, Message
from providers.llamacpp.cache import ModelCache
from providers.llamacpp.metadata import format_parameters, parse_metadata, quantization_of
from providers.llamacpp.templates import _FORMATTERS, _fold_system, choose_template

# Chat templates ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "source"),
    [
        ({"general.architecture": "gemma3"}, "family:gemma"),
        ({"general.architecture": "gemma2"}, "family:gemma"),
        ({"general.architecture": "qwen2"}, "family:chatml"),
        ({"general.architecture": "qwen3"}, "family:chatml"),
        ({"general.architecture": "phi3"}, "family:phi3"),
        ({"general.architecture": "llama", "tokenizer.ggml.model": "gpt2"}, "family:llama-3"),
        ({"general.architecture": "llama", "tokenizer.ggml.model": "llama"}, "family:llama-2"),
        ({"general.architecture": "bert", "tokenizer.chat_template": "{{ x }}"}, "gguf"),
    ],
)
def test_template_choice(values: dict[str, str], source: str) -> None:
    choice = choose_template("m", values)
    assert choice.source == source
    if source == "gguf":
        assert choice.jinja == "{{ x }}"
    else:
        assert choice.format in _FORMATTERS


def test_unknown_architecture_without_template_names_model_and_architecture() -> None:
    with pytest.raises(ChatTemplateError) as info:
        choose_template("my-bert:q8", {"general.architecture": "bert"})
    assert "my-bert:q8" in info.value.message
    assert "'bert'" in info.value.message
    assert info.value.model == "my-bert:q8"


def test_missing_architecture_is_a_template_error() -> None:
    with pytest.raises(ChatTemplateError, match=r"no general\.architecture"):
        choose_template("anon", {})


def test_gemma_format_keeps_the_system_prompt_in_the_first_user_turn() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Bye"},
    ]
    result = _FORMATTERS["gemma"](messages=messages)
    assert result.prompt == (
        "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello<end_of_turn>\n"
        "<start_of_turn>user\nBye<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    assert "<end_of_turn>" in str(result.stop)


def test_fold_system_without_a_user_turn() -> None:
    folded = _fold_system([{"role": "system", "content": "S"}])
    assert folded == [{"role": "user", "content": "S"}]


def test_every_family_format_renders() -> None:
    messages = [Message("system", "S").to_dict(), Message("user", "U").to_dict()]
    for name, formatter in _FORMATTERS.items():
        result = formatter(messages=messages)
        assert "U" in result.prompt, name


# Metadata ----------------------------------------------------------------------------------------


def test_quantization_from_file_type_then_file_name() -> None:
    assert quantization_of("15") == "Q4_K_M"
    assert quantization_of("1") == "F16"
    assert quantization_of("0") == "F32"
    assert quantization_of(None, "model.Q5_K_S.gguf") == "Q5_K_S"
    assert quantization_of(None, "x-iq4_xs.gguf") == "IQ4_XS"
    assert quantization_of("9999", "x-q8_0.gguf") == "Q8_0"
    assert quantization_of(None, "plain.gguf") is None


def test_parameter_sizes() -> None:
    assert format_parameters(268_098_176) == "268M"
    assert format_parameters(8_030_261_248) == "8.0B"
    assert format_parameters(12_000) == "12K"


def test_parse_metadata() -> None:
    values = {
        "general.architecture": "qwen2",
        "general.name": "Qwen",
        "general.file_type": "7",
        "qwen2.context_length": "32768",
        "tokenizer.chat_template": "{{ messages }}",
    }
    metadata = parse_metadata(values, file_name="q.gguf", parameter_count=494_032_768)
    assert metadata.architecture == "qwen2"
    assert metadata.quantization == "Q8_0"
    assert metadata.parameter_size == "494M"
    assert metadata.context_length == 32768
    assert metadata.chat_template == "{{ messages }}"


# Loaded-model cache ------------------------------------------------------------------------------


class StandIn:
    """What the cache stores: anything with close()."""

    def __init__(self, name: str, n_ctx: int) -> None:
        self.name = name
        self.n_ctx = n_ctx
        self.closed = False

    def close(self) -> None:
        self.closed = True


class Loader:
    def __init__(self) -> None:
        self.made: list[StandIn] = []
        self.lock = threading.Lock()

    def __call__(self, name: str) -> Any:
        def load(n_ctx: int) -> StandIn:
            with self.lock:
                model = StandIn(name, n_ctx)
                self.made.append(model)
                return model

        return load


def take(cache: ModelCache, loader: Loader, name: str, n_ctx: int | None = None) -> Any:
    lease = cache.acquire(name, loader(name), n_ctx=n_ctx, default_n_ctx=128)
    lease.release()
    return lease.model


def test_lru_eviction_closes_the_least_recently_used() -> None:
    cache, loader = ModelCache(max_loaded=2, keep_alive=0), Loader()
    a = take(cache, loader, "a")
    b = take(cache, loader, "b")
    take(cache, loader, "a")  # a is now the most recent
    take(cache, loader, "c")
    assert [e.model_id for e in cache.snapshot()] == ["a", "c"]
    assert b.closed and not a.closed
    assert cache.loads == 3
    cache.close()
    assert all(m.closed for m in loader.made)


def test_a_leased_model_is_closed_only_when_released() -> None:
    cache, loader = ModelCache(max_loaded=1, keep_alive=0), Loader()
    lease = cache.acquire("a", loader("a"), n_ctx=None, default_n_ctx=128)
    take(cache, loader, "b")  # evicts a, which is in use
    assert not lease.model.closed
    assert [e.model_id for e in cache.snapshot()] == ["b"]
    lease.release()
    assert lease.model.closed
    assert cache.unload("b") and not cache.unload("b")
    assert loader.made[1].closed


def test_concurrent_acquires_load_once() -> None:
    cache = ModelCache(max_loaded=2, keep_alive=0)
    gate = threading.Event()
    made: list[StandIn] = []

    def slow_load(n_ctx: int) -> StandIn:
        gate.wait(5)
        made.append(StandIn("m", n_ctx))
        return made[-1]

    got: list[Any] = []
    threads = [
        threading.Thread(
            target=lambda: got.append(
                cache.acquire("m", slow_load, n_ctx=None, default_n_ctx=64).model
            )
        )
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    gate.set()
    for thread in threads:
        thread.join(10)
    assert len(made) == 1 and cache.loads == 1
    assert len(got) == 4 and all(m is made[0] for m in got)
    cache.close()


def test_a_failed_load_reaches_every_waiter_and_is_retried_later() -> None:
    cache = ModelCache(max_loaded=2, keep_alive=0)

    def broken(_n_ctx: int) -> StandIn:
        raise ValueError("bad file")

    with pytest.raises(ValueError, match="bad file"):
        cache.acquire("x", broken, n_ctx=None, default_n_ctx=64)
    assert cache.snapshot() == []
    model = take(cache, Loader(), "x")
    assert model.name == "x"
    cache.close()


def test_another_context_size_reloads_and_none_accepts_any() -> None:
    cache, loader = ModelCache(max_loaded=2, keep_alive=0), Loader()
    first = take(cache, loader, "m")
    assert first.n_ctx == 128
    assert take(cache, loader, "m", None) is first
    assert take(cache, loader, "m", 128) is first
    bigger = take(cache, loader, "m", 512)
    assert bigger is not first and bigger.n_ctx == 512 and first.closed
    assert take(cache, loader, "m") is bigger
    cache.close()


def test_keep_alive_expiry_on_access_with_a_fake_clock() -> None:
    now = [1000.0]
    cache = ModelCache(max_loaded=2, keep_alive=30, clock=lambda: now[0])
    loader = Loader()
    model = take(cache, loader, "m")
    now[0] += 29
    assert [e.model_id for e in cache.snapshot()] == ["m"]
    assert cache.snapshot()[0].expires_at is not None
    now[0] += 2
    assert cache.snapshot() == []
    assert model.closed
    cache.close()


def test_keep_alive_timer_frees_idle_models() -> None:
    cache, loader = ModelCache(max_loaded=2, keep_alive=0.2), Loader()
    model = take(cache, loader, "m")
    freed = threading.Event()
    for _ in range(100):  # bounded: 10 s at most
        if model.closed:
            freed.set()
            break
        freed.wait(0.1)
    assert freed.is_set()
    assert not cache.is_loaded("m")
    cache.close()


def test_closed_cache_refuses_new_leases() -> None:
    cache = ModelCache(max_loaded=1, keep_alive=0)
    cache.close()
    with pytest.raises(BackendUnavailable, match="closed"):
        take(cache, Loader(), "m")


def test_a_cancelled_load_is_not_passed_on_to_waiters() -> None:
    cache = ModelCache(max_loaded=1, keep_alive=0)
    started, gate = threading.Event(), threading.Event()

    def cancelled_load(_n_ctx: int) -> StandIn:
        started.set()
        gate.wait(5)
        raise Cancelled("the first caller gave up")

    errors: list[BaseException] = []

    def first() -> None:
        try:
            cache.acquire("m", cancelled_load, n_ctx=None, default_n_ctx=64)
        except Cancelled as exc:
            errors.append(exc)

    thread = threading.Thread(target=first)
    thread.start()
    assert started.wait(5)
    waiter: list[Any] = []
    second = threading.Thread(target=lambda: waiter.append(take(cache, Loader(), "m")))
    second.start()
    time.sleep(0.2)  # let the second caller reach the wait for the first one's load
    gate.set()
    thread.join(10)
    second.join(10)
    assert len(errors) == 1
    assert len(waiter) == 1 and waiter[0].name == "m"
    cache.close()


def test_package_exports_and_stays_light() -> None:
    import subprocess
    import sys

    import providers.llamacpp as package

    assert sorted(package.__all__) == ["LlamaCppBackend", "import_model"]
    assert all(hasattr(package, name) for name in package.__all__)
    code = (
        "import sys, providers.llamacpp\n"
        "assert 'llama_cpp' not in sys.modules, 'llama_cpp imported eagerly'\n"
        "assert 'gguf' not in sys.modules, 'gguf imported eagerly'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize(
    ("source", "bound"),
    [
        ("{{ 2 ** 100000000000 }}", "'**' would make a number"),
        ("{% for i in range(10) %}{{ 'y' * 2000000 }}{% endfor %}", "the prompt grew past"),
        ("{% for i in range(600000) %}{% endfor %}{% for j in range(600000) %}{% endfor %}",
         "range() handed out more than 1000000"),
    ],
)  # fmt: skip
def test_chat_templates_render_within_bounds(source: str, bound: str) -> None:
    from providers.llamacpp.jinja_sandbox import TemplateLimitError, render

    with pytest.raises(TemplateLimitError, match=re.escape(bound)):
        render(source, messages=[])
    fine = "{% for m in messages %}{{ m.role }}:{{ m.content | tojson }}{% endfor %}"
    assert render(fine, messages=[{"role": "user", "content": "é"}]) == 'user:"é"'
    with pytest.raises(ValueError, match="roles must alternate"):
        render("{{ raise_exception('roles must alternate') }}", messages=[])
