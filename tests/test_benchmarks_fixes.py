"""Tests for what the benchmarks found and fixed (see docs/benchmarks.md)."""

from __future__ import annotations

import subprocess
import sys
import threading
from typing import Any

import pytest

import providers
from providers.errors import ModelNotFound

HEAVY = ("pydantic", "platformdirs", "jupyter_client", "zmq", "ipykernel", "IPython",
         "llama_cpp", "httpx", "huggingface_hub")  # fmt: skip


def _imported_after(statement: str) -> list[str]:
    code = f"import sys\n{statement}\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return result.stdout.split()


def test_the_cli_app_imports_nothing_heavy() -> None:
    # `llmspell --help` pays for every module imported here (target: 0.3 s wall).
    assert _imported_after("import llmspell_cli.app") == []


def test_providers_errors_alone_does_not_load_config() -> None:
    assert _imported_after("import providers.errors, providers.spec") == []


def test_providers_names_still_load_on_first_use() -> None:
    assert providers.Config.__name__ == "Config"
    assert providers.ProviderManager.__module__ == "providers.manager"
    assert set(providers.__all__) <= set(dir(providers))
    try:
        providers.NoSuchName  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchName" in str(exc)
    else:
        raise AssertionError("an unknown name must raise AttributeError")


def test_state_queries_run_on_the_shell_thread_and_the_rest_on_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # list/status/ps skip the worker-thread hop (it made their round trip ~1.5x kernel_info);
    # everything that can load, pull or generate still runs off the shell's event loop.
    from llmspell_kernel import commands
    from llmspell_kernel.client import LLMSpellClient

    threads: dict[str, str] = {}
    real_run = commands.run

    def run(manager: Any, request: Any, op: Any) -> Any:
        threads[request.command] = threading.current_thread().name
        return real_run(manager, request, op)

    monkeypatch.setattr(commands, "run", run)
    with LLMSpellClient.embedded() as client:
        for command in ("list", "status", "ps", "available"):
            client.model_request(command, backend="llamacpp" if command != "ps" else None)
        with pytest.raises(ModelNotFound):
            client.model_request("info", model="nothing-here@llamacpp")
    assert {inline.command for inline in commands.INLINE_COMMANDS} == {"list", "status", "ps"}
    shell = threads["list"]
    assert threads["status"] == threads["ps"] == shell
    assert threading.current_thread().name != shell
    assert threads["available"] != shell
    assert threads["info"] != shell
