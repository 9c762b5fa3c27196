"""Embeddings through the kernel against raw llama-cpp-python: texts per second.

The llmspell path is the whole trip: ``LLMSpellClient.embed`` → a kernel process (``llmspell
kernel start --daemon``'s) → ``LlamaCppBackend.embed`` → the model's runner (its embedding
context beside the generation one) → the vectors back as JSON in the ``model_reply``, parsed
by the client. The baseline is what a user of llama-cpp-python writes:
``Llama(embedding=True, pooling_type=LLAMA_POOLING_TYPE_MEAN, n_ctx=n_batch=n_ubatch=512)``
``.embed(texts, normalize=True)``, which packs several texts into each ``llama_decode``; the
same texts, the same batch size (512 tokens, llmspell's embedding context), the backend's
threads. Also measured, not judged: the backend in this process (runner, no kernel), and raw
llama-cpp-python embedding one text per call (one decode per text: what packing saves).

Rounds interleave (raw first, then llmspell first, ...); each round embeds every text once on
each side; the target is the median of the per-round ratios of texts/s. The vectors of the
two sides are compared too (their largest difference per component: both pack the same texts
the same way, so they should agree exactly).
"""

from __future__ import annotations

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

NAME = "embed"
CONTEXT = 512
"""Tokens per batch on both sides: llmspell's embedding context (providers.llamacpp.embedding)."""
SUBJECTS = ("The old lighthouse", "A quarterly report", "Our new database", "The river")
VERBS = ("stands near", "was written about", "crashed during", "flows past")
OBJECTS = (
    "the harbour.",
    "the rising cost of energy in the northern provinces.",
    "a long night of heavy traffic and several failed backups.",
    "the village where my grandmother grew up, slowly and quietly, every spring.",
)


