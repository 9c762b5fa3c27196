"""Ollama faults, counted, through the kernel and the backend: Ollama down (and back), slow
past ``timeout_seconds``, HTTP 500, truncated streams, malformed lines, incomplete streams and
errors in the middle of a stream.

Each fault must give its clear error (the right ``ename`` and a message saying what happened)
within a bound (no hang), leave the kernel alive (a fresh client's ``kernel_info`` and a
``list`` answer), and the same operation must work again once the fault is gone. Each test
counts what it tried and asserts that nothing was lost (``tests.hardening_faults_fixtures``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from llmspell_kernel.client import LLMSpellClient
from providers.errors import LLMSpellError
from providers.ollama import OllamaBackend
from providers.spec import ModelSpec
from providers.types import GenerationOptions, Message
from tests.hardening_faults_fixtures import Ledger
from tests.hardening_kernel_fixtures import kernel_alive
from tests.ollama_fixtures import gemma_runner, ollama_config, scripted_standin, standin
from tests.ollama_standin import Fault, GemmaRunner, OllamaStandin

__all__ = ["gemma_runner", "scripted_standin", "standin"]

pytestmark = pytest.mark.timeout(300)

TIMEOUT = 2.0
"""``providers.ollama.timeout_seconds`` in these tests. The kernel tests run against the
stand-in's scripted generation, which answers in milliseconds however busy the machine is, so
this short timeout is hit only by the ``slow`` faults it is there for."""
SLOW = 4.0
"""How long a slow stand-in waits before answering (past TIMEOUT)."""
BOUND = 10.0
"""Seconds any faulty request may take to fail (generous: only catches a hang)."""
PULL = "smollm2:135m@ollama"
CHAT_MODEL = "gemma3:270m@ollama"
STREAM_KINDS = {
    "midstream_error": "llama runner process has terminated",
    "truncated": "closed the connection in the middle of",
    "incomplete": "stream ended before its final line",
    "malformed": "malformed line on",
}


def write_config(tmp_path: Path, url: str) -> Path:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[providers.ollama]\nbase_url = "{url}"\ntimeout_seconds = {TIMEOUT}\n'
        f'[providers.llamacpp.options]\nmodel_directory = "{tmp_path / "models"}"\n',
        encoding="utf-8",
    )
    return config


@pytest.fixture
def client(scripted_standin: OllamaStandin, tmp_path: Path) -> Iterator[LLMSpellClient]:
    with LLMSpellClient.embedded(write_config(tmp_path, scripted_standin.url)) as embedded:
        yield embedded


def attempt(operation: Callable[[], Any]) -> tuple[Any, float]:
    began = time.perf_counter()
    try:
        result: Any = operation()
    except Exception as exc:
        result = exc
    return result, time.perf_counter() - began


def error_problems(result: Any, ename: str, fragment: str) -> list[str]:
    """What is wrong with ``result`` as the error ``ename`` whose message has ``fragment``."""
    if not isinstance(result, LLMSpellError):
        return [f"expected {ename}, got {result!r}"[:300]]
    problems = []
    if type(result).__name__ != ename:
        problems.append(f"ename {type(result).__name__}, expected {ename}: {result}")
    if fragment not in str(result):
        problems.append(f"message does not say {fragment!r}: {result}")
    return problems


def listing_problems(result: Any, fragment: str) -> list[str]:
    """``list`` stays an ok reply; Ollama's failure is reported in its ``errors``."""
    if not isinstance(result, dict):
        return [f"list failed: {result!r}"]
    reason = result.get("errors", {}).get("ollama", "")
    return [] if fragment in reason else [f"list errors do not say {fragment!r}: {reason!r}"]


def finished_requests(standin: OllamaStandin) -> int:
    """Generations the stand-in finished or found abandoned by their client."""
    with standin.lock:
        return len(standin.finals) + len(standin.abandoned)


