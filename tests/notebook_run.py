"""Running the example notebooks (notebooks/*.ipynb) on the llmspell kernelspec.

Used by tests/test_notebooks.py (executes each one, asserts no errors) and by
scripts/run_notebooks.py (re-executes them in place to refresh the committed outputs). Both run
them the same way: the kernelspec installed into a temporary Jupyter path, a model store holding
the real Gemma 3 270M as ``gemma3-270m``, and the Ollama stand-in (tests/ollama_standin.py, the
same Gemma over Ollama's REST API) at ``OLLAMA_HOST``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient

from llmspell_kernel import kernelspec
from tests.ollama_standin import GemmaRunner, OllamaStandin

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
EXAMPLES = (
    "local_llm_status.ipynb",
    "local_llm_chat.ipynb",
    "local_llm_comparison.ipynb",
    "local_llm_model_info.ipynb",
    "local_llm_extraction.ipynb",
    "local_llm_embeddings.ipynb",
)
"""The example notebooks committed with the outputs of a real run (smoke.ipynb is not one)."""
GEMMA_ID = "gemma3-270m"
STARTUP_TIMEOUT = 60
CELL_TIMEOUT = 180


@dataclass(frozen=True)
class NotebookEnv:
    """Where the notebooks run: environment variables for the kernel and its working dir."""

    variables: dict[str, str]
    workdir: Path
    ollama_url: str


def import_gemma(store: Path, gemma_path: Path) -> Path:
    """A model store at ``store`` holding ``gemma_path`` as ``gemma3-270m`` (idempotent)."""
    from providers import Config
    from providers.llamacpp import LlamaCppBackend

    config = Config.from_dict(
        {"providers": {"llamacpp": {"options": {"model_directory": str(store)}}}}
    )
    backend = LlamaCppBackend(config)
    try:
        backend.import_model(gemma_path, GEMMA_ID)
    finally:
        backend.close()
    return store


@contextmanager
def notebook_env(root: Path, store: Path, gemma_path: Path) -> Iterator[NotebookEnv]:
    """The kernelspec installed under ``root`` and the Ollama stand-in running, until exit."""
    prefix = root / "prefix"
    kernelspec.install(prefix=prefix)
    workdir = root / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    standin = OllamaStandin(GemmaRunner(gemma_path), model_size=gemma_path.stat().st_size)
    standin.start()
    try:
        variables = {
            "JUPYTER_PATH": str(prefix / "share" / "jupyter"),
            "JUPYTER_DATA_DIR": str(root / "jupyter-data"),
            "IPYTHONDIR": str(root / "ipython"),
            "LLMSPELL_MODELS": str(store),
            "OLLAMA_HOST": standin.url,
        }
        yield NotebookEnv(variables, workdir, standin.url)
    finally:
        standin.stop()


def execute(path: Path, workdir: Path, env: Mapping[str, str] | None = None) -> Any:
    """Execute the notebook at ``path`` on the llmspell kernelspec; returns the executed
    notebook. Raises nbclient's ``CellExecutionError`` on the first cell that fails (cells
    tagged ``raises-exception`` may fail)."""
    nb = nbformat.read(path, as_version=4)
    saved = {name: os.environ.get(name) for name in env or {}}
    os.environ.update(env or {})
    try:
        NotebookClient(
            nb,
            kernel_name=kernelspec.KERNEL_NAME,
            timeout=CELL_TIMEOUT,
            startup_timeout=STARTUP_TIMEOUT,
            resources={"metadata": {"path": str(workdir)}},
            coalesce_streams=True,  # one output per stream of a cell, not one per token
        ).execute()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return nb


def error_outputs(nb: Any) -> list[dict[str, Any]]:
    """Every ``error`` output and every stderr text that looks like a traceback."""
    found = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output["output_type"] == "error":
                found.append(output)
            elif output["output_type"] == "stream" and "Traceback" in output["text"]:
                found.append(output)
    return found


def text_of(cell: Any) -> str:
    """All the text a code cell printed or displayed (stdout, stderr, text/plain, text/html)."""
    parts = []
    for output in cell.get("outputs", []):
        if output["output_type"] == "stream":
            parts.append(output["text"])
        elif output["output_type"] in ("execute_result", "display_data"):
            data = output["data"]
            parts += [data.get("text/plain", ""), data.get("text/html", "")]
    return "".join(parts)
