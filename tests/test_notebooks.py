"""Every example notebook (notebooks/local_llm_*.ipynb) executes with nbclient on the installed
llmspell kernelspec without errors, against the real Gemma 3 270M (imported as ``gemma3-270m``
into a temporary store) and the Ollama stand-in where a notebook uses the Ollama backend.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

from tests.cli_fixtures import isolated_env, run_cli
from tests.notebook_run import (
    EXAMPLES,
    GEMMA_ID,
    NOTEBOOK_DIR,
    NotebookEnv,
    error_outputs,
    execute,
    import_gemma,
    notebook_env,
    text_of,
)

pytestmark = [pytest.mark.model, pytest.mark.slow]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, gemma_path: Path) -> Iterator[NotebookEnv]:
    root = tmp_path_factory.mktemp("notebooks")
    store = import_gemma(root / "models", gemma_path)
    with notebook_env(root, store, gemma_path) as prepared:
        yield prepared


def code_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def test_the_examples_are_the_notebooks_in_the_folder() -> None:
    found = sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb") if p.name != "smoke.ipynb")
    assert found == sorted(EXAMPLES)


@pytest.mark.parametrize("name", EXAMPLES)
def test_committed_notebook_has_the_outputs_of_a_run(name: str) -> None:
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "llmspell"
    cells = code_cells(nb)
    assert all(cell.execution_count is not None for cell in cells), "run scripts/run_notebooks.py"
    assert [c.execution_count for c in cells] == list(range(1, len(cells) + 1))
    assert not error_outputs(nb)
    assert "Needs:" in nb.cells[0].source  # each notebook states what it needs


@pytest.mark.parametrize("name", EXAMPLES)
def test_notebook_executes_without_errors(name: str, env: NotebookEnv) -> None:
    nb = execute(NOTEBOOK_DIR / name, env.workdir, env.variables)
    assert error_outputs(nb) == []
    cells = code_cells(nb)
    assert all(cell.execution_count is not None for cell in cells)
    printed = "\n".join(text_of(cell) for cell in cells)
    if name == "local_llm_status.ipynb":
        assert GEMMA_ID in printed and "gemma3:270m" in printed
        assert env.ollama_url in printed
    elif name == "local_llm_chat.ipynb":
        history = next(c for c in cells if "agent.history" in c.source and "for" in c.source)
        assert text_of(history).count("assistant:") == 2
        magics = [c for c in cells if c.source.startswith("%")]
        assert len(magics) == 2 and all(text_of(c).strip() for c in magics)
    elif name == "local_llm_comparison.ipynb":
        charts = [o for c in cells for o in c.outputs if "image/svg+xml" in o.get("data", {})]
        assert len(charts) == 2
        assert all("<rect" in chart["data"]["image/svg+xml"] for chart in charts)
        assert "ollama: available=True" in printed and "llamacpp: available=True" in printed
    elif name == "local_llm_extraction.ipynb":
        tables = [
            o["data"]["text/html"]
            for c in cells
            for o in c.outputs
            if "text/html" in o.get("data", {})
        ]
        assert len(tables) == 1 and tables[0].count("<tr>") == 7  # a header and six records
        assert "6 records, each a Person" in printed and "Person(name=" in printed
        assert "the JSON answer was cut by max_tokens after 5 tokens" in printed
    elif name == "local_llm_model_info.ipynb":
        assert "chat_template: family:gemma" in printed
        assert "generated_tokens: " in printed
    elif name == "local_llm_embeddings.ipynb":
        assert "30 vectors of 640 numbers" in printed and "length of the first: 1.0" in printed
        assert printed.count("ok: ") == 5 and "MISSED" not in printed  # each question's topic
        charts = [o for c in cells for o in c.outputs if "image/svg+xml" in o.get("data", {})]
        assert len(charts) == 2 and all("<rect" in c["data"]["image/svg+xml"] for c in charts)


def test_kernel_install_user_makes_llmspell_appear_in_jupyter_kernelspec_list(
    tmp_path: Path,
) -> None:
    env = isolated_env(tmp_path / "home", tmp_path / "models")
    env["JUPYTER_DATA_DIR"] = str(tmp_path / "data")
    env["JUPYTER_PATH"] = str(tmp_path / "path")
    jupyter = Path(sys.executable).with_name("jupyter")

    assert "llmspell" not in kernelspecs(jupyter, env)
    installed = run_cli(["kernel", "install", "--user"], env)
    assert installed.returncode == 0, installed.stderr
    spec = kernelspecs(jupyter, env)["llmspell"]
    assert Path(spec["resource_dir"]) == tmp_path / "data" / "kernels" / "llmspell"
    python, *args = spec["spec"]["argv"]
    assert Path(python).resolve() == Path(sys.executable).resolve()
    assert args == ["-m", "llmspell_kernel", "-f", "{connection_file}"]
    assert spec["spec"]["display_name"] == "llmspell (local LLMs)"
    listed = subprocess.run(
        [str(jupyter), "kernelspec", "list"], env=env, capture_output=True, text=True, timeout=60
    )
    assert any(line.split()[0] == "llmspell" for line in listed.stdout.splitlines()[1:])


def kernelspecs(jupyter: Path, env: dict[str, str]) -> dict[str, Any]:
    """What ``jupyter kernelspec list --json`` finds, by name."""
    listed = subprocess.run(
        [str(jupyter), "kernelspec", "list", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found: dict[str, Any] = json.loads(listed.stdout)["kernelspecs"]
    return found