def wait_for_standin(standin: OllamaStandin, seen: int, timeout: float) -> None:
    """Wait until a generation the client gave up on has ended inside the stand-in too (its one
    model runner is busy until then: a test's next request would wait for it)."""
    deadline = time.monotonic() + timeout
    while finished_requests(standin) <= seen and time.monotonic() < deadline:
        time.sleep(0.05)


def alive_problems(client: LLMSpellClient) -> list[str]:
    try:
        kernel_alive(str(client.connection_file), timeout=10)
        client.model_request("list", timeout=10)
    except (AssertionError, LLMSpellError) as exc:
        return [f"the kernel is not alive: {exc}"]
    return []


class Sweep:
    """Runs fault cases against a kernel client, recording them in a :class:`Ledger`."""

    def __init__(self, ledger: Ledger, client: LLMSpellClient, standin: OllamaStandin) -> None:
        self.ledger = ledger
        self.client = client
        self.standin = standin

    def case(
        self,
        label: str,
        fault: Fault | None,
        operation: Callable[[], Any],
        check: Callable[[Any], list[str]],
        recover: Callable[[], list[str]],
    ) -> None:
        self.standin.fault = fault
        result, seconds = attempt(operation)
        self.ledger.time("fault_reply", seconds)
        problems = check(result)
        if seconds > BOUND:
            problems.append(f"took {seconds:.1f} s (bound {BOUND} s)")
        problems += alive_problems(self.client)
        self.standin.fault = None
        problems += recover()
        self.ledger.case(label, problems)


def test_ollama_faults_through_the_kernel(
    client: LLMSpellClient, scripted_standin: OllamaStandin
) -> None:
    standin = scripted_standin
    ledger = Ledger("ollama_faults_kernel", extra={"timeout_seconds": TIMEOUT})
    sweep = Sweep(ledger, client, standin)

    def listing() -> Any:
        return client.model_request("list", timeout=30)

    def pull() -> Any:
        return client.model_request("pull", model=PULL, timeout=30)

    def list_recovers() -> list[str]:
        result, _ = attempt(listing)
        if not isinstance(result, dict) or "ollama" in result.get("errors", {}):
            return [f"list did not recover: {result!r}"[:300]]
        return []

    def pull_recovers() -> list[str]:
        result, _ = attempt(pull)
        if not isinstance(result, dict) or result.get("model", {}).get("id") != "smollm2:135m":
            return [f"pull did not recover: {result!r}"[:300]]
        return []

    within = f"within {TIMEOUT:g} s"
    sweep.case(
        "slow list",
        Fault("slow", delay=SLOW),
        listing,
        lambda r: listing_problems(r, within),
        list_recovers,
    )
    sweep.case(
        "slow status",
        Fault("slow", delay=SLOW),
        lambda: client.model_request("status", timeout=30),
        lambda r: [] if r["backends"]["ollama"]["available"] is False else [f"{r}"],
        list_recovers,
    )
    sweep.case(
        "slow pull",
        Fault("slow", path="/api/pull", delay=SLOW),
        pull,
        lambda r: error_problems(r, "DownloadError", f"did not answer /api/pull {within}"),
        pull_recovers,
    )
    sweep.case(
        "500 on list",
        Fault("error_500", path="/api/tags", message="disk on fire"),
        listing,
        lambda r: listing_problems(r, "disk on fire (HTTP 500)"),
        list_recovers,
    )
    sweep.case(
        "500 on pull",
        Fault("error_500", path="/api/pull", message="registry on fire"),
        pull,
        lambda r: error_problems(r, "DownloadError", "registry on fire (HTTP 500)"),
        pull_recovers,
    )
    for kind, fragment in STREAM_KINDS.items():
        sweep.case(
            f"{kind} pull stream",
            Fault(kind, path="/api/pull", after_lines=2),
            pull,
            lambda r, fragment=fragment: error_problems(r, "DownloadError", fragment),
            pull_recovers,
        )

    def generate() -> Any:
        return client.model_request(
            "generate", model=CHAT_MODEL, prompt="Hi", options={"max_tokens": 4}, timeout=30
        )

    def generate_recovers() -> list[str]:
        result, _ = attempt(generate)
        if not isinstance(result, dict) or not result.get("text"):
            return [f"generate did not recover: {result!r}"[:300]]
        return []

    # An interrupt while Ollama sends nothing (as while it loads a big model): Cancelled at
    # once, not the error of the timeout (TIMEOUT, shorter than the stall).
    for what, path, operation, recovers in (
        ("pull", "/api/pull", pull, pull_recovers),
        ("generation", "/api/generate", generate, generate_recovers),
    ):
        for round_ in range(3):
            standin.fault = Fault("slow", path=path, delay=SLOW)
            outcome: list[Any] = []
            worker = threading.Thread(
                target=lambda outcome=outcome, operation=operation: outcome.append(
                    attempt(operation)
                )
            )
            worker.start()
            try:
                time.sleep(0.3)
                asked = time.perf_counter()
                client.interrupt()
                worker.join(BOUND)
                ledger.time(f"interrupted_stalled_{what}", time.perf_counter() - asked)
            finally:
                worker.join(60)
            result = outcome[0][0] if outcome else None
            problems = error_problems(result, "Cancelled", "interrupted") + alive_problems(client)
            standin.fault = None
            ledger.case(f"interrupt of a stalled {what} {round_ + 1}", problems + recovers())

    # Down, then back on the same port: the same kernel works again.
    port = standin.port
    standin.stop()
    down = "not running at"
    for label, operation, check in (
        ("down: list", listing, lambda r: listing_problems(r, down)),
        (
            "down: status",
            lambda: client.model_request("status", timeout=30),
            lambda r: [] if down in r["backends"]["ollama"].get("reason", "") else [f"{r}"],
        ),
        ("down: pull", pull, lambda r: error_problems(r, "BackendUnavailable", down)),
        (
            "down: generate",
            lambda: client.model_request("generate", model=CHAT_MODEL, prompt="Hi", timeout=30),
            lambda r: error_problems(r, "BackendUnavailable", down),
        ),
        (
            "down: info",
            lambda: client.model_request("info", model=CHAT_MODEL, timeout=30),
            lambda r: error_problems(r, "BackendUnavailable", down),
        ),
    ):
        result, seconds = attempt(operation)
        ledger.time("fault_reply", seconds)
        problems = check(result) + alive_problems(client)
        if seconds > BOUND:
            problems.append(f"took {seconds:.1f} s")
        ledger.case(label, problems)
    standin.start(port)
    ledger.case("back up: list and pull", list_recovers() + pull_recovers())
    ledger.assert_nothing_lost()


