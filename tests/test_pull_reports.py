"""Pull reports (issue 21, item 6): a resumed pull says what it downloaded and what it resumed
(it used to say the whole size was downloaded); an interrupted pull says that the partial
download is kept and that the next pull resumes it (it used to say only ``interrupted``)."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from providers.errors import DownloadError
from tests import hub_fixtures
from tests.cli_fixtures import LLMSPELL, invoke, isolated_env, json_of, run_cli
from tests.hub_standin import HubStandin

hub = hub_fixtures.hub

CATALOG_REPO = "unsloth/gemma-3-270m-it-GGUF"
CATALOG_FILE = "gemma-3-270m-it-Q4_K_M.gguf"
CUT = 100_000_000


def test_resumed_pull_reports_downloaded_and_resumed_bytes(
    hub: HubStandin, gemma_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.add_repo(CATALOG_REPO, {CATALOG_FILE: gemma_path})
    monkeypatch.setenv("LLMSPELL_MODELS", str(tmp_path / "store"))
    hub.faults.drop_at = CUT
    failed = invoke(["model", "pull", "gemma3-270m@llamacpp"])
    assert failed.exit_code == 1
    assert "resume" in failed.stderr
    hub.faults.drop_at = None

    resumed = invoke(["model", "pull", "gemma3-270m@llamacpp"])

    assert resumed.exit_code == 0, resumed.stderr
    assert resumed.stdout.startswith(
        "pulled gemma3-270m:Q4_K_M (253.1 MB; 153.1 MB downloaded, 100.0 MB resumed) in "
    )
    assert hub.downloads(CATALOG_FILE)[-1].range == f"bytes={CUT}-"
    again = json_of(invoke(["-o", "json", "model", "pull", "gemma3-270m@llamacpp"]))
    assert (again["bytes"], again["resumed_bytes"]) == (0, 0)  # installed: nothing to do


def test_a_fresh_pull_reports_no_resumed_bytes(
    hub: HubStandin, gemma_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.add_repo(CATALOG_REPO, {CATALOG_FILE: gemma_path})
    monkeypatch.setenv("LLMSPELL_MODELS", str(tmp_path / "store"))
    pulled = json_of(invoke(["-o", "json", "model", "pull", "gemma3-270m@llamacpp"]))
    assert (pulled["bytes"], pulled["resumed_bytes"]) == (gemma_path.stat().st_size, 0)


def test_a_partial_bigger_than_the_file_is_not_counted_as_resumed(
    hub: HubStandin, gemma_path: Path, tmp_path: Path
) -> None:
    from providers.llamacpp import hub as hub_module

    hub.add_repo(CATALOG_REPO, {CATALOG_FILE: gemma_path})
    file = hub_module.resolve(CATALOG_REPO, "Q4_K_M")
    dest = tmp_path / "out.gguf"
    hub_module.partial_path(dest).write_bytes(b"x" * (file.size + 1))
    told: list[int] = []
    hub_module.download(file, dest, on_resumed=told.append)
    assert told == [0]
    hub.faults.drop_at = 1_000_000
    with pytest.raises(DownloadError):
        hub_module.download(file, tmp_path / "b.gguf", on_resumed=told.append)
    assert told == [0]  # a failed download tells nothing
    hub.faults.drop_at = None
    hub_module.download(file, tmp_path / "b.gguf", on_resumed=told.append)
    assert told == [0, 1_000_000]


def test_an_interrupted_pull_says_the_partial_download_is_kept(
    hub: HubStandin, gemma_path: Path, tmp_path: Path
) -> None:
    hub.add_repo(CATALOG_REPO, {CATALOG_FILE: gemma_path})
    env = isolated_env(tmp_path / "pull", tmp_path / "pull" / "models")
    env["HF_ENDPOINT"] = hub.url
    hub.faults.delay = 0.01  # minutes for the whole file: the interrupt comes long before
    process = subprocess.Popen(
        [str(LLMSPELL), "model", "pull", "gemma3-270m@llamacpp"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    try:
        seen = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = process.stderr.readline()
            seen.append(line)
            if "downloading" in line or not line:
                break
        assert any("downloading" in line for line in seen), seen
        time.sleep(1.0)  # some bytes reach the partial file
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, stderr
    assert stdout == ""
    assert (
        "interrupted: the partial download is kept; `llmspell model pull gemma3-270m@llamacpp`"
        " resumes it"
    ) in stderr
    hub.faults.delay = 0.0
    again = run_cli(["model", "pull", "gemma3-270m@llamacpp"], env)
    assert again.returncode == 0, again.stderr
    assert " resumed) in " in again.stdout
