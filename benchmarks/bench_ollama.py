"""Generation through the Ollama backend against httpx streaming straight to the same server.

No Ollama can be installed here: the server is the Ollama stand-in of tests/ollama_standin.py
(Ollama's REST API over real HTTP, real generation with Gemma 3 270M), run in its own process
(:mod:`benchmarks.standin_server`) so that it does not share this process's GIL.

llmspell: ``OllamaBackend.complete`` (``/api/generate``, NDJSON parsed into ``Chunk``\\ s).
Direct: one ``httpx.Client.stream("POST", "/api/generate")`` with the same body, lines parsed
with ``json.loads``. Same prompt per round for both, greedy, ``num_predict`` fixed; rounds
alternate which goes first. tokens/s = (pieces - 1) / (last piece - first piece).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from .bench_generation import PROMPTS, Sample
from .common import Report, fmt, interleaved, parse_args, rounds, summarize, workspace
from .standin_server import standin_process

NAME = "ollama"
MODEL = "gemma3:270m"


def direct_generate(http: Any, prompt: str, max_tokens: int) -> Sample:
    sample = Sample()
    body = {
        "model": MODEL,
        "prompt": prompt,
        "raw": True,  # as OllamaBackend.complete sends it: no chat template around the prompt
        "stream": True,
        "options": {"num_predict": max_tokens, "temperature": 0.0},
    }
    with http.stream("POST", "/api/generate", json=body) as response:
        response.raise_for_status()
        for raw in response.iter_lines():
            if not raw.strip():
                continue
            line = json.loads(raw)
            if line.get("response"):
                sample.piece()
            if line.get("done"):
                sample.tokens = line.get("eval_count")
                break
    sample.end()
    return sample


def backend_generate(backend: Any, prompt: str, max_tokens: int) -> Sample:
    from providers.spec import ModelSpec
    from providers.types import GenerationOptions

    sample = Sample()
    options = GenerationOptions(max_tokens=max_tokens, temperature=0.0)
    for chunk in backend.complete(ModelSpec.parse(f"{MODEL}@ollama"), prompt, options):
        if chunk.text:
            sample.piece()
        if chunk.done and chunk.metrics is not None:
            sample.tokens = chunk.metrics.generated_tokens
    sample.end()
    return sample


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(__doc__ or NAME, argv)
    n_rounds = rounds(args, 10)
    max_tokens = 8 if args.quick else 64
    report = Report(NAME, args.quick)
    report.parameters = {
        "server": "tests/ollama_standin.py in its own process (Gemma 3 270M, n_threads=2)",
        "rounds": n_rounds,
        "num_predict": max_tokens,
        "sampling": "greedy (temperature 0)",
    }

    import httpx

    from providers.config import Config
    from providers.ollama import OllamaBackend

    with workspace(import_model=False) as ws, standin_process("ollama", str(ws.model)) as (url, _):
        config = Config.from_dict({"providers": {"ollama": {"base_url": url}}})
        backend = OllamaBackend(config)
        http = httpx.Client(base_url=url, timeout=600, trust_env=False)
        try:
            direct_generate(http, "Warm-up.", 4)
            backend_generate(backend, "Warm-up.", 4)
            direct, ours = interleaved(
                n_rounds,
                PROMPTS,
                lambda prompt: direct_generate(http, prompt, max_tokens),
                lambda prompt: backend_generate(backend, prompt, max_tokens),
            )
        finally:
            http.close()
            backend.close()

    report.results = {
        "direct_tokens_per_second": summarize([s.tokens_per_second for s in direct], 2),
        "backend_tokens_per_second": summarize([s.tokens_per_second for s in ours], 2),
        "ratio_per_round": summarize(
            [o.tokens_per_second / d.tokens_per_second for o, d in zip(ours, direct, strict=True)],
            4,
        ),
        "direct_ttft_ms": summarize([s.ttft * 1000 for s in direct], 2),
        "backend_ttft_ms": summarize([s.ttft * 1000 for s in ours], 2),
        "direct_pieces": [len(s.pieces) for s in direct],
        "backend_pieces": [len(s.pieces) for s in ours],
        "direct_tokens": [s.tokens for s in direct],
        "backend_tokens": [s.tokens for s in ours],
    }
    r = report.results
    ratio = r["ratio_per_round"]["median"]
    report.target(
        "generation through the Ollama backend",
        f"{fmt(r['backend_tokens_per_second']['median'], 'tok/s')} (median ratio per round "
        f"{ratio:.3f}); TTFT {fmt(r['backend_ttft_ms']['median'], 'ms')}",
        f"{fmt(r['direct_tokens_per_second']['median'], 'tok/s')} httpx direct; TTFT "
        f"{fmt(r['direct_ttft_ms']['median'], 'ms')}",
        "≥ 0.97 x direct",
        ratio >= 0.97,
    )
    report.finish(args.output)


if __name__ == "__main__":
    main()