def test_ollama_generation_faults_through_the_kernel(
    client: LLMSpellClient, scripted_standin: OllamaStandin
) -> None:
    standin = scripted_standin
    ledger = Ledger("ollama_generation_faults_kernel", extra={"timeout_seconds": TIMEOUT})
    sweep = Sweep(ledger, client, standin)
    options = {"max_tokens": 8, "temperature": 0}

    def chat() -> Any:
        messages = [{"role": "user", "content": "Name a colour."}]
        return client.model_request(
            "generate", model=CHAT_MODEL, messages=messages, options=options, stream=True
        )

    def complete() -> Any:
        return client.model_request(
            "generate",
            model=CHAT_MODEL,
            prompt="The capital of France is",
            options=options,
            stream=True,
            timeout=30,
        )

    def answers(operation: Callable[[], Any]) -> Callable[[], list[str]]:
        def check() -> list[str]:
            result, _ = attempt(operation)
            if not isinstance(result, dict) or not result.get("text", "").strip():
                return [f"the model does not answer after the fault: {result!r}"[:300]]
            return []

        return check

    def after_the_slow_one(operation: Callable[[], Any]) -> Callable[[], list[str]]:
        seen = finished_requests(standin)

        def check() -> list[str]:
            # The stand-in still runs the request the kernel gave up on (after its pause).
            wait_for_standin(standin, seen, SLOW + 30)
            return answers(operation)()

        return check

    for path, operation in (("/api/chat", chat), ("/api/generate", complete)):
        sweep.case(
            f"slow {path}",
            Fault("slow", path=path, delay=SLOW),
            operation,
            lambda r, path=path: error_problems(
                r, "GenerationError", f"did not answer {path} within {TIMEOUT:g} s"
            ),
            after_the_slow_one(operation),
        )
        sweep.case(
            f"500 on {path}",
            Fault("error_500", path=path, message="runner crashed"),
            operation,
            lambda r: error_problems(r, "GenerationError", "runner crashed (HTTP 500)"),
            answers(operation),
        )
        for kind, fragment in STREAM_KINDS.items():
            sweep.case(
                f"{kind} {path} stream",
                Fault(kind, path=path, after_lines=1),
                operation,
                lambda r, fragment=fragment: error_problems(r, "GenerationError", fragment),
                answers(operation),
            )
    ledger.assert_nothing_lost()


