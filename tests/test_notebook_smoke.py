"""notebooks/smoke.ipynb executed by nbclient on the installed llmspell kernelspec, and a cell
interrupt during %%llm, against the real Gemma 3 270M in a temporary model store.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_client.manager import start_new_kernel
from nbclient import NotebookClient

from llmspell_kernel import kernelspec
from tests.namespace_fixtures import GEMMA_ID, gemma_store

__all__ = ["gemma_store"]  # fixture used by name

pytestmark = [pytest.mark.model, pytest.mark.slow]

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "smoke.ipynb"
STARTUP_TIMEOUT = 60
CELL_TIMEOUT = 180


@pytest.fixture
def llmspell_kernel_env(
    tmp_path: Path, gemma_store: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """The llmspell kernelspec installed into a temporary Jupyter path, and an environment
    whose default model is the real Gemma in a temporary store. Yields a working directory."""
    prefix = tmp_path / "prefix"
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    kernelspec.install(prefix=prefix)
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter-data"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("LLMSPELL_MODELS", str(gemma_store))
    monkeypatch.setenv("LLMSPELL_MODEL", GEMMA_ID)
    workdir = tmp_path / "work"
    workdir.mkdir()
    yield workdir


def text_of(output: dict[str, Any]) -> str:
    if output["output_type"] == "stream":
        return str(output["text"])
    if output["output_type"] in ("execute_result", "display_data"):
        return str(output["data"].get("text/plain", ""))
    return ""


def test_smoke_notebook_runs_on_the_llmspell_kernel(llmspell_kernel_env: Path) -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        nb,
        kernel_name="llmspell",
        timeout=CELL_TIMEOUT,
        startup_timeout=STARTUP_TIMEOUT,
        resources={"metadata": {"path": str(llmspell_kernel_env)}},
    )
    client.execute()
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    status, listing, chat, magic, error = code

    status_text = "".join(text_of(o) for o in status.outputs)
    # a table of the backends (text/plain here; JupyterLab renders the text/html)
    assert re.search(r"^llamacpp +yes ", status_text, re.MULTILINE), status_text
    html = "".join(o.get("data", {}).get("text/html", "") for o in status.outputs)
    assert '<table class="llmspell-table">' in html and "<td>llamacpp</td>" in html
    assert GEMMA_ID in "".join(text_of(o) for o in listing.outputs)

    printed = [o for o in chat.outputs if o["output_type"] == "stream" and o["name"] == "stdout"]
    assert "".join(o["text"] for o in printed).strip()
    assert [text_of(o) for o in chat.outputs if o["output_type"] == "execute_result"] == ["3"]

    streamed = [o for o in magic.outputs if o["output_type"] == "stream"]
    assert streamed and "".join(o["text"] for o in streamed).strip()
    assert all(o["name"] == "stdout" for o in streamed)
    assert not [o for o in magic.outputs if o["output_type"] == "execute_result"]

    assert len(error.outputs) == 1
    shown = error.outputs[0]
    assert shown["output_type"] == "error"
    assert shown["ename"] == "ModelNotFound"
    assert len(shown["traceback"]) == 1
    assert shown["traceback"][0].startswith("ModelNotFound: ")
    assert "no-such-model" in shown["traceback"][0]


def _wait_for(kc: Any, channel: str, match: Any, timeout: float) -> dict[str, Any]:
    """The first message on ``channel`` for which ``match(msg)`` is true, within ``timeout``."""
    deadline = time.monotonic() + timeout
    get = kc.get_iopub_msg if channel == "iopub" else kc.get_shell_msg
    while (left := deadline - time.monotonic()) > 0:
        try:
            msg: dict[str, Any] = get(timeout=left)
        except Exception:  # queue.Empty: nothing more in time
            break
        if match(msg):
            return msg
    raise AssertionError(f"no matching {channel} message within {timeout} s")


def test_interrupting_a_streaming_cell_leaves_the_model_usable(llmspell_kernel_env: Path) -> None:
    km, kc = start_new_kernel(
        kernel_name="llmspell", startup_timeout=STARTUP_TIMEOUT, cwd=str(llmspell_kernel_env)
    )
    try:
        assert km.kernel_spec.argv[0] == sys.executable
        msg_id = kc.execute(
            "%%llm --max-tokens 400 --temperature 0\n"
            "Write a very long story about a dragon and a knight.\n"
        )

        def ours(kind: str) -> Any:
            return lambda m: m["parent_header"].get("msg_id") == msg_id and m["msg_type"] == kind

        first = _wait_for(kc, "iopub", ours("stream"), CELL_TIMEOUT)
        assert first["content"]["text"]
        km.interrupt_kernel()
        reply = _wait_for(kc, "shell", ours("execute_reply"), 60)
        assert reply["content"]["status"] == "error"
        # One line, not KeyboardInterrupt's frames through llama_cpp: %llm says what stopped.
        assert reply["content"]["ename"] == "GenerationStopped"
        assert reply["content"]["traceback"] == [reply["content"]["evalue"]]
        assert "generation stopped after" in reply["content"]["evalue"]

        pieces: list[str] = []

        def collect(msg: dict[str, Any]) -> None:
            if msg["msg_type"] == "stream":
                pieces.append(msg["content"]["text"])

        reply = kc.execute_interactive(
            "%%llm --max-tokens 8 --temperature 0\nSay hi.\n",
            timeout=CELL_TIMEOUT,
            output_hook=collect,
        )
        assert reply["content"]["status"] == "ok"
        assert "".join(pieces).strip()
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