def texts(count: int) -> list[str]:
    """``count`` different sentences of 5 to 20 tokens."""
    out = []
    for i in range(count):
        subject = SUBJECTS[i % 4]
        verb = VERBS[(i // 4) % 4]
        obj = OBJECTS[(i // 16) % 4]
        out.append(f"{subject} {verb} {obj}" + (f" ({i})" if i >= 64 else ""))
    return out


def timed(embed: Callable[[list[str]], list[list[float]]], batch: list[str]) -> dict[str, Any]:
    started = time.perf_counter()
    vectors = embed(batch)
    seconds = time.perf_counter() - started
    assert len(vectors) == len(batch)
    return {"seconds": seconds, "texts_per_second": len(batch) / seconds, "vectors": vectors}


def largest_difference(a: list[list[float]], b: list[list[float]]) -> float:
    return max(abs(x - y) for u, v in zip(a, b, strict=True) for x, y in zip(u, v, strict=True))


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(__doc__ or NAME, argv)
    n_rounds = rounds(args, 6)
    batch = texts(8 if args.quick else 64)
    report = Report(NAME, args.quick)

    from llmspell_kernel.client import LLMSpellClient
    from llmspell_kernel.process import start_kernel, stop_kernel
    from providers.config import Config
    from providers.llamacpp import LlamaCppBackend
    from providers.llamacpp.native import prepare_llama_cpp
    from providers.spec import parse_spec

    with workspace() as ws:
        _, n_threads = backend_settings()
        prepare_llama_cpp()
        import llama_cpp

        raw = llama_cpp.Llama(
            model_path=str(ws.model),
            embedding=True,
            pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
            n_ctx=CONTEXT,
            n_batch=CONTEXT,
            n_ubatch=CONTEXT,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            verbose=False,
        )
        tokens = [len(raw.tokenize(t.encode("utf-8"))) for t in batch]
        report.parameters = {
            "model": f"Gemma 3 270M Q4_K_M ({ws.model.name})",
            "rounds": n_rounds,
            "texts": len(batch),
            "tokens_per_text": summarize([float(t) for t in tokens], 1),
            "batch_tokens": CONTEXT,
            "n_threads": n_threads,
            "pooling": "mean",
            "normalize": True,
        }

        def raw_embed(items: list[str]) -> list[list[float]]:
            vectors: list[list[float]] = raw.embed(items, normalize=True)
            return vectors

        def raw_one_by_one(items: list[str]) -> list[list[float]]:
            return [raw.embed(item, normalize=True) for item in items]

        backend = LlamaCppBackend(Config())  # its runner starts only when used
        spec = parse_spec(GEMMA_ID)
        record = start_kernel(daemon=True)
        try:
            with LLMSpellClient.connect(record.id) as client:

                def kernel_embed(items: list[str]) -> list[list[float]]:
                    return client.embed(GEMMA_ID, items, timeout=600).embeddings

                def backend_embed(items: list[str]) -> list[list[float]]:
                    return backend.embed(spec, items).vectors

                sides = (raw_embed, kernel_embed) + (() if args.quick else (backend_embed,))
                for warm in sides:
                    # The load, the embedding context, and llama.cpp's output buffer grown to
                    # a full batch (512 tokens of 262k logits) before anything is timed.
                    warm(batch)
                raws, kernels = interleaved(
                    n_rounds,
                    ["all"],
                    lambda _: timed(raw_embed, batch),
                    lambda _: timed(kernel_embed, batch),
                )
                others, ones = (
                    ([], [])
                    if args.quick
                    else interleaved(  # (the smoke test)
                        max(2, n_rounds // 2),
                        ["all"],
                        lambda _: timed(backend_embed, batch),
                        lambda _: timed(raw_one_by_one, batch),
                    )
                )
        finally:
            stop_kernel(record.id)
            backend.close()
        raw.close()

    def rates(samples: list[dict[str, Any]]) -> list[float]:
        return [s["texts_per_second"] for s in samples]

    report.results = {
        "raw_texts_per_second": summarize(rates(raws), 2),
        "kernel_texts_per_second": summarize(rates(kernels), 2),
        "ratio_per_round": summarize(
            [k / r for k, r in zip(rates(kernels), rates(raws), strict=True)], 4
        ),
        "backend_texts_per_second": summarize(rates(others), 2),
        "raw_one_text_per_call_texts_per_second": summarize(rates(ones), 2),
        "largest_difference_kernel_vs_raw_packed": largest_difference(
            kernels[0]["vectors"], raws[0]["vectors"]
        ),
        "largest_difference_kernel_vs_raw_one_by_one": (
            largest_difference(kernels[0]["vectors"], ones[0]["vectors"]) if ones else None
        ),
    }
    judge(report)
    report.finish(args.output)


def judge(report: Report) -> None:
    r = report.results
    raw = r["raw_texts_per_second"]["median"]
    kernel = r["kernel_texts_per_second"]["median"]
    ratio = r["ratio_per_round"]["median"]
    report.target(
        f"embed texts/s through the kernel ({report.parameters['texts']} texts a request)",
        f"{fmt(kernel, 'texts/s')} (median ratio per round {ratio:.3f})",
        f"{fmt(raw, 'texts/s')} raw Llama.embed, mean pooling, batch 512",
        "≥ 0.95 x raw",
        ratio >= 0.95,
    )
    if not r["backend_texts_per_second"]["n"]:
        return  # quick: only the two judged sides ran
    report.notes.append(
        f"the backend in-process (runner, no kernel) made"
        f" {r['backend_texts_per_second']['median']:.1f} texts/s, raw llama-cpp-python one"
        f" text per call {r['raw_one_text_per_call_texts_per_second']['median']:.1f}; the"
        f" kernel's vectors differ from raw Llama.embed's packed batches by up to"
        f" {r['largest_difference_kernel_vs_raw_packed']:.1e} per component and from raw one"
        f" text per call by {r['largest_difference_kernel_vs_raw_one_by_one']:.1e}"
    )


if __name__ == "__main__":
    main()
