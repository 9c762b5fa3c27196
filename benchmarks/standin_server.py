"""Run a test stand-in server in its own process, for benchmarks that must not share a CPU
loop (or a GIL) with the client they measure.

``python -m benchmarks.standin_server ollama MODEL.gguf`` serves the Ollama stand-in of
tests/ollama_standin.py (real generation with that GGUF); ``python -m benchmarks.standin_server
hub REPO FILENAME PATH`` serves PATH as REPO/FILENAME from the Hub stand-in of
tests/hub_standin.py. Either prints its URL on the first line of stdout and serves until its
stdin is closed.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .common import PYTHON, ROOT


def serve(argv: Sequence[str]) -> None:
    kind, *rest = argv
    server: Any
    if kind == "ollama":
        from tests.ollama_standin import GemmaRunner, OllamaStandin

        model = Path(rest[0])
        runner = GemmaRunner(model)
        ollama = OllamaStandin(runner, model_size=model.stat().st_size).start()
        runner.load()
        server, url = ollama, ollama.url
    elif kind == "hub":
        from tests.hub_standin import HubStandin

        repo, filename, path = rest
        hub = HubStandin()
        hub.add_repo(repo, {filename: Path(path)})
        hub.start()
        server, url = hub, hub.url
    else:
        raise SystemExit(f"unknown stand-in {kind!r}: expected ollama or hub")
    print(url, flush=True)
    try:
        sys.stdin.read()  # until the parent closes our stdin
    finally:
        server.stop()


@contextmanager
def standin_process(*args: str) -> Iterator[tuple[str, int]]:
    """Start a stand-in server process; yields (its URL, its pid) and stops it afterwards."""
    proc = subprocess.Popen(
        [PYTHON, "-m", "benchmarks.standin_server", *args],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http"):
            raise RuntimeError(f"the {args[0]} stand-in did not start (exit {proc.poll()})")
        yield url, proc.pid
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


if __name__ == "__main__":
    serve(sys.argv[1:])
