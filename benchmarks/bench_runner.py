"""What running each model in its own process costs: the llamacpp backend (its model in a runner
process, tokens streamed over a socket) against the same generation code in this process (what
the backend did before runners), side by side in one run.

In-process: :func:`providers.llamacpp.runner_process.load_llama` and
:func:`~providers.llamacpp.generation.build_prompt` / ``stream_prompt`` called here — the code
a runner runs, without the process boundary. Runner: ``LlamaCppBackend.complete``. Gemma 3
270M, greedy, the same prompt, the backend's sampling defaults, n_ctx 2048, the backend's
threads; the sides alternate per round, each warmed by a one-token generation just before.
Time to first token and tokens/s are measured where the chunks arrive (so they include the
socket); memory is each side's total RSS (this process, plus its runner) after a load and a
generation, each side in a fresh process of its own.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .common import (
    PYTHON,
    ROOT,
    Report,
    backend_settings,
    fmt,
    parse_args,
    ratio,
    rounds,
    workspace,
)

NAME = "runner"
PROMPT = "Here is a short story about a lighthouse keeper and the storm that changed her life:"
N_CTX = 2048

Side = Callable[[int], Iterator[Any]]


def in_process_side(model: str, n_threads: int) -> tuple[Side, Callable[[], None]]:
    from providers.llamacpp.generation import (
        SAMPLING_DEFAULTS,
        build_prompt,
        completion_prompt,
        stream_prompt,
    )
    from providers.llamacpp.runner_messages import Load
    from providers.llamacpp.runner_process import load_llama
    from providers.options import GenerationOptions, with_defaults

    load = Load("gemma", Path(model), N_CTX, n_threads, 0, 0, reproducible=False)
    llama = load_llama(load)

    def generate(max_tokens: int) -> Iterator[Any]:
        asked = GenerationOptions(max_tokens=max_tokens, temperature=0.0, top_k=40, top_p=0.9)
        options = with_defaults(asked, SAMPLING_DEFAULTS)  # as the backend does
        prompt = build_prompt("gemma", llama, completion_prompt(PROMPT), options)
        llama.reset()  # a cold prompt each time, as on the runner side
        return stream_prompt("gemma", llama, prompt, options, 0.0, None)

    return generate, llama.close


def runner_side(n_threads: int) -> tuple[Side, Callable[[], None]]:
    from providers.config import Config
    from providers.llamacpp import LlamaCppBackend
    from providers.options import GenerationOptions
    from providers.spec import ModelSpec

    settings = {"n_ctx": N_CTX, "n_threads": n_threads, "conversation_cache_bytes": 0}
    backend = LlamaCppBackend(Config.from_dict({"providers": {"llamacpp": {"options": settings}}}))
    spec = ModelSpec.parse("gemma3-270m")
    backend.load(spec)

    def generate(max_tokens: int) -> Iterator[Any]:
        options = GenerationOptions(max_tokens=max_tokens, temperature=0.0, top_k=40, top_p=0.9)
        yield from backend.complete(spec, PROMPT, options)
        # Another prompt after it, so that the next one is evaluated cold, as in-process
        # (after its last chunk: not timed).
        list(backend.complete(spec, "x", GenerationOptions(max_tokens=1, temperature=0.0)))

    return generate, backend.close


def measure(generate: Side, max_tokens: int) -> dict[str, float]:
    started = time.perf_counter()
    first: float | None = None
    last = started
    pieces = 0
    generated = 0
    for chunk in generate(max_tokens):
        now = time.perf_counter()
        if chunk.text:
            pieces += 1
            first = now if first is None else first
            last = now
        if chunk.done and chunk.metrics is not None:
            generated = chunk.metrics.generated_tokens
    assert first is not None, "no text"
    return {
        "ttft_s": first - started,
        "tokens_per_second": (generated - 1) / (last - first) if last > first else 0.0,
        "tokens": generated,
    }


def memory_of(side: str, model: str, n_threads: int) -> dict[str, int]:
    """Run in a fresh process (``--memory SIDE``): RSS of this process and its runner."""
    import psutil  # type: ignore[import-untyped]

    generate, close = (
        in_process_side(model, n_threads) if side == "in-process" else runner_side(n_threads)
    )
    try:
        measure(generate, 16)
        me = psutil.Process()
        children = me.children(recursive=True)
        own = me.memory_info().rss
        runners = sum(child.memory_info().rss for child in children)
    finally:
        close()
    return {"own_rss": own, "runner_rss": runners, "total_rss": own + runners}


def memory_in_fresh_process(side: str, model: str, n_threads: int) -> dict[str, int]:
    output = subprocess.run(
        [PYTHON, "-m", "benchmarks.bench_runner", "--memory", side, model, str(n_threads)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    ).stdout
    result: dict[str, int] = json.loads(output.strip().splitlines()[-1])
    return result


def main(argv: Sequence[str] | None = None) -> None:
    if argv is None and sys.argv[1:2] == ["--memory"]:
        side, model, threads = sys.argv[2:5]
        print(json.dumps(memory_of(side, model, int(threads))))
        return
    args = parse_args(__doc__ or NAME, argv)
    count = rounds(args, 6)
    max_tokens = 16 if args.quick else 128
    report = Report(NAME, args.quick)
    with workspace() as ws:
        _, n_threads = backend_settings()
        report.parameters = {
            "model": ws.model.name,
            "n_ctx": N_CTX,
            "n_threads": n_threads,
            "rounds": count,
            "max_tokens": max_tokens,
        }
        sides: dict[str, tuple[Side, Callable[[], None]]] = {}
        samples: dict[str, list[dict[str, float]]] = {"in-process": [], "runner": []}
        try:
            sides["runner"] = runner_side(n_threads)
            sides["in-process"] = in_process_side(str(ws.model), n_threads)
            for side in sides:  # warm-up: page the weights in on both sides
                measure(sides[side][0], 4)
            for number in range(count):
                order = list(sides) if number % 2 else list(sides)[::-1]
                for side in order:
                    # One token first, untimed: the other side's run has just taken the cores
                    # and caches (whichever side ran second was 15 ms slower to start).
                    measure(sides[side][0], 1)
                    samples[side].append(measure(sides[side][0], max_tokens))
        finally:
            for _, close in sides.values():
                close()
        memory = {
            side: memory_in_fresh_process(side, str(ws.model), n_threads)
            for side in ("in-process", "runner")
        }

    def median(side: str, key: str) -> float:
        return statistics.median(sample[key] for sample in samples[side])

    results: dict[str, Any] = {"samples": samples, "memory": memory}
    for side in samples:
        results[f"{side}_ttft_s"] = round(median(side, "ttft_s"), 5)
        results[f"{side}_tokens_per_second"] = round(median(side, "tokens_per_second"), 2)
    report.results = results
    ours_tps, base_tps = (
        median("runner", "tokens_per_second"),
        median("in-process", "tokens_per_second"),
    )
    report.target(
        "tokens/s, runner vs in-process",
        fmt(ours_tps, "tok/s", 1),
        f"{fmt(base_tps, 'tok/s', 1)} ({ratio(ours_tps, base_tps):.3f} x)",
        "≥ 0.97 x",
        ratio(ours_tps, base_tps) >= 0.97,
    )
    ours_ttft, base_ttft = median("runner", "ttft_s"), median("in-process", "ttft_s")
    report.target(
        "time to first token, runner vs in-process",
        fmt(ours_ttft * 1000, "ms", 1),
        f"{fmt(base_ttft * 1000, 'ms', 1)} ({(ours_ttft - base_ttft) * 1000:+.1f} ms)",
        "≤ + 5 ms",
        ours_ttft - base_ttft <= 0.005,
    )
    ours_rss, base_rss = memory["runner"]["total_rss"], memory["in-process"]["total_rss"]
    report.target(
        "RSS after a load and a generation: kernel + runner vs in-process",
        f"{ours_rss / 2**20:.0f} MiB ({memory['runner']['own_rss'] / 2**20:.0f} + "
        f"{memory['runner']['runner_rss'] / 2**20:.0f})",
        f"{base_rss / 2**20:.0f} MiB (+{(ours_rss - base_rss) / 2**20:.0f} MiB)",
        "≤ + 50 MB",
        ours_rss - base_rss <= 50 * 10**6,
    )
    report.finish(args.output)


if __name__ == "__main__":
    main()
