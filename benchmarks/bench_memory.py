"""Memory of a kernel process holding Gemma 3 270M against a raw Python process holding the same
model with llama-cpp-python.

Kernel: ``start_kernel(daemon=True)``, ``load`` then one short generation (so the compute
buffers exist); its memory is the kernel's and its model runner's together (the model lives in
the runner). Raw: ``python -c`` that loads ``llama_cpp.Llama`` with the kernel's n_ctx and
n_threads, runs one short completion, then waits. Both are measured with psutil once settled:
RSS, USS (memory only that process holds) and PSS. The model file is mmapped by both, so its
pages count in RSS as they are touched, alike. Rounds alternate which process starts first.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from .common import (
    GEMMA_ID,
    PYTHON,
    ROOT,
    Report,
    backend_settings,
    fmt,
    parse_args,
    rounds,
    summarize,
    workspace,
)

NAME = "memory"
MB = 2**20

RAW_HOLDER = """
import sys, time
from providers.llamacpp.native import prepare_llama_cpp
prepare_llama_cpp()
from llama_cpp import Llama
llama = Llama(model_path=sys.argv[1], n_ctx=int(sys.argv[2]), n_threads=int(sys.argv[3]),
              n_threads_batch=int(sys.argv[3]), n_gpu_layers=-1, verbose=False)
tokens = llama.tokenize(b"Hello, my name is", add_bos=True, special=True)
for _ in llama.create_completion(prompt=tokens, max_tokens=8, stream=True, temperature=0.0):
    pass
print("ready", flush=True)
sys.stdin.read()
"""


def memory_of(pid: int) -> dict[str, float]:
    """The memory of process ``pid`` and its children (a kernel's model runners), summed."""
    import psutil  # type: ignore[import-untyped]

    process = psutil.Process(pid)
    infos = [p.memory_full_info() for p in (process, *process.children(recursive=True))]
    return {
        "rss_mb": sum(info.rss for info in infos) / MB,
        "uss_mb": sum(info.uss for info in infos) / MB,
        "pss_mb": sum(getattr(info, "pss", 0) for info in infos) / MB,
        "processes": len(infos),
    }


def settle() -> None:
    time.sleep(0.5)


def raw_process(model: str, n_ctx: int, n_threads: int) -> dict[str, float]:
    proc = subprocess.Popen(
        [PYTHON, "-c", RAW_HOLDER, model, str(n_ctx), str(n_threads)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the raw llama-cpp-python process failed (exit {proc.wait()})")
        settle()
        return memory_of(proc.pid)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)


def kernel_process() -> tuple[dict[str, float], dict[str, float]]:
    """(memory when idle, memory with the model loaded and used once)."""
    from llmspell_kernel.client import LLMSpellClient
    from llmspell_kernel.process import start_kernel, stop_kernel

    record = start_kernel(daemon=True)
    try:
        with LLMSpellClient.connect(record.id) as client:
            settle()
            idle = memory_of(record.pid)
            client.model_request("load", model=GEMMA_ID, timeout=300)
            client.model_request(
                "generate",
                model=GEMMA_ID,
                prompt="Hello, my name is",
                options={"max_tokens": 8, "temperature": 0.0},
                stream=True,
                timeout=300,
            )
            settle()
            return idle, memory_of(record.pid)
    finally:
        stop_kernel(record.id)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(__doc__ or NAME, argv)
    n_rounds = rounds(args, 3)
    report = Report(NAME, args.quick)

    raw: list[dict[str, float]] = []
    idle: list[dict[str, float]] = []
    loaded: list[dict[str, float]] = []
    with workspace() as ws:
        n_ctx, n_threads = backend_settings()
        report.parameters = {
            "model": ws.model.name,
            "model_bytes": ws.model.stat().st_size,
            "n_ctx": n_ctx,
            "n_threads": n_threads,
            "rounds": n_rounds,
            "python": sys.version.split()[0],
        }
        for i in range(n_rounds):
            if i % 2 == 0:
                raw.append(raw_process(str(ws.model), n_ctx, n_threads))
                idle_mem, loaded_mem = kernel_process()
            else:
                idle_mem, loaded_mem = kernel_process()
                raw.append(raw_process(str(ws.model), n_ctx, n_threads))
            idle.append(idle_mem)
            loaded.append(loaded_mem)

    results: dict[str, Any] = {}
    for label, rows in (("raw", raw), ("kernel_idle", idle), ("kernel_loaded", loaded)):
        for key in ("rss_mb", "uss_mb", "pss_mb"):
            results[f"{label}_{key}"] = summarize([row[key] for row in rows], 1)
    report.results = results
    k = results["kernel_loaded_rss_mb"]["median"]
    r = results["raw_rss_mb"]["median"]
    k_uss = results["kernel_loaded_uss_mb"]["median"]
    r_uss = results["raw_uss_mb"]["median"]
    report.target(
        "kernel + runner memory with the model loaded (RSS)",
        f"{fmt(k, 'MB', 0)} ({k - r:+.0f} MB; USS {k_uss:.0f} MB, {k_uss - r_uss:+.0f} MB)",
        f"{fmt(r, 'MB', 0)} raw process (USS {r_uss:.0f} MB)",
        "≤ raw + 150 MB",
        k <= r + 150,
    )
    report.finish(args.output)


if __name__ == "__main__":
    main()
