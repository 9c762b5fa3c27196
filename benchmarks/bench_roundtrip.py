"""Kernel request round trips (``model_request`` against ``kernel_info_request`` on the same
kernel), kernel start times and interrupt latency.

A daemon kernel (``start_kernel(daemon=True)``) on a store holding Gemma 3 270M, Ollama pointed
at a closed port. Requests are sent round-robin — kernel_info (main shell), kernel_info
(subshell), list, status, list (llamacpp), status (llamacpp), ps — so that background load hits
each kind alike. Model requests go to the client's subshell, as the CLI sends them; they are
judged against ``kernel_info`` on that same subshell (the same route through ipykernel), and
the main shell's ``kernel_info`` is shown beside it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from .common import GEMMA_ID, Report, fmt, parse_args, rounds, summarize, workspace

NAME = "roundtrip"


def interrupt_latency(client: Any) -> float:
    """Seconds from ``interrupt()`` to the Cancelled reply of a streaming generation."""
    started = threading.Event()
    done: list[float] = []

    def run() -> None:
        try:
            client.model_request(
                "generate",
                model=GEMMA_ID,
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
    return done[0] - interrupted if done else float("nan")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(__doc__ or NAME, argv)
    n = rounds(args, 300)
    report = Report(NAME, args.quick)
    report.parameters = {"requests_per_kind": n, "ollama": "closed port (connection refused)"}

    from llmspell_kernel.client import LLMSpellClient
    from llmspell_kernel.process import start_kernel, stop_kernel

    results: dict[str, Any] = {}
    with workspace():
        started = time.perf_counter()
        record = start_kernel(daemon=True)
        results["process_start_s"] = round(time.perf_counter() - started, 3)
        try:
            with LLMSpellClient.connect(record.id) as client:
                kinds: dict[str, Callable[[], object]] = {
                    "kernel_info": lambda: client._request(
                        "shell", "kernel_info_request", {}, timeout=10
                    ),
                    "kernel_info_subshell": lambda: client._request(
                        "shell",
                        "kernel_info_request",
                        {},
                        timeout=10,
                        subshell_id=client.subshell_id,
                    ),
                    "list": lambda: client.model_request("list", timeout=10),
                    "status": lambda: client.model_request("status", timeout=10),
                    "list_llamacpp": lambda: client.model_request(
                        "list", backend="llamacpp", timeout=10
                    ),
                    "status_llamacpp": lambda: client.model_request(
                        "status", backend="llamacpp", timeout=10
                    ),
                    "ps": lambda: client.model_request("ps", timeout=10),
                }
                for call in kinds.values():  # warm-up: imports, first store scan
                    call()
                samples: dict[str, list[float]] = {name: [] for name in kinds}
                for _ in range(n):
                    for name, call in kinds.items():
                        begin = time.perf_counter()
                        call()
                        samples[name].append((time.perf_counter() - begin) * 1000)
                for name, values in samples.items():
                    results[f"{name}_ms"] = summarize(values, 3)
                if not args.quick:
                    client.model_request("load", model=GEMMA_ID, timeout=300)
                    results["interrupt_s"] = summarize(
                        [interrupt_latency(client) for _ in range(3)], 3
                    )
        finally:
            stop_kernel(record.id)

        started = time.perf_counter()
        with LLMSpellClient.embedded() as client:
            results["embedded_start_s"] = round(time.perf_counter() - started, 3)
            values = []
            for _ in range(n):
                begin = time.perf_counter()
                client.model_request("list", timeout=10)
                values.append((time.perf_counter() - begin) * 1000)
            results["embedded_list_ms"] = summarize(values, 3)

    report.results = results
    main_shell = results["kernel_info_ms"]["median"]
    info = results["kernel_info_subshell_ms"]["median"]
    report.notes.append(
        f"kernel_info on the main shell: {main_shell:.2f} ms; on the client's subshell, where"
        f" the client sends model requests: {info:.2f} ms (ipykernel's hop from the shell"
        f" channel thread to a subshell's thread: {info / main_shell:.2f} x)"
    )
    for name, label in (
        ("list", "list"),
        ("status", "status"),
        ("list_llamacpp", "list --backend llamacpp"),
        ("status_llamacpp", "status --backend llamacpp"),
    ):
        p50 = results[f"{name}_ms"]["median"]
        report.target(
            f"model_request {label} round trip (p50; p95 {results[f'{name}_ms']['p95']:.2f} ms)",
            fmt(p50, "ms", 2) + f" ({p50 / info:.2f} x; {p50 / main_shell:.2f} x the main shell's)",
            fmt(info, "ms", 2) + " kernel_info on the same subshell",
            "p50 ≤ 1.2 x kernel_info",
            p50 <= 1.2 * info,
        )
    report.finish(args.output)


if __name__ == "__main__":
    main()
