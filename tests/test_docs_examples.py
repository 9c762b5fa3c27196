"""Every command shown in docs/*.md is run, or the doc says why not (convention: docs/index.md).

The commands of one page run in order, through bash, in a fresh working directory and
environment: the llmspell program and Python of this venv first on PATH, a model store holding
the real Gemma 3 270M as ``gemma3-270m``, the Hugging Face Hub stand-in (serving the same file
as the catalog's gemma3-270m) at HF_ENDPOINT, and the Ollama stand-in at OLLAMA_HOST. A command
documented with an ``error:`` line must fail with that error (exit code 1); every other one must
succeed. The JSON examples of docs/protocol.md are checked against the protocol's schema.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from llmspell_kernel.protocol import COMMANDS, RESULTS, parse_request
from providers.errors import InvalidModelSpec, InvalidRequest
from tests.cli_fixtures import isolated_env
from tests.docs_examples import (
    DOCS,
    Command,
    blocks,
    check_convention,
    commands,
    pages,
)
from tests.hub_standin import HubStandin
from tests.notebook_run import import_gemma
from tests.ollama_standin import GemmaRunner, OllamaStandin

CATALOG_REPO = "unsloth/gemma-3-270m-it-GGUF"
CATALOG_FILE = "gemma-3-270m-it-Q4_K_M.gguf"
COMMAND_TIMEOUT = 180.0
VENV_BIN = Path(sys.executable).parent


def runnable_pages() -> list[str]:
    names = []
    for page in pages():
        if any(b.language == "console" and b.not_run is None for b in blocks(page)):
            names.append(page.name)
    return names


# The convention ---------------------------------------------------------------------------------


@pytest.mark.parametrize("page", [p.name for p in pages()])
def test_page_follows_the_examples_convention(page: str) -> None:
    for block in blocks(DOCS / page):
        check_convention(block)


def test_the_convention_is_enforced(tmp_path: Path) -> None:
    from tests.docs_examples import ConventionError

    bad = {
        "```bash\n$ llmspell model list\n```\n": "console blocks",
        "<!-- not run:  -->\n```console\n$ llmspell x\n```\n": "reason",
        "```console\nno command here\n```\n": "output before a command",
        "<!-- env: NOVALUE -->\n```console\n$ llmspell x\n```\n": "NAME=VALUE",
        "<!-- not run: why -->\n\ntext\n```console\n$ x\n```\n": "right before",
        "<!-- file: ../x.py -->\n```python\nprint()\n```\n": "relative",
    }
    for text, message in bad.items():
        page = tmp_path / "page.md"
        page.write_text(text)
        with pytest.raises(ConventionError, match=message):
            for block in blocks(page):
                check_convention(block)


def test_every_page_of_the_docs_is_linked_from_the_index() -> None:
    index = (DOCS / "index.md").read_text()
    for page in pages():
        if page.name != "index.md":
            assert f"({page.name})" in index, page.name


# The protocol examples --------------------------------------------------------------------------

ERROR_FIELDS = {"status", "command", "ename", "evalue", "traceback", "model", "backend"}


def protocol_pairs() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(request, reply) contents of protocol.md's examples, in order."""
    text = (DOCS / "protocol.md").read_text()
    found = re.findall(r"^(Request|Reply)[^\n]*:\n\n```json\n(.*?)\n```", text, re.M | re.S)
    pairs = []
    for (kind_a, body_a), (kind_b, body_b) in zip(found[::2], found[1::2], strict=True):
        assert (kind_a, kind_b) == ("Request", "Reply")
        pairs.append((json.loads(body_a), json.loads(body_b)))
    return pairs


def test_protocol_examples_cover_every_command_with_valid_requests_and_replies() -> None:
    pairs = protocol_pairs()
    assert {request["command"] for request, reply in pairs if reply["status"] == "ok"} == set(
        COMMANDS
    )
    errors = 0
    for request, reply in pairs:
        assert reply["command"] == request["command"]
        if reply["status"] == "ok":
            parsed = parse_request(request)
            result = RESULTS[parsed.command]
            assert set(result.model_fields) <= set(reply), reply  # every field is shown
        else:
            errors += 1
            assert set(reply) == ERROR_FIELDS
            assert reply["evalue"]
            if reply["ename"] in ("InvalidRequest", "InvalidModelSpec"):
                with pytest.raises((InvalidRequest, InvalidModelSpec)):
                    parse_request(request) if reply["ename"] == "InvalidRequest" else _spec(request)
    assert errors >= 5
    text = (DOCS / "protocol.md").read_text()
    assert '"model_progress"' in text or "`model_progress` contents" in text
    assert "`model_stream` contents" in text


def _spec(request: dict[str, Any]) -> None:
    from providers.spec import parse_spec

    parse_spec(request["model"])


# Running the commands ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DocsWorld:
    root: Path
    store: Path
    hub_url: str
    ollama_url: str


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, gemma_path: Path) -> Iterator[DocsWorld]:
    root = tmp_path_factory.mktemp("docs")
    store = import_gemma(root / "models", gemma_path)
    hub = HubStandin()
    hub.add_repo(CATALOG_REPO, {CATALOG_FILE: gemma_path})
    ollama = OllamaStandin(GemmaRunner(gemma_path), model_size=gemma_path.stat().st_size)
    with hub:
        ollama.start()
        try:
            yield DocsWorld(root, store, hub.url, ollama.url)
        finally:
            ollama.stop()


def page_env(world: DocsWorld, page: str) -> tuple[dict[str, str], Path]:
    home = world.root / page.removesuffix(".md")
    env = isolated_env(home, world.store)
    (home / "home").mkdir()
    env.update(
        HOME=str(home / "home"),
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        JUPYTER_PATH=str(home / "jupyter-path"),
        HF_ENDPOINT=world.hub_url,
        OLLAMA_HOST=world.ollama_url,
        COLUMNS="100",
    )
    workdir = home / "work"
    workdir.mkdir()
    return env, workdir


def run(command: Command, env: dict[str, str], workdir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", command.text],
        env={**env, **command.env},
        cwd=workdir,
        input="",
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )


def _stable_prefix(error: str) -> str:
    """The documented error line up to the first part that varies (a path, a port, '...')."""
    return re.split(r"/|\(\.\.\.\)|127\.0\.0\.1|\d{2,}", error, maxsplit=1)[0].rstrip()


@pytest.mark.model
@pytest.mark.slow
@pytest.mark.parametrize("page", runnable_pages())
def test_doc_commands_run_as_shown(page: str, world: DocsWorld) -> None:
    env, workdir = page_env(world, page)
    ran = 0
    try:
        for block in blocks(DOCS / page):
            if block.file is not None:
                (workdir / block.file).write_text(block.text, encoding="utf-8")
            if block.language != "console" or block.not_run is not None:
                continue
            for command in commands(block):
                result = run(command, env, workdir)
                where = f"{page}:{command.line}: $ {command.text}\n{result.stderr}"
                ran += 1
                if command.fails:
                    assert result.returncode == 1, where
                    assert command.error is not None
                    assert _stable_prefix(command.error) in result.stderr, where
                else:
                    assert result.returncode == 0, where
                    assert "Traceback" not in result.stderr, where
    finally:
        # Kernels a page started and did not stop (a failed test) must not outlive it.
        subprocess.run(
            [str(VENV_BIN / "llmspell"), "kernel", "stop", "--all"],
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
    assert ran > 0


def test_blocks_not_run_say_why() -> None:
    for page in pages():
        for block in blocks(page):
            if block.language == "console" and block.not_run is not None:
                assert len(block.not_run.split()) >= 3, f"{page.name}:{block.line}"
