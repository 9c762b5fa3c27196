"""Conversations that stay fast: time to first token by turn, two conversations taking turns on
one model, llmspell's llamacpp backend against a naive raw llama-cpp-python loop.

Two conversations A and B on Gemma 3 270M, interleaved A1 B1 A2 B2 ... A10 B10: each user turn
about 35 tokens, 16-token answers, greedy, n_ctx 4096, the backend's threads. llmspell:
``LlamaCppBackend.chat`` with the growing history (its conversation state cache, default size).
Raw: ``Llama.create_chat_completion(stream=True)`` with the same growing history, same model,
context and threads, ``chat_format="gemma"``. Each side answers its own history; the two sides
alternate per turn. Then one conversation at a time (C1 ... C10, then D, then E). Time to first
token is from the call to the first text piece.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from .common import GEMMA_ID, Report, backend_settings, fmt, parse_args, ratio, workspace

NAME = "conversations"
TOPICS = ("the sea", "mountains", "rivers", "deserts", "forests", "cities", "islands", "rain")


def question(conversation: str, turn: int) -> str:
    topic = TOPICS[(turn + len(conversation)) % len(TOPICS)]
    return (
        f"Conversation {conversation}, question {turn}: please tell me one surprising thing "
        f"about {topic}, and explain in simple words why it matters to the people living there."
    )


Chat = Callable[[list[dict[str, str]]], tuple[float, str]]


def llmspell_side(
    n_ctx: int, cache_bytes: int | None = None
) -> tuple[Chat, Callable[[], dict[str, Any]], Callable[[], None]]:
    from providers.config import Config
    from providers.llamacpp import LlamaCppBackend
    from providers.options import GenerationOptions, Message
    from providers.spec import ModelSpec

    settings: dict[str, Any] = {}
    if cache_bytes is not None:
        settings = {
            "providers": {"llamacpp": {"options": {"conversation_cache_bytes": cache_bytes}}}
        }
    backend = LlamaCppBackend(Config.from_dict(settings))
    spec = ModelSpec.parse(GEMMA_ID)
    options = GenerationOptions(max_tokens=16, temperature=0.0, num_ctx=n_ctx)

    def chat(history: list[dict[str, str]]) -> tuple[float, str]:
        messages = [Message(m["role"], m["content"]) for m in history]  # type: ignore[arg-type]
        started = time.perf_counter()
        first: float | None = None
        pieces = []
        for chunk in backend.chat(spec, messages, options):
            if chunk.text and first is None:
                first = time.perf_counter() - started
            pieces.append(chunk.text)
        return (first if first is not None else time.perf_counter() - started), "".join(pieces)

    def held() -> dict[str, Any]:
        return dict(backend.info(spec).details.get("conversation_cache", {}))

    return chat, held, backend.close


def raw_side(model: str, n_ctx: int, n_threads: int) -> Chat:
    from providers.llamacpp.native import prepare_llama_cpp

    prepare_llama_cpp()
    from llama_cpp import Llama

    llama = Llama(
        model_path=model,
        n_ctx=n_ctx,
        n_threads=n_threads,
        n_threads_batch=n_threads,
        chat_format="gemma",
        verbose=False,
    )

    def chat(history: list[dict[str, str]]) -> tuple[float, str]:
        started = time.perf_counter()
        first: float | None = None
        pieces = []
        stream: Any = llama.create_chat_completion(
            messages=history,  # type: ignore[arg-type]
            max_tokens=16,
            temperature=0.0,
            stream=True,
        )
        for part in stream:
            text = part["choices"][0]["delta"].get("content") or ""
            if text and first is None:
                first = time.perf_counter() - started
            pieces.append(text)
        return (first if first is not None else time.perf_counter() - started), "".join(pieces)

    return chat


def run(
    sides: dict[str, Chat], conversations: Sequence[str], turns: int
) -> dict[str, dict[str, list[float]]]:
    """Time to first token of every turn: ``{side: {conversation: [ttft per turn]}}``."""
    histories = {s: {c: [] for c in conversations} for s in sides}
    ttft: dict[str, dict[str, list[float]]] = {s: {c: [] for c in conversations} for s in sides}
    names = list(sides)
    for turn in range(1, turns + 1):
        for conversation in conversations:
            order = names if (turn + len(conversation)) % 2 else names[::-1]
            for side in order:
                history: list[dict[str, str]] = histories[side][conversation]
                history.append({"role": "user", "content": question(conversation, turn)})
                seconds, text = sides[side](history)
                history.append({"role": "assistant", "content": text})
                ttft[side][conversation].append(seconds)
    return ttft


def cache_full(n_ctx: int, bound: int, turns: int, conversations: int) -> dict[str, Any]:
    """``conversations`` taking turns on a backend whose cache holds ``bound`` bytes: what
    it holds at the end, and how much the process grew after the first turn."""
    import psutil  # type: ignore[import-untyped]

    chat, held, close = llmspell_side(n_ctx, bound)
    process = psutil.Process()
    try:
        chat([{"role": "user", "content": question("warm-up", 1)}])
        before = process.memory_info().rss
        run({"llmspell": chat}, ("F", "G", "H", "I")[:conversations], turns)
        after = process.memory_info().rss
        states = held()
    finally:
        close()
    return {
        "bound_bytes": bound,
        "held_bytes": states.get("bytes", 0),
        "states": states.get("states", 0),
        "rss_growth_bytes": max(after - before, 0),
    }


def window(ttft: dict[str, list[float]], start: int, end: int) -> float:
    """The median time to first token of turns ``start``..``end`` (1-based) of every
    conversation."""
    return statistics.median(x for times in ttft.values() for x in times[start - 1 : end])


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(__doc__ or NAME, argv)
    turns = 2 if args.quick else 10
    report = Report(NAME, args.quick)
    with workspace() as ws:
        _, n_threads = backend_settings()
        n_ctx = 4096
        report.parameters = {
            "model": ws.model.name,
            "n_ctx": n_ctx,
            "n_threads": n_threads,
            "turns": turns,
            "answer_tokens": 16,
        }
        ours, held, close = llmspell_side(n_ctx)
        try:
            raw = raw_side(str(ws.model), n_ctx, n_threads)
            two = run({"llmspell": ours, "raw": raw}, ("A", "B"), turns)
            one: dict[str, dict[str, list[float]]] = {"llmspell": {}, "raw": {}}
            for alone in ("C",) if args.quick else ("C", "D", "E"):  # one at a time
                for side, times in run({"llmspell": ours, "raw": raw}, (alone,), turns).items():
                    one[side].update(times)
            cache = held()
        finally:
            close()
        bound = 24 * 2**20 if not args.quick else 4 * 2**20
        full = cache_full(n_ctx, bound, turns, 2 if args.quick else 4)
    late = (max(1, turns - 2), turns)
    early = (1, min(2, turns))
    results: dict[str, Any] = {
        "interleaved": two,
        "single": one,
        "conversation_cache": cache,
        "cache_full": full,
    }
    for label, data in (("interleaved", two), ("single", one)):
        for side in ("llmspell", "raw"):
            results[f"{label}_{side}_early_s"] = round(window(data[side], *early), 4)
            results[f"{label}_{side}_late_s"] = round(window(data[side], *late), 4)
    report.results = results
    ours_early, ours_late = (
        results["interleaved_llmspell_early_s"],
        results["interleaved_llmspell_late_s"],
    )
    raw_late = results["interleaved_raw_late_s"]
    span = f"turns {late[0]}-{late[1]}"
    report.target(
        f"interleaved: TTFT {span} vs turns {early[0]}-{early[1]}",
        f"{fmt(ours_late * 1000, 'ms', 0)} vs {fmt(ours_early * 1000, 'ms', 0)}"
        f" ({ratio(ours_late, ours_early):.2f} x)",
        "-",
        "≤ 1.5 x",
        ratio(ours_late, ours_early) <= 1.5,
    )
    report.target(
        f"interleaved: TTFT {span}, llmspell vs raw loop",
        fmt(ours_late * 1000, "ms", 0),
        f"{fmt(raw_late * 1000, 'ms', 0)} ({ratio(ours_late, raw_late):.2f} x)",
        "≤ 0.5 x",
        ratio(ours_late, raw_late) <= 0.5,
    )
    single, single_raw = results["single_llmspell_late_s"], results["single_raw_late_s"]
    paired = statistics.median(
        ours_t / raw_t
        for name, times in one["llmspell"].items()
        for ours_t, raw_t in zip(
            times[late[0] - 1 : late[1]], one["raw"][name][late[0] - 1 : late[1]], strict=True
        )
    )
    results["single_paired_ratio"] = round(paired, 3)
    report.target(
        f"one conversation: TTFT {span}, llmspell vs raw loop",
        f"{fmt(single * 1000, 'ms', 0)} (median ratio per turn {paired:.2f} x)",
        f"{fmt(single_raw * 1000, 'ms', 0)}",
        "not slower: ≤ 1.05 x (the spread between runs here)",
        paired <= 1.05,
    )
    if cache:
        report.target(
            "conversation cache: memory held",
            f"{cache['bytes'] / 2**20:.1f} MiB in {cache['states']} states, {cache['hits']} hits",
            f"{cache['capacity_bytes'] / 2**20:.0f} MiB configured",
            "≤ bound + 10 %",
            cache["bytes"] <= cache["capacity_bytes"] * 1.1,
        )
    report.target(
        "cache full (4 conversations, small bound): held, and process RSS growth",
        f"{full['held_bytes'] / 2**20:.1f} MiB held, RSS +{full['rss_growth_bytes'] / 2**20:.1f}"
        f" MiB after the first turn",
        f"{full['bound_bytes'] / 2**20:.0f} MiB configured",
        "≤ bound + 10 %",
        full["held_bytes"] <= full["bound_bytes"] * 1.1
        and full["rss_growth_bytes"] <= full["bound_bytes"] * 1.1,
    )
    report.notes.append(
        "llmspell is measured in-process at the backend (LlamaCppBackend.chat), as raw is;"
        " through a kernel each request adds its round trip (bench_roundtrip)."
    )
    report.finish(args.output)


if __name__ == "__main__":
    main()