def test_ollama_faults_through_the_backend(standin: OllamaStandin) -> None:
    ledger = Ledger("ollama_faults_backend", extra={"timeout_seconds": TIMEOUT})
    backend = OllamaBackend(ollama_config(standin.url, timeout_seconds=TIMEOUT))
    spec = ModelSpec.parse(PULL)
    try:
        cases: list[tuple[str, Fault, Callable[[], Any], str, str]] = [
            ("slow tags", Fault("slow", delay=SLOW), backend.list_models, "BackendUnavailable",
             "within"),
            ("500 tags", Fault("error_500", path="/api/tags"), backend.list_models,
             "BackendUnavailable", "HTTP 500"),
            ("500 pull", Fault("error_500", path="/api/pull"), lambda: backend.pull(spec),
             "DownloadError", "HTTP 500"),
        ]  # fmt: skip
        cases += [
            (f"{kind} pull", Fault(kind, path="/api/pull"), lambda: backend.pull(spec),
             "DownloadError", fragment)
            for kind, fragment in STREAM_KINDS.items()
        ]  # fmt: skip
        for label, fault, operation, ename, fragment in cases:
            standin.fault = fault
            result, seconds = attempt(operation)
            ledger.time("fault_error", seconds)
            problems = error_problems(result, ename, fragment)
            if seconds > BOUND:
                problems.append(f"took {seconds:.1f} s")
            standin.fault = None
            recovered, _ = attempt(operation)
            if isinstance(recovered, BaseException):
                problems.append(f"did not recover: {recovered}")
            health = backend.health()
            if not health.available:
                problems.append(f"unhealthy after the fault: {health.reason}")
            ledger.case(label, problems)
    finally:
        backend.close()
    ledger.assert_nothing_lost()


@pytest.mark.model
def test_abandoned_ollama_streams_leave_the_backend_usable(
    standin: OllamaStandin, gemma_runner: GemmaRunner
) -> None:
    gemma_runner.load()
    ledger = Ledger("ollama_abandoned_streams")
    # The timeout is not what this test is about: a loaded machine must not fail it.
    backend = OllamaBackend(ollama_config(standin.url, timeout_seconds=60))
    spec = ModelSpec.parse(CHAT_MODEL)
    messages = [Message("user", "Count to twenty.")]
    try:
        for round_ in range(5):
            chunks = backend.chat(spec, messages, GenerationOptions(max_tokens=48, temperature=0))
            problems: list[str] = []
            first = next(iter(chunks))
            if not first.text:
                problems.append("no text before the consumer left")
            seen = finished_requests(standin)
            began = time.perf_counter()
            chunks.close()  # type: ignore[attr-defined]
            ledger.time("close", time.perf_counter() - began)
            wait_for_standin(standin, seen, 30)
            ledger.time("server_noticed", time.perf_counter() - began)
            result, _ = attempt(
                lambda: "".join(
                    c.text for c in backend.chat(spec, messages, GenerationOptions(max_tokens=8))
                )
            )
            if not isinstance(result, str) or not result.strip():
                problems.append(f"the next generation failed: {result!r}")
            ledger.case(f"stream abandoned after its first piece, {round_ + 1}", problems)
    finally:
        backend.close()
    ledger.assert_nothing_lost()
