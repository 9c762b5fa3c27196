"""LocalLLM.pull with the real llamacpp backend: progress on one line, errors on one line.

Downloads come from the Hub stand-in of tests/hub_standin.py on 127.0.0.1.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from llmspell_kernel.namespace import install_namespace
from llmspell_kernel.progress_view import PROGRESS_INTERVAL
from providers import Config, DownloadError, ProviderManager
from tests.hub_fixtures import dead_endpoint, hub
from tests.hub_standin import HubStandin
from tests.namespace_fixtures import shell

__all__ = ["dead_endpoint", "hub", "shell"]  # fixtures used by name


@pytest.fixture
def local_llm(shell: Any, tmp_path: Path) -> Any:
    config = Config.from_dict(
        {
            "default_backend": "llamacpp",
            "providers": {
                "ollama": {"enabled": False},
                "llamacpp": {"options": {"model_directory": str(tmp_path / "models")}},
            },
        }
    )
    manager = ProviderManager(config)
    install_namespace(shell, manager)
    try:
        yield shell.user_ns["LocalLLM"]
    finally:
        manager.close()


@pytest.mark.model
def test_pull_shows_byte_progress_on_one_line(
    local_llm: Any, hub: HubStandin, gemma_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hub.add_repo("example-org/gemma-3-270m-it-GGUF", {"gemma-3-270m-it-Q4_K_M.gguf": gemma_path})
    started = time.monotonic()
    result = local_llm.pull("hf:example-org/gemma-3-270m-it-GGUF")
    elapsed = time.monotonic() - started
    model_id = "hf:example-org/gemma-3-270m-it-GGUF:Q4_K_M"
    assert result["model"]["id"] == model_id
    assert result["bytes"] == gemma_path.stat().st_size

    out = capsys.readouterr().out
    assert out.endswith("\n") and "\n" not in out[:-1]
    *draws, summary = [text.rstrip() for text in out[:-1].split("\r")[1:]]
    assert summary == result.line  # the summary line replaces the progress at the end
    assert summary.startswith(f"pulled {model_id}@llamacpp: ")
    phases = [draw.split(": ", 1)[1].split(" ")[0] for draw in draws]
    assert phases[0] == "resolving" and phases[-1] == "done"
    assert {"downloading", "verifying"} <= set(phases)
    # throttled: within one phase at most one redraw per interval (hundreds of chunks arrived)
    assert len(draws) <= elapsed / PROGRESS_INTERVAL + len(set(phases)) + 1
    size = f"{gemma_path.stat().st_size / 1e6:.1f} MB"
    assert draws[-1] == f"{model_id}: done {size} / {size} (100%)"
    assert [row["id"] for row in local_llm.list()] == [model_id]


def test_offline_pull_is_one_line_in_a_cell(
    shell: Any, local_llm: Any, dead_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    result = shell.run_cell("LocalLLM.pull('hf:example-org/missing-GGUF')")
    assert isinstance(result.error_in_exec, DownloadError)
    out = capsys.readouterr().out
    progress, shown = out.split("\n", 1)
    assert progress.split("\r")[-1].strip() == "hf:example-org/missing-GGUF:Q4_K_M: resolving"
    assert shown.strip().startswith("DownloadError: ")
    assert len(shown.strip().splitlines()) == 1
