"""Generation through the OpenAI backend against httpx streaming straight to the same server.

The server is a real OpenAI-compatible one: llama-cpp-python's ``llama_cpp.server`` serving
Gemma 3 270M on 127.0.0.1 (tests/openai_server.py, its own process group), with an API key.

llmspell: ``OpenAIBackend.complete`` (``/v1/completions``, server-sent events parsed by
httpx-sse into ``Chunk``\\ s). Direct: one ``httpx.Client.stream("POST", "/v1/completions")``
with the same body and key, ``data:`` lines parsed with ``json.loads`` up to ``[DONE]``. Same
prompt per round for both, greedy, ``max_tokens`` fixed; rounds alternate which goes first.
Before each measured generation the server generates one token for an unrelated prompt: its
model reuses the longest prefix of the last prompt it evaluated, so without that the second
side of a round would find its prompt already evaluated and win on time to first token.
tokens/s = (pieces - 1) / (last piece - first piece); TTFT = first piece - call.

On a shared 2-core machine the server's speed moves with the load, and with it every per-round
ratio. What llmspell itself costs is also measured apart from the server: the CPU time this
process (the client side alone) spends per generation, for each side.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Sequence
from typing import Any

from .bench_generation import PROMPTS, Sample
from .common import Report, fmt, interleaved, parse_args, rounds, summarize, workspace

NAME = "openai"
KEY_ENV = "LLMSPELL_BENCH_OPENAI_KEY"


def request_body(model: str, prompt: str, max_tokens: int) -> dict[str, Any]:
    # What OpenAIBackend.complete sends for these options.
    return {
        "model": model,
        "prompt": prompt,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": max_tokens,
        "temperature": 0.0,
    }


class Timed(Sample):
    """A sample that also knows the CPU time this process spent on it."""

    def __init__(self) -> None:
        super().__init__()
        self.cpu_started = time.process_time()
        self.cpu = 0.0

    def end(self) -> None:
        super().end()
        self.cpu = time.process_time() - self.cpu_started


def direct_generate(http: Any, model: str, prompt: str, max_tokens: int) -> Timed:
    sample = Timed()
    with http.stream("POST", "completions", json=request_body(model, prompt, max_tokens)) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            event = json.loads(data)
            choices = event.get("choices") or []
            if choices and choices[0].get("text"):
                sample.piece()
    sample.end()
    sample.tokens = len(sample.pieces)
    return sample


def flush(http: Any, model: str) -> None:
    """Make the server evaluate another prompt, so that the next one starts cold."""
    body = {"model": model, "prompt": "Unrelated words to evict the prompt.", "max_tokens": 1}
    http.post("completions", json=body).raise_for_status()


def backend_generate(backend: Any, model: str, prompt: str, max_tokens: int) -> Timed:
    from providers.spec import ModelSpec
    from providers.types import GenerationOptions

    sample = Timed()
    options = GenerationOptions(max_tokens=max_tokens, temperature=0.0)
    for chunk in backend.complete(ModelSpec.parse(f"{model}@gpu"), prompt, options):
        if chunk.text:
            sample.piece()
        if chunk.done and chunk.metrics is not None:
            sample.tokens = chunk.metrics.generated_tokens
    sample.end()
    return sample


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(__doc__ or NAME, argv)
    n_rounds = rounds(args, 12)
    max_tokens = 8 if args.quick else 64
    report = Report(NAME, args.quick)

    import httpx

    from providers.config import Config
    from providers.openai import OpenAIBackend
    from tests.openai_server import API_KEY, MODEL_ID, OpenAIServer

    with workspace(import_model=False) as ws, OpenAIServer(ws.model, ws.root) as server:
        report.parameters = {
            "server": "llama-cpp-python's llama_cpp.server (tests/openai_server.py) in its own "
            f"process: Gemma 3 270M, n_threads={server.n_threads}, n_ctx={server.n_ctx}, "
            "with an API key",
            "rounds": n_rounds,
            "max_tokens": max_tokens,
            "sampling": "greedy (temperature 0)",
        }
        os.environ[KEY_ENV] = API_KEY
        endpoint = {"type": "openai", "base_url": server.url, "api_key_env": KEY_ENV}
        config = Config.from_dict({"providers": {"gpu": endpoint}})
        backend = OpenAIBackend("gpu", config.endpoints["gpu"])  # type: ignore[arg-type]
        http = httpx.Client(
            base_url=server.url + "/",
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=600,
            trust_env=False,
        )
        try:
            direct_generate(http, MODEL_ID, "Warm-up.", 4)
            backend_generate(backend, MODEL_ID, "Warm-up.", 4)
            direct, ours = interleaved(
                n_rounds,
                PROMPTS,
                lambda prompt: (
                    flush(http, MODEL_ID),
                    direct_generate(http, MODEL_ID, prompt, max_tokens),
                )[1],
                lambda prompt: (
                    flush(http, MODEL_ID),
                    backend_generate(backend, MODEL_ID, prompt, max_tokens),
                )[1],
            )
        finally:
            http.close()
            backend.close()

    ttft_differences = [(o.ttft - d.ttft) * 1000 for o, d in zip(ours, direct, strict=True)]
    report.results = {
        "direct_tokens_per_second": summarize([s.tokens_per_second for s in direct], 2),
        "backend_tokens_per_second": summarize([s.tokens_per_second for s in ours], 2),
        "ratio_per_round": summarize(
            [o.tokens_per_second / d.tokens_per_second for o, d in zip(ours, direct, strict=True)],
            4,
        ),
        "direct_ttft_ms": summarize([s.ttft * 1000 for s in direct], 2),
        "backend_ttft_ms": summarize([s.ttft * 1000 for s in ours], 2),
        "ttft_difference_per_round_ms": summarize(ttft_differences, 2),
        "direct_client_cpu_ms": summarize([s.cpu * 1000 for s in direct], 2),
        "backend_client_cpu_ms": summarize([s.cpu * 1000 for s in ours], 2),
        "direct_pieces": [len(s.pieces) for s in direct],
        "backend_pieces": [len(s.pieces) for s in ours],
        "backend_tokens": [s.tokens for s in ours],
    }
    r = report.results
    ratio = r["ratio_per_round"]["median"]
    difference = statistics.median(ttft_differences)
    report.target(
        "generation through the OpenAI backend: tokens/s",
        f"{fmt(r['backend_tokens_per_second']['median'], 'tok/s')} (median ratio per round "
        f"{ratio:.3f})",
        f"{fmt(r['direct_tokens_per_second']['median'], 'tok/s')} httpx direct",
        "≥ 0.97 x direct",
        ratio >= 0.97,
    )
    report.target(
        "generation through the OpenAI backend: time to first token",
        f"{fmt(r['backend_ttft_ms']['median'], 'ms')} (median difference per round "
        f"{difference:+.1f} ms)",
        f"{fmt(r['direct_ttft_ms']['median'], 'ms')} httpx direct",
        "≤ direct + 10 ms",
        difference <= 10.0,
    )
    report.notes.append(
        f"client-side CPU per generation of {max_tokens} tokens (this process only, not the "
        f"server): llmspell {r['backend_client_cpu_ms']['median']:.1f} ms, httpx direct "
        f"{r['direct_client_cpu_ms']['median']:.1f} ms (medians)"
    )
    report.finish(args.output)


if __name__ == "__main__":
    main()
