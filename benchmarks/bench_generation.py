"""Generation through the kernel against raw llama-cpp-python: tokens/s, time to first token,
and the second request on a model (no reload).

The llmspell path is the whole trip: ``LLMSpellClient.model_request("generate", stream=True)``
→ a kernel process (``llmspell kernel start --daemon``'s) → ``LlamaCppBackend.complete`` →
IOPub ``model_stream`` messages → the client's ``on_stream`` callback, timed in this process.
The raw path is what the backend does underneath, in this process: the same GGUF loaded by
``llama_cpp.Llama`` with the same ``n_ctx``/``n_threads``/``n_batch``/``last_n_tokens_size`` as a
model runner, the prompt tokenized the same way and ``create_completion(stream=True)`` with the
same greedy sampling (the backend's defaults for top_k, top_p, repeat_penalty) and
``max_tokens``.

Rounds interleave (raw then kernel, kernel then raw, ...) with one prompt per round used by
both, so background load and llama.cpp's prompt cache hit both alike. Per round:

- tokens/s = (tokens - 1) / (last piece - first piece), as seen by the consumer (the kernel
  sends the first token at once, then one ``model_stream`` message per 100 ms holding the
  tokens of that time, so its tokens are the reply's ``generated_tokens``; raw has a piece per
  token);
- TTFT = first piece - call;
- second request: the kernel unloads the model, a first request reloads it, a second request
  (another prompt) is timed, and raw generates that same prompt warm.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from .common import (
    GEMMA_ID,
    Report,
    backend_settings,
    fmt,
    interleaved,
    parse_args,
    rounds,
    summarize,
    workspace,
)

NAME = "generation"
PROMPTS = (
    "The history of the city of Rome begins",
    "Here is a simple recipe for bread. First,",
    "The three laws of thermodynamics can be explained as follows.",
    "Once upon a time, in a small village by the sea, there lived",
    "A short guide to learning the piano for adults:",
    "The main differences between cats and dogs as pets are",
    "In computer science, a hash table is",
    "The weather in the mountains changes quickly because",
    "Ten tips for writing clear documentation:",
    "The solar system has eight planets. The first one,",
    "How a bicycle works, explained for children:",
    "The most important inventions of the nineteenth century were",
)


class Sample:
    """One streamed generation as its consumer saw it."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.pieces: list[float] = []
        self.ended = self.started
        self.tokens: int | None = None

    def piece(self, _text: str = "") -> None:
        self.pieces.append(time.perf_counter())

    def end(self) -> None:
        self.ended = time.perf_counter()

    @property
    def ttft(self) -> float:
        return self.pieces[0] - self.started

    @property
    def tokens_per_second(self) -> float:
        # The kernel joins the tokens of each 100 ms into one message: count tokens, not pieces.
        tokens = self.tokens if self.tokens is not None else len(self.pieces)
        span = self.pieces[-1] - self.pieces[0]
        return (tokens - 1) / span if span > 0 else 0.0


def raw_generate(llama: Any, prompt: str, max_tokens: int) -> Sample:
    # What LlamaCppBackend.complete → _run does, minus llmspell: same tokenization, same call.
    from providers.llamacpp.generation import SAMPLING_DEFAULTS, _sampling
    from providers.options import GenerationOptions, with_defaults

    sample = Sample()
    tokens = llama.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
    # The backend's sampling: greedy, with its defaults for what a request leaves unset
    # (top_k, top_p, repeat_penalty: they cost time even when greedy).
    options = with_defaults(GenerationOptions(temperature=0.0), SAMPLING_DEFAULTS)
    stream = llama.create_completion(
        prompt=tokens, stream=True, max_tokens=max_tokens, stop=[], **_sampling(options)
    )
    try:
        for part in stream:
            if part["choices"][0]["text"]:
                sample.piece()
    finally:
        stream.close()
    sample.end()
    sample.tokens = len(sample.pieces)
    return sample


