"""No runaway by default: the defaults a request's unset options get (``[generation]``, then the
llamacpp backend's Ollama-like sampling and ``max_tokens``), explicit options winning, and the
repetition stop of the llamacpp token loop."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from providers import Config, ConfigError, GenerationOptions, Message, ModelSpec, ProviderManager
from providers.llamacpp import LlamaCppBackend
from providers.llamacpp.generation import (
    DEFAULT_MAX_TOKENS,
    SAMPLING_DEFAULTS,
    Prompt,
    _sampling,
    repeated_tail,
    stream_prompt,
)
from providers.options import with_defaults

GEMMA = ModelSpec.parse("gemma3-270m")


# Merging ------------------------------------------------------------------------------------


def test_explicit_options_win_and_unset_ones_come_from_the_first_default_setting_them() -> None:
    request = GenerationOptions(temperature=0.0, stop=("\n",))
    table = GenerationOptions(temperature=0.5, max_tokens=100, seed=3)
    merged = with_defaults(request, table, SAMPLING_DEFAULTS)
    assert merged.temperature == 0.0  # the request's, though both defaults set one
    assert merged.stop == ("\n",)
    assert merged.max_tokens == 100 and merged.seed == 3  # the table's
    assert (merged.top_k, merged.top_p, merged.repeat_penalty) == (40, 0.9, 1.1)  # backend's
    assert with_defaults(GenerationOptions(), table).stop == ()
    assert with_defaults(GenerationOptions(), GenerationOptions(stop=("END",))).stop == ("END",)


def test_the_generation_table_is_checked_and_applied_by_the_manager() -> None:
    config = Config.from_dict({"generation": {"max_tokens": 64, "temperature": 0.2}})
    manager = ProviderManager(config)
    options = manager.generation_options(GenerationOptions(temperature=1.0))
    assert (options.temperature, options.max_tokens) == (1.0, 64)
    assert manager.generation_options(None).temperature == 0.2
    assert ProviderManager(Config()).generation_options(None) == GenerationOptions()

    with pytest.raises(ConfigError, match=r"'generation'.*unknown option 'temprature'"):
        Config.from_dict({"generation": {"temprature": 0.5}})
    with pytest.raises(ConfigError, match=r"generation\.top_p"):
        Config.from_dict({"generation": {"top_p": 2.0}})


def test_stall_seconds_is_a_llamacpp_option() -> None:
    assert Config().providers.llamacpp.options.stall_seconds == 10.0
    config = Config.from_dict({"providers": {"llamacpp": {"options": {"stall_seconds": 0}}}})
    assert config.providers.llamacpp.options.stall_seconds == 0
    with pytest.raises(ConfigError, match="stall_seconds"):
        Config.from_dict({"providers": {"llamacpp": {"options": {"stall_seconds": -1}}}})


# The repetition stop --------------------------------------------------------------------------


LINE = "The capital of the United States is paying\n"


def test_a_passage_repeated_four_times_is_found() -> None:
    assert repeated_tail("Hello. " + LINE * 4) == LINE
    assert repeated_tail("Hello. " + LINE * 3) is None
    assert repeated_tail(LINE * 3 + LINE[:-5]) is None  # repeats must end the text
    assert repeated_tail("x" * 9 + "abcdefghijklmnop" * 4) == "abcdefghijklmnop"


def test_short_units_and_varied_lines_are_not_repetition() -> None:
    assert repeated_tail("-" * 400) is None
    assert repeated_tail("0, " * 200) is None
    assert repeated_tail("| --- | --- |\n" * 12) is None  # 14 characters: under the minimum
    lines = "".join(f"The capital of country {n} is city {n}.\n" for n in range(40))
    assert repeated_tail(lines) is None
    assert repeated_tail(("z" * 300) * 4) is None


class LoopingLlama:
    """Stands in for a Llama whose stream repeats one line forever (until closed)."""

    n_batch = 512
    n_tokens = 0
    input_ids: tuple[int, ...] = ()

    def __init__(self) -> None:
        self.pieces = 0
        self.closed = False

    def n_ctx(self) -> int:
        return 4096

    def create_completion(self, **_: Any) -> Iterator[dict[str, Any]]:
        def parts() -> Iterator[dict[str, Any]]:
            try:
                yield {"choices": [{"text": "Once upon a time.\n", "finish_reason": None}]}
                while True:
                    for word in LINE.split(" "):
                        self.pieces += 1
                        yield {"choices": [{"text": word + " ", "finish_reason": None}]}
            finally:
                self.closed = True

        return parts()


def test_the_token_loop_stops_a_looping_stream_with_stop_reason_repetition() -> None:
    llama = LoopingLlama()
    chunks = list(
        stream_prompt("m", llama, Prompt([1, 2]), GenerationOptions(), 0.0, None, 0.0)  # type: ignore[arg-type]
    )
    assert chunks[-1].done and chunks[-1].metrics is not None
    assert chunks[-1].metrics.stop_reason == "repetition"
    assert llama.closed
    text = "".join(c.text for c in chunks)
    assert 4 <= text.count("United States") <= 6  # stopped within a few dozen characters
    assert llama.pieces < 60


# The real model -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def backend(
    tmp_path_factory: pytest.TempPathFactory, gemma_path: Path
) -> Iterator[LlamaCppBackend]:
    models = tmp_path_factory.mktemp("defaults-models")
    settings = {"model_directory": str(models), "n_threads": 1}  # n_ctx: the default, 4096
    backend = LlamaCppBackend(Config.from_dict({"providers": {"llamacpp": {"options": settings}}}))
    backend.import_model(gemma_path, "gemma3-270m", link=True)
    try:
        yield backend
    finally:
        backend.close()


@pytest.mark.model
def test_the_bare_prompt_on_the_base_model_ends_by_itself(backend: LlamaCppBackend) -> None:
    """The issue's first try: chat mode, no options. It ran to the end of the context (4,082
    tokens, 2 min 28 s); now at most 512 tokens (~12 s on a quiet machine, 120 s allowed)."""
    started = time.monotonic()
    messages = [Message("user", "The capital of France is")]
    chunks = list(backend.chat(GEMMA, messages, GenerationOptions()))
    seconds = time.monotonic() - started
    metrics = chunks[-1].metrics
    assert metrics is not None
    assert metrics.generated_tokens <= DEFAULT_MAX_TOKENS
    assert metrics.stop_reason in ("stop", "length", "repetition")
    assert "".join(c.text for c in chunks).strip()
    assert seconds < 120, f"{seconds:.0f} s for {metrics.generated_tokens} tokens"


@pytest.mark.model
def test_the_backend_samples_with_its_defaults_unless_told_otherwise(
    backend: LlamaCppBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    from providers.llamacpp.runner import Runner

    calls: list[GenerationOptions] = []
    original = Runner.generate

    def spy(self: Runner, request: Any, options: GenerationOptions, **kwargs: Any) -> Any:
        calls.append(options)
        return original(self, request, options, **kwargs)

    monkeypatch.setattr(Runner, "generate", spy)
    list(backend.complete(GEMMA, "Hello", GenerationOptions()))
    explicit = GenerationOptions(temperature=0.0, top_k=1, repeat_penalty=1.0, max_tokens=3)
    chunks = list(backend.complete(GEMMA, "Hello", explicit))
    defaults, chosen = (
        _sampling(options) | {"max_tokens": options.max_tokens} for options in calls
    )
    assert {k: defaults[k] for k in ("temperature", "top_k", "top_p", "repeat_penalty")} == {
        "temperature": 0.8,
        "top_k": 40,
        "top_p": 0.9,
        "repeat_penalty": 1.1,
    }
    assert defaults["max_tokens"] == DEFAULT_MAX_TOKENS
    assert (chosen["temperature"], chosen["top_k"], chosen["repeat_penalty"]) == (0.0, 1, 1.0)
    assert chosen["max_tokens"] == 3 and chosen["top_p"] == 0.9
    metrics = chunks[-1].metrics
    assert metrics is not None and metrics.generated_tokens <= 3  # the runner used them
    assert backend.cache.snapshot()[0].model_id == "gemma3-270m"
