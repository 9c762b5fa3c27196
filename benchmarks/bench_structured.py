"""Schema-constrained generation: the llamacpp backend with ``format`` (llguidance masking the
vocabulary in the model's runner) against the same backend unconstrained, and against raw
llama-cpp-python's own ``LlamaGrammar.from_json_schema`` on the same schema and prompt, side by
side in one run.

Gemma 3 270M (262,144-token vocabulary), n_ctx 2048, the backend's threads; the same prompt,
schema and sampling (the backend's defaults, seeded) on every side. Unconstrained generation
runs for as many tokens as the constrained answers took, so that the three rates are of the
same length. tokens/s is measured where the chunks arrive. The llguidance tokenizer is built
once per loaded model (timed separately: the first ``format`` request of a model pays it).
Each LlamaGrammar answer is checked against the schema with jsonschema, as llmspell checks its
own: the benchmark records whether it was valid.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .common import Report, backend_settings, fmt, parse_args, ratio, rounds, workspace

NAME = "structured"
N_CTX = 2048
SEED = 11
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "country": {"type": "string", "enum": ["France", "Italy", "Spain", "Germany"]},
        "population": {"type": "integer", "minimum": 0, "maximum": 100000000},
        "area_km2": {"type": "number", "minimum": 0, "maximum": 10000},
        "districts": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3},
    },
    "required": ["name", "country", "population", "area_km2", "districts"],
    "additionalProperties": False,
}
PROMPT = (
    "Record: Paris is the capital of France, with 1000000000000000 inhabitants on 105.4 km2;"
    " its districts include Marais, Montmartre and Belleville.\nThe record as JSON:"
)

BOUND_SCHEMA = {
    "type": "object",
    "properties": {"population": {"type": "integer", "minimum": 0, "maximum": 100000000}},
    "required": ["population"],
}
BOUND_PROMPT = "The city has 1000000000000000 inhabitants. As JSON:"
"""A greedy answer here shows whether ``maximum`` is enforced (LlamaGrammar's is not)."""

Sample = dict[str, float]


def timed(chunks: Iterator[Any], count: Callable[[Any], int]) -> tuple[Sample, str]:
    """Time a stream of pieces: ``count(piece)`` is how many tokens a piece holds (a runner
    sends the tokens of each 50 ms as one piece: its last chunk's metrics count them)."""
    started = time.perf_counter()
    first: float | None = None
    last = started
    tokens = 0
    text: list[str] = []
    for piece in chunks:
        if getattr(piece, "done", False):
            tokens = piece.metrics.generated_tokens
        elif _text(piece):
            now = time.perf_counter()
            first = now if first is None else first
            last = now
            tokens += count(piece)
        text.append(_text(piece))
    assert first is not None, "no text"
    rate = (tokens - 1) / (last - first) if last > first else 0.0
    return {"ttft_s": first - started, "tokens_per_second": rate, "tokens": tokens}, "".join(text)


def _text(piece: Any) -> str:
    if isinstance(piece, dict):
        return str(piece["choices"][0]["text"])
    return str(piece.text)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(__doc__ or NAME, argv)
    count = rounds(args, 3)
    grammar_tokens = 6 if args.quick else 160
    report = Report(NAME, args.quick)
    with workspace() as ws:
        from jsonschema import Draft202012Validator

        from providers.config import Config
        from providers.llamacpp import LlamaCppBackend
        from providers.llamacpp.generation import SAMPLING_DEFAULTS
        from providers.llamacpp.native import prepare_llama_cpp
        from providers.options import GenerationOptions
        from providers.spec import ModelSpec

        _, n_threads = backend_settings()
        settings = {"n_ctx": N_CTX, "n_threads": n_threads, "conversation_cache_bytes": 0}
        config = Config.from_dict({"providers": {"llamacpp": {"options": settings}}})
        backend = LlamaCppBackend(config)
        spec = ModelSpec.parse("gemma3-270m")
        validator = Draft202012Validator(SCHEMA)

        def run_ours(options: GenerationOptions) -> tuple[Sample, str]:
            return timed(iter(backend.complete(spec, PROMPT, options)), lambda _: 1)

        prepare_llama_cpp()
        from llama_cpp import Llama, LlamaGrammar

        llama = Llama(
            model_path=str(ws.model),
            n_ctx=N_CTX,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            n_batch=64,
            last_n_tokens_size=64,
            verbose=False,
        )
        grammar = LlamaGrammar.from_json_schema(json.dumps(SCHEMA), verbose=False)
        defaults = SAMPLING_DEFAULTS

        def raw_grammar(max_tokens: int) -> Iterator[Any]:
            llama.reset()
            return iter(
                llama.create_completion(
                    PROMPT,
                    max_tokens=max_tokens,
                    stream=True,
                    grammar=grammar,
                    temperature=defaults.temperature or 0.8,
                    top_k=defaults.top_k or 40,
                    top_p=defaults.top_p or 0.9,
                    repeat_penalty=defaults.repeat_penalty or 1.1,
                    seed=SEED,
                )
            )

        samples: dict[str, list[Sample]] = {"constrained": [], "unconstrained": [], "grammar": []}
        answers: list[str] = []
        grammar_answers: list[dict[str, Any]] = []
        try:
            backend.load(spec)
            started = time.perf_counter()
            run_ours(GenerationOptions(format=SCHEMA, max_tokens=4, seed=SEED))  # the tokenizer
            first_request = time.perf_counter() - started
            run_ours(GenerationOptions(max_tokens=4, seed=SEED))
            for number in range(count):
                options = GenerationOptions(format=SCHEMA, max_tokens=256, seed=SEED + number)
                sample, text = run_ours(options)
                answers.append(text)
                samples["constrained"].append(sample)
                same_length = max(int(sample["tokens"]), 8)
                plain = GenerationOptions(max_tokens=same_length, seed=SEED + number)
                samples["unconstrained"].append(run_ours(plain)[0])
                sample, text = timed(raw_grammar(grammar_tokens), lambda _: 1)
                samples["grammar"].append(sample)
                grammar_answers.append(_checked(text, validator))
            greedy = GenerationOptions(format=BOUND_SCHEMA, max_tokens=40, temperature=0.0)
            bound_ours = "".join(c.text for c in backend.complete(spec, BOUND_PROMPT, greedy))
            bound_grammar = LlamaGrammar.from_json_schema(json.dumps(BOUND_SCHEMA), verbose=False)
            llama.reset()
            bound_raw = llama.create_completion(
                BOUND_PROMPT, max_tokens=40, grammar=bound_grammar, temperature=0.0
            )["choices"][0]["text"]
        finally:
            backend.close()
            llama.close()
        bounds = {
            "llmspell": _checked(bound_ours, Draft202012Validator(BOUND_SCHEMA)),
            "llamagrammar": _checked(bound_raw, Draft202012Validator(BOUND_SCHEMA)),
        }

    def median(side: str) -> float:
        return statistics.median(s["tokens_per_second"] for s in samples[side])

    constrained, unconstrained, raw = (
        median("constrained"),
        median("unconstrained"),
        median("grammar"),
    )
    report.parameters = {
        "model": ws.model.name,
        "n_ctx": N_CTX,
        "n_threads": n_threads,
        "rounds": count,
        "grammar_max_tokens": grammar_tokens,
        "schema": SCHEMA,
        "prompt": PROMPT,
    }
    report.results = {
        "samples": samples,
        "constrained_tokens_per_second": round(constrained, 2),
        "unconstrained_tokens_per_second": round(unconstrained, 2),
        "llamagrammar_tokens_per_second": round(raw, 3),
        "first_format_request_seconds": round(first_request, 3),
        "answers": answers,
        "llamagrammar_answers": grammar_answers,
        "bounds": bounds,
    }
    report.target(
        "tokens/s, constrained vs unconstrained",
        fmt(constrained, "tok/s", 1),
        f"{fmt(unconstrained, 'tok/s', 1)} ({ratio(constrained, unconstrained):.3f} x)",
        "≥ 0.8 x",
        ratio(constrained, unconstrained) >= 0.8,
    )
    report.target(
        "tokens/s, llguidance vs llama-cpp-python LlamaGrammar",
        fmt(constrained, "tok/s", 1),
        f"{fmt(raw, 'tok/s', 2)} ({ratio(constrained, raw):.1f} x)",
        "≥ 5 x",
        ratio(constrained, raw) >= 5,
    )
    report.notes.append(
        f"the first format request of a loaded model took {first_request:.2f} s (building"
        " llguidance's tokenizer of the 262,144-token vocabulary, then a 4-token answer)"
    )
    report.notes.append(
        "a constraint that cost nothing would reach"
        f" {ratio(unconstrained, raw):.1f} x LlamaGrammar here: the unconstrained rate bounds"
        " the second ratio"
    )
    report.notes.append(
        f"maximum 100000000, greedy, text saying 10^15: llmspell {bounds['llmspell']['text']!r}"
        f" (valid: {bounds['llmspell']['valid']}), LlamaGrammar"
        f" {bounds['llamagrammar']['text']!r} (valid: {bounds['llamagrammar']['valid']})"
    )
    invalid = [a for a in grammar_answers if not a["valid"]]
    report.notes.append(
        f"LlamaGrammar answers ({grammar_tokens} tokens at most): {len(invalid)} of"
        f" {len(grammar_answers)} not valid against the schema"
        + (f", e.g. {invalid[0]['text'][:80]!r}: {invalid[0]['problem']}" if invalid else "")
    )
    report.finish(args.output)


def _checked(text: str, validator: Any) -> dict[str, Any]:
    """Whether a LlamaGrammar answer parses and satisfies the schema (cut answers do not)."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        return {"text": text, "valid": False, "problem": f"not complete JSON ({exc.msg})"}
    errors = [error.message for error in validator.iter_errors(value)]
    return {"text": text, "valid": not errors, "problem": "; ".join(errors) or None}


if __name__ == "__main__":
    main()
