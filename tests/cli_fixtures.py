"""Fixtures and helpers for the CLI tests (tests/test_cli_*.py).

Two ways to run the CLI: in this process through typer's ``CliRunner`` (:func:`invoke`), and as
the installed ``llmspell`` program in a subprocess (:func:`run_cli`). The session fixture
:func:`cli_session` builds one model store with the real Gemma 3 270M imported through
``llmspell model import``; :func:`daemon` starts one background kernel on it with
``llmspell kernel start --daemon`` and stops it at the end, so that the tests share one loaded
model instead of loading it in every test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from llmspell_cli.app import app
from tests.isolation import private_dirs

LLMSPELL = Path(sys.executable).with_name("llmspell")
GEMMA = "gemma3-270m"
GEMMA_SPEC = "gemma3-270m@llamacpp"
SUBPROCESS_TIMEOUT = 180.0


# An embedded ipykernel sets these in the process that runs it (its shell forces colours and
# a pager for its children). Around each in-process run the colour ones are removed, so that the
# output is plain text as in a pipe, and all of them get their previous values back afterwards.
_COLOUR_VARS = ("FORCE_COLOR", "CLICOLOR_FORCE", "CLICOLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")
_KERNEL_SET_VARS = ("TERM", "PAGER", "GIT_PAGER")


def invoke(args: Sequence[str], *, input: str | None = None) -> Result:
    """Run the CLI in this process, as in a pipe; stdout and stderr are kept apart.

    (CliRunner echoes ``input`` to stdout where a prompt reads it.)
    """
    env: dict[str, str | None] = dict.fromkeys(_COLOUR_VARS)
    env.update({name: os.environ.get(name) for name in _KERNEL_SET_VARS})
    return CliRunner().invoke(app, list(args), input=input, env=env, catch_exceptions=False)


def json_of(result: Result | subprocess.CompletedProcess[str]) -> Any:
    """The one JSON document a command printed on stdout."""
    return json.loads(result.stdout)


@dataclass(frozen=True)
class CliSession:
    root: Path
    models: Path
    env: dict[str, str]
    """Environment for subprocesses: every directory inside ``root``, Ollama unreachable."""


def isolated_env(root: Path, models: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("LLMSPELL_", "HF_", "JUPYTER_", "XDG_", "OLLAMA_"))
    }
    env.update(private_dirs(root))
    (root / "jupyter").mkdir(exist_ok=True)
    env.update(
        XDG_RUNTIME_DIR=str(root / "runtime"),
        JUPYTER_DATA_DIR=str(root / "jupyter"),
        OLLAMA_HOST="http://127.0.0.1:9",
        LLMSPELL_MODELS=str(models),
        PYTHONUNBUFFERED="1",
    )
    return env


def run_cli(
    args: Sequence[str],
    env: dict[str, str],
    *,
    input: str | None = None,
    timeout: float = SUBPROCESS_TIMEOUT,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``llmspell`` program (in ``cwd``, else this directory)."""
    return subprocess.run(
        [str(LLMSPELL), *args],
        env=env,
        cwd=cwd,
        input=input if input is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session")
def cli_session(tmp_path_factory: pytest.TempPathFactory, gemma_path: Path) -> CliSession:
    """A model store holding the real Gemma model, imported with ``llmspell model import``."""
    root = tmp_path_factory.mktemp("cli-session")
    models = root / "models"
    env = isolated_env(root, models)
    result = run_cli(["model", "import", str(gemma_path), "--name", GEMMA], env)
    assert result.returncode == 0, result.stderr
    assert f"imported {GEMMA}" in result.stdout
    return CliSession(root, models, env)


@pytest.fixture(scope="session")
def daemon(cli_session: CliSession) -> Iterator[dict[str, Any]]:
    """A background kernel on the session's store (``llmspell kernel start --daemon``)."""
    started = run_cli(["--output", "json", "kernel", "start", "--daemon"], cli_session.env)
    assert started.returncode == 0, started.stderr
    record: dict[str, Any] = json.loads(started.stdout)
    try:
        yield record
    finally:
        run_cli(["kernel", "stop", str(record["id"])], cli_session.env, timeout=60)


@pytest.fixture
def gemma_store(cli_session: CliSession, monkeypatch: pytest.MonkeyPatch) -> CliSession:
    """This test's environment pointed at the session's model store (for embedded kernels)."""
    monkeypatch.setenv("LLMSPELL_MODELS", str(cli_session.models))
    return cli_session
