"""The real OpenAI-compatible server the tests and the benchmark use: llama-cpp-python's
``llama_cpp.server`` (its ``server`` extra) serving Gemma 3 270M on 127.0.0.1, started through
:mod:`tests.openai_launcher` in a process group of its own.

The Gemma GGUF has no chat template, so the server gets ``--chat_format gemma``. The start-up
wait is bounded (the process dying or not answering ``/v1/models`` in time fails the start with
the end of its log); :meth:`OpenAIServer.stop` always ends the whole process group.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import httpx
import pytest

MODEL_ID = "gemma3-270m"
API_KEY = "llmspell-test-key-4f1c9a"
"""The key the test server demands (``--api_key``); tests check that it never shows."""
START_TIMEOUT_SECONDS = 180.0
"""Generous: the model loads in about a second, but this 2-core machine is shared."""
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class OpenAIServer:
    """``with OpenAIServer(gguf, log_dir) as server:`` — ``server.url`` is the API root
    (``http://127.0.0.1:PORT/v1``)."""

    def __init__(
        self,
        model: Path,
        log_dir: Path,
        *,
        api_key: str | None = API_KEY,
        n_threads: int = 2,
        n_ctx: int = 2048,
    ) -> None:
        self.model = model
        self.api_key = api_key
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = log_dir / f"openai-server-{self.port}.log"
        self.n_threads = n_threads
        self.n_ctx = n_ctx
        self._process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        command = [
            sys.executable, "-m", "tests.openai_launcher",
            "--model", str(self.model),
            "--model_alias", MODEL_ID,
            "--chat_format", "gemma",
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--n_threads", str(self.n_threads),
            "--n_ctx", str(self.n_ctx),
        ]  # fmt: skip
        if self.api_key:
            command += ["--api_key", self.api_key]
        return command

    def start(self) -> OpenAIServer:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                self.command(),
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() ends all of it
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self._process is not None
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"the OpenAI server exited with {self._process.returncode}:\n{self.log_tail()}"
                )
            try:
                response = httpx.get(
                    f"{self.url}/models", headers=headers, timeout=5.0, trust_env=False
                )
                if response.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(
            f"the OpenAI server did not answer within {START_TIMEOUT_SECONDS:g} s:\n"
            f"{self.log_tail()}"
        )

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """End the server's whole process group: politely, then for sure."""
        process, self._process = self._process, None
        if process is None:
            return
        for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break  # the group is gone
            try:
                process.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
        if process.poll() is None:
            process.wait(timeout=10)

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


@pytest.fixture(scope="session")
def openai_server(
    gemma_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OpenAIServer]:
    """One real OpenAI-compatible server for the session, demanding :data:`API_KEY`."""
    with OpenAIServer(gemma_path, tmp_path_factory.mktemp("openai-server")) as server:
        yield server
