"""Fixtures for the kernel tests: a model store with the real Gemma imported, an installed
``llmspell`` kernelspec, kernel subprocesses with their own environment, and helpers to send
raw protocol messages and collect what comes back on IOPub.

Import the fixtures a test module uses into it (``from tests.kernel_fixtures import ...``).
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager

from llmspell_kernel.client import LLMSpellClient
from providers.config import Config
from providers.llamacpp import LlamaCppBackend
from tests.isolation import private_dirs

GEMMA_ID = "gemma3-270m"
DEAD_OLLAMA = "http://127.0.0.1:9"
LONG_GENERATION = {
    "model": GEMMA_ID,
    "prompt": "Count from one to five hundred, in words, one number per line:",
    "options": {"max_tokens": 400, "temperature": 0.0},
    "stream": True,
}
"""A ``generate`` request that streams for many seconds: something to interrupt."""


def generate_in_thread(
    client: LLMSpellClient,
) -> tuple[threading.Thread, threading.Event, list[Any]]:
    """Start a long streamed generation; the event is set on its first piece of text."""
    started = threading.Event()
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(
                client.model_request(
                    "generate", timeout=120, on_stream=lambda _: started.set(), **LONG_GENERATION
                )
            )
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, started, outcome


def make_store(base: Path, gemma_path: Path) -> Path:
    """A model directory with the real Gemma 3 270M imported as ``gemma3-270m`` (linked)."""
    store = base / "models"
    config = Config.from_dict({"providers": {"llamacpp": {"options": {"model_directory": store}}}})
    backend = LlamaCppBackend(config)
    try:
        backend.import_model(gemma_path, GEMMA_ID, link=True)
    finally:
        backend.close()
    return store


def kernel_environment(base: Path, store: Path, **overrides: str) -> dict[str, str]:
    """The environment of a kernel subprocess: private dirs, the store, Ollama down."""
    env = dict(os.environ)
    for name in ("LLMSPELL_CONFIG", "HF_ENDPOINT", "HF_TOKEN", "JPY_PARENT_PID"):
        env.pop(name, None)
    env.update(private_dirs(base))
    (base / "ipython").mkdir(exist_ok=True)
    env.update(
        IPYTHONDIR=str(base / "ipython"),
        LLMSPELL_MODELS=str(store),
        OLLAMA_HOST=DEAD_OLLAMA,
    )
    env.update(overrides)
    return env


def install_kernelspec(base: Path) -> Path:
    """Install the ``llmspell`` kernelspec under ``base``; returns the dir for JUPYTER_PATH."""
    from llmspell_kernel.kernelspec import install

    install(prefix=base / "prefix")
    return base / "prefix" / "share" / "jupyter"


@dataclass
class KernelProcess:
    """A kernel subprocess started by jupyter_client from the installed kernelspec."""

    manager: KernelManager
    env: dict[str, str]

    @property
    def connection_file(self) -> str:
        return str(self.manager.connection_file)

    def stop(self) -> None:
        if self.manager.has_kernel:
            self.manager.shutdown_kernel(now=False)
        self.manager.cleanup_resources()


def start_kernel_process(
    base: Path, env: dict[str, str], *, cwd: Path | None = None, **manager: Any
) -> KernelProcess:
    """A kernel started by a jupyter_client ``KernelManager`` (``manager`` are its traits,
    e.g. ``transport_encryption``) from the installed kernelspec."""
    jupyter_path = install_kernelspec(base)
    env = {**env, "JUPYTER_PATH": str(jupyter_path)}
    previous = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = str(jupyter_path)  # the spec manager reads it from here
    try:
        kernel_manager = KernelManager(kernel_name="llmspell", **manager)
        kernel_manager.connection_file = str(base / "runtime" / "llmspell-test-kernel.json")
        kernel_manager.start_kernel(env=env, **({} if cwd is None else {"cwd": str(cwd)}))
    finally:
        if previous is None:
            os.environ.pop("JUPYTER_PATH", None)
        else:
            os.environ["JUPYTER_PATH"] = previous
    return KernelProcess(manager=kernel_manager, env=env)


@pytest.fixture(scope="module")
def gemma_store(tmp_path_factory: pytest.TempPathFactory, gemma_path: Path) -> Path:
    return make_store(tmp_path_factory.mktemp("store"), gemma_path)


@pytest.fixture(scope="module", name="kernel")
def gemma_kernel(
    tmp_path_factory: pytest.TempPathFactory, gemma_store: Path
) -> Iterator[KernelProcess]:
    """A kernel subprocess for the module, on the store with Gemma imported."""
    base = tmp_path_factory.mktemp("kernel")
    process = start_kernel_process(base, kernel_environment(base, gemma_store))
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module", name="client")
def gemma_client(kernel: KernelProcess) -> Iterator[LLMSpellClient]:
    """An LLMSpellClient of that kernel, with Gemma loaded."""
    with LLMSpellClient(kernel.connection_file) as llm:
        llm.model_request("load", model=GEMMA_ID, timeout=60)
        yield llm


# Raw protocol ----------------------------------------------------------------------------------


@dataclass
class Exchange:
    """One request sent with a raw jupyter_client client: its reply and IOPub messages."""

    request: dict[str, Any]
    reply: dict[str, Any]
    iopub: list[dict[str, Any]] = field(default_factory=list)

    @property
    def content(self) -> dict[str, Any]:
        return dict(self.reply["content"])

    def of_type(self, msg_type: str) -> list[dict[str, Any]]:
        return [m for m in self.iopub if m["header"]["msg_type"] == msg_type]


def raw_client(connection_file: str) -> BlockingKernelClient:
    client = BlockingKernelClient(connection_file=connection_file)
    client.load_connection_file()
    client.start_channels()
    client.wait_for_ready(timeout=30)
    return client


def exchange(
    client: BlockingKernelClient,
    msg_type: str,
    content: Any,
    *,
    header: dict[str, Any] | None = None,
    timeout: float = 60.0,
) -> Exchange:
    """Send one shell message; collect its reply and its IOPub messages up to idle."""
    msg = client.session.msg(msg_type, content)
    msg["header"].update(header or {})
    msg_id = msg["header"]["msg_id"]
    client.shell_channel.send(msg)
    deadline = time.monotonic() + timeout
    reply = None
    while reply is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no reply to {msg_type} {content!r} within {timeout} s")
        try:
            candidate = client.get_shell_msg(timeout=remaining)
        except queue.Empty:
            continue
        if candidate["parent_header"].get("msg_id") == msg_id:
            reply = candidate
    iopub: list[dict[str, Any]] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no idle status for {msg_type} within {timeout} s")
        try:
            msg_in = client.get_iopub_msg(timeout=remaining)
        except queue.Empty:
            continue
        if msg_in["parent_header"].get("msg_id") != msg_id:
            continue
        if msg_in["header"]["msg_type"] == "status":
            if msg_in["content"]["execution_state"] == "idle":
                break
            continue
        iopub.append(msg_in)
    return Exchange(request=msg, reply=reply, iopub=iopub)