def kernel_generate(client: Any, prompt: str, max_tokens: int) -> Sample:
    sample = Sample()
    reply = client.model_request(
        "generate",
        model=GEMMA_ID,
        prompt=prompt,
        options={"max_tokens": max_tokens, "temperature": 0.0},
        stream=True,
        on_stream=sample.piece,
        timeout=600,
    )
    sample.end()
    sample.tokens = reply["metrics"].get("generated_tokens")
    return sample


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(__doc__ or NAME, argv)
    n_rounds = rounds(args, 10)
    max_tokens = 8 if args.quick else 64
    report = Report(NAME, args.quick)

    from llmspell_kernel.client import LLMSpellClient
    from llmspell_kernel.process import start_kernel, stop_kernel
    from providers.llamacpp.native import prepare_llama_cpp

    with workspace() as ws:
        n_ctx, n_threads = backend_settings()
        report.parameters = {
            "model": f"Gemma 3 270M Q4_K_M ({ws.model.name})",
            "rounds": n_rounds,
            "max_tokens": max_tokens,
            "sampling": "greedy (temperature 0)",
            "n_ctx": n_ctx,
            "n_threads": n_threads,
            "prompts": list(PROMPTS[: max(2, n_rounds)]),
        }

        prepare_llama_cpp()
        from llama_cpp import Llama

        from providers.llamacpp.generation import REPEAT_LAST_N, REUSE_BATCH

        started = time.perf_counter()
        llama = Llama(  # as a runner loads it
            model_path=str(ws.model),
            n_ctx=n_ctx,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            n_gpu_layers=-1,
            last_n_tokens_size=REPEAT_LAST_N,
            n_batch=REUSE_BATCH,
            verbose=False,
        )
        raw_load = time.perf_counter() - started

        record = start_kernel(daemon=True)
        try:
            with LLMSpellClient.connect(record.id) as client:
                results = measure(client, llama, n_rounds, max_tokens)
        finally:
            stop_kernel(record.id)
        # The same pairs with one model_stream message per token (what the kernel sent before
        # it joined the tokens of each stream_interval), to show what the joining buys.
        profile = ws.root / "ipython" / "profile_default"
        profile.mkdir(parents=True, exist_ok=True)
        config = profile / "llmspell_kernel_config.py"
        config.write_text("c.LLMSpellKernel.stream_interval = 0\n", encoding="utf-8")
        record = start_kernel(daemon=True)
        try:
            with LLMSpellClient.connect(record.id) as client:
                results["per_token_messages"] = measure_pairs(
                    client, llama, max(2, n_rounds // 2), max_tokens
                )
        finally:
            stop_kernel(record.id)
            config.unlink()
        results["raw_load_seconds"] = round(raw_load, 3)
        del llama

    report.results = results
    judge(report)
    report.finish(args.output)


def measure(client: Any, llama: Any, n_rounds: int, max_tokens: int) -> dict[str, Any]:
    prompt_at: Callable[[int], str] = lambda i: PROMPTS[i % len(PROMPTS)]  # noqa: E731
    raw, kernel = warm_pairs(client, llama, n_rounds, max_tokens)

    first: list[Sample] = []
    second: list[Sample] = []
    second_raw: list[Sample] = []
    loads_before = client.model_request("ps")["models"]
    for i in range(max(1, n_rounds // 2)):
        client.model_request("unload", model=GEMMA_ID, timeout=60)
        first.append(kernel_generate(client, prompt_at(i + 1), max_tokens))
        second.append(kernel_generate(client, prompt_at(i + 2), max_tokens))
        second_raw.append(raw_generate(llama, prompt_at(i + 2), max_tokens))

    def rates(samples: list[Sample]) -> list[float]:
        return [s.tokens_per_second for s in samples]

    def ttfts(samples: list[Sample]) -> list[float]:
        return [s.ttft * 1000 for s in samples]

    pair_diff = [(k.ttft - r.ttft) * 1000 for k, r in zip(kernel, raw, strict=True)]
    return {
        "raw_tokens_per_second": summarize(rates(raw), 2),
        "kernel_tokens_per_second": summarize(rates(kernel), 2),
        "tokens_per_second_ratio_per_round": summarize(ratios(kernel, raw), 4),
        "raw_ttft_ms": summarize(ttfts(raw), 2),
        "kernel_ttft_ms": summarize(ttfts(kernel), 2),
        "ttft_difference_ms_per_round": summarize(pair_diff, 2),
        "raw_pieces": [len(s.pieces) for s in raw],
        "kernel_pieces": [len(s.pieces) for s in kernel],
        "raw_tokens": [s.tokens for s in raw],
        "kernel_tokens": [s.tokens for s in kernel],
        "raw_total_ms": summarize([(s.ended - s.started) * 1000 for s in raw], 1),
        "kernel_total_ms": summarize([(s.ended - s.started) * 1000 for s in kernel], 1),
        "first_request_after_unload_ttft_ms": summarize(ttfts(first), 1),
        "second_request_ttft_ms": summarize(ttfts(second), 2),
        "second_request_raw_ttft_ms": summarize(ttfts(second_raw), 2),
        "second_request_ratio_per_round": summarize(
            [k.ttft / r.ttft for k, r in zip(second, second_raw, strict=True)], 4
        ),
        "models_loaded_before_unload_rounds": len(loads_before),
    }


def warm_pairs(
    client: Any, llama: Any, n_rounds: int, max_tokens: int
) -> tuple[list[Sample], list[Sample]]:
    """Warm both sides (the kernel loads the model, llama.cpp allocates its buffers), then
    ``n_rounds`` interleaved rounds: (raw samples, kernel samples)."""
    client.model_request("load", model=GEMMA_ID, timeout=300)
    raw_generate(llama, "Warm-up.", 4)
    kernel_generate(client, "Warm-up.", 4)
    return interleaved(
        n_rounds,
        PROMPTS,
        lambda prompt: raw_generate(llama, prompt, max_tokens),
        lambda prompt: kernel_generate(client, prompt, max_tokens),
    )


def ratios(kernel: list[Sample], raw: list[Sample]) -> list[float]:
    """Tokens/s of the kernel over raw, round by round."""
    return [k.tokens_per_second / r.tokens_per_second for k, r in zip(kernel, raw, strict=True)]


def measure_pairs(client: Any, llama: Any, n_rounds: int, max_tokens: int) -> dict[str, Any]:
    raw, kernel = warm_pairs(client, llama, n_rounds, max_tokens)
    return {
        "tokens_per_second_ratio_per_round": summarize(ratios(kernel, raw), 4),
        "kernel_pieces": [len(s.pieces) for s in kernel],
    }


def judge(report: Report) -> None:
    r = report.results
    raw_tps = r["raw_tokens_per_second"]["median"]
    k_tps = r["kernel_tokens_per_second"]["median"]
    tps_ratio = r["tokens_per_second_ratio_per_round"]["median"]
    report.target(
        "generation tokens/s through the kernel (warm)",
        f"{fmt(k_tps, 'tok/s')} (median ratio per round {tps_ratio:.3f})",
        fmt(raw_tps, "tok/s"),
        "≥ 0.97 x raw",
        tps_ratio >= 0.97,
    )
    per_token = r["per_token_messages"]["tokens_per_second_ratio_per_round"]["median"]
    report.notes.append(
        f"tokens/s with one model_stream message per token (stream_interval 0): median ratio "
        f"per round {per_token:.3f} x raw; the kernel's default joins the tokens of each 100 ms"
        f" ({statistics.median(r['kernel_pieces']):.0f} messages for "
        f"{statistics.median(r['kernel_tokens']):.0f} tokens)"
    )
    raw_ttft = r["raw_ttft_ms"]["median"]
    k_ttft = r["kernel_ttft_ms"]["median"]
    diff = r["ttft_difference_ms_per_round"]["median"]
    report.target(
        "time to first token through the kernel (warm)",
        f"{fmt(k_ttft, 'ms')} (median difference per round {diff:+.1f} ms)",
        fmt(raw_ttft, "ms"),
        "≤ raw + 10 ms",
        diff <= 10.0,
    )
    second = r["second_request_ttft_ms"]["median"]
    second_raw = r["second_request_raw_ttft_ms"]["median"]
    first = r["first_request_after_unload_ttft_ms"]["median"]
    within = statistics.median(r["second_request_ratio_per_round"]["samples"])
    report.target(
        "second request on the same model: TTFT",
        f"{fmt(second, 'ms')} (median ratio per round {within:.2f}; the first request, with"
        f" the load: {fmt(first, 'ms', 0)})",
        f"{fmt(second_raw, 'ms')} warm raw",
        "no reload: within 10 % of warm raw",
        within <= 1.10,
    )


if __name__ == "__main__":
    main()
