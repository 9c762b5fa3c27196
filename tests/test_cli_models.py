"""``llmspell model ...`` through CliRunner with the real Gemma model: text and JSON output,
error exits. The kernel is embedded in the test process (a new one per command), or, for the
commands whose effect must outlive one command (load, ps, unload), the session's daemon kernel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests import cli_fixtures, hub_fixtures, ollama_fixtures
from tests.cli_fixtures import GEMMA, CliSession, invoke, json_of
from tests.hub_standin import HubStandin
from tests.ollama_standin import OllamaStandin

hub = hub_fixtures.hub
cli_session = cli_fixtures.cli_session
daemon = cli_fixtures.daemon
gemma_store = cli_fixtures.gemma_store

pytestmark = pytest.mark.model

CATALOG_REPO = "unsloth/gemma-3-270m-it-GGUF"
CATALOG_FILE = "gemma-3-270m-it-Q4_K_M.gguf"


def assert_one_error_line(stderr: str, *needles: str) -> None:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    for needle in needles:
        assert needle in lines[0]
    assert "Traceback" not in stderr


def test_list_text_shows_a_table_and_the_unavailable_backend(gemma_store: CliSession) -> None:
    result = invoke(["model", "list"])
    assert result.exit_code == 0, result.stderr
    header, _, row = result.stdout.splitlines()[:3]
    for column in ("ID", "BACKEND", "SIZE", "QUANTIZATION", "MODIFIED", "LOADED"):
        assert column in header
    assert row.split()[:4] == [GEMMA, "│", "llamacpp", "│"]
    assert "253.1 MB" in row and "Q4_K_M" in row
    assert "ollama: unavailable — " in result.stderr
    verbose = invoke(["model", "list", "-v"])
    assert "FAMILY" in verbose.stdout and "gemma3" in verbose.stdout and "270M" in verbose.stdout


def test_list_json(gemma_store: CliSession) -> None:
    result = invoke(["--output", "json", "model", "list"])
    assert result.exit_code == 0
    document = json_of(result)
    assert [(m["id"], m["backend"], m["loaded"]) for m in document["models"]] == [
        (GEMMA, "llamacpp", False)
    ]
    assert document["models"][0]["size_bytes"] > 200_000_000
    assert set(document["errors"]) == {"ollama"}
    only_llamacpp = json_of(invoke(["--output", "json", "model", "list", "--backend", "llamacpp"]))
    assert only_llamacpp["errors"] == {}


def test_info_text_and_json(gemma_store: CliSession) -> None:
    text = invoke(["model", "info", GEMMA])
    assert text.exit_code == 0, text.stderr
    fields = dict(line.split(None, 1) for line in text.stdout.splitlines() if " " in line.strip())
    assert fields["id"].strip() == GEMMA
    assert fields["architecture"].strip() == "gemma3"
    document = json_of(invoke(["--output", "json", "model", "info", f"{GEMMA}@llamacpp"]))
    model = document["model"]
    assert (model["id"], model["quantization"], model["architecture"]) == (
        GEMMA,
        "Q4_K_M",
        "gemma3",
    )
    assert model["context_length"] == 32768


def test_unknown_model_is_one_error_line_and_exit_1(gemma_store: CliSession) -> None:
    result = invoke(["model", "info", "no-such-model@llamacpp"])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert_one_error_line(result.stderr, "no-such-model")
    as_json = invoke(["--output", "json", "model", "info", "no-such-model@llamacpp"])
    assert as_json.exit_code == 1
    assert json_of(as_json)["error"]["ename"] == "ModelNotFound"
    assert_one_error_line(as_json.stderr, "no-such-model")


def test_bad_spec_from_the_kernel_is_exit_1(gemma_store: CliSession) -> None:
    result = invoke(["--output", "json", "model", "info", "../etc/passwd"])
    assert result.exit_code == 1
    assert json_of(result)["error"]["ename"] == "InvalidModelSpec"
    assert_one_error_line(result.stderr, "..")


def test_debug_logging_shows_the_traceback(gemma_store: CliSession) -> None:
    result = invoke(["--log-level", "debug", "model", "info", "no-such-model@llamacpp"])
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith("error: ")


def test_status_text_and_json(gemma_store: CliSession) -> None:
    text = invoke(["model", "status"])
    assert text.exit_code == 0
    rows = {line.split()[0]: line for line in text.stdout.splitlines()[2:] if line.strip()}
    assert "yes" in rows["llamacpp"]
    assert "no" in rows["ollama"] and "127.0.0.1:9" in text.stdout
    backends = json_of(invoke(["--output", "json", "model", "status"]))["backends"]
    assert backends["llamacpp"]["available"] is True
    assert backends["llamacpp"]["models"] == 1
    assert backends["ollama"]["available"] is False
    assert backends["ollama"]["reason"]


def test_available_text_and_json(gemma_store: CliSession) -> None:
    text = invoke(["model", "available", "--backend", "llamacpp"])
    assert text.exit_code == 0
    assert "gemma3-270m" in text.stdout and "Q4_K_M" in text.stdout
    everything = json_of(invoke(["--output", "json", "model", "available", "-b", "llamacpp"]))
    recommended = json_of(
        invoke(["--output", "json", "model", "available", "-b", "llamacpp", "--recommended"])
    )
    names = {m["name"] for m in everything["models"]}
    assert "gemma3-270m" in names
    assert {m["name"] for m in recommended["models"]} < names
    assert all(m["recommended"] for m in recommended["models"])


def test_import_then_remove_asks_first(
    gemma_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMSPELL_MODELS", str(tmp_path / "store"))
    imported = invoke(["model", "import", str(gemma_path), "--name", "g2"])
    assert imported.exit_code == 0, imported.stderr
    assert imported.stdout == "imported g2 (253.1 MB)\n"
    again = json_of(invoke(["--output", "json", "model", "import", str(gemma_path), "-n", "g2"]))
    assert again["model"]["id"] == "g2"  # the same file under the same id: nothing new

    unconfirmed = invoke(["model", "remove", "g2"])  # stdin at EOF
    assert unconfirmed.exit_code == 1
    assert "not removed" in unconfirmed.stderr
    refused = invoke(["model", "remove", "g2"], input="n\n")
    assert refused.exit_code == 1
    assert "Remove model g2?" in refused.stderr
    assert [m["id"] for m in json_of(invoke(["-o", "json", "model", "list"]))["models"]] == ["g2"]

    confirmed = invoke(["model", "remove", "g2"], input="y\n")
    assert confirmed.exit_code == 0, confirmed.stderr
    assert confirmed.stdout.endswith("removed g2\n")
    empty = invoke(["model", "list", "--backend", "llamacpp"])
    assert "no models installed" in empty.stderr
    gone = invoke(["--output", "json", "model", "remove", "-y", "g2@llamacpp"])
    assert gone.exit_code == 1
    assert json_of(gone)["error"]["ename"] == "ModelNotFound"


def test_import_of_a_missing_file_fails(tmp_path: Path, gemma_store: CliSession) -> None:
    result = invoke(["model", "import", str(tmp_path / "missing.gguf")])
    assert result.exit_code == 1
    assert_one_error_line(result.stderr, "missing.gguf")


def test_pull_shows_progress_then_the_model(
    hub: HubStandin, gemma_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.add_repo(CATALOG_REPO, {CATALOG_FILE: gemma_path})
    monkeypatch.setenv("LLMSPELL_MODELS", str(tmp_path / "store"))
    result = invoke(["model", "pull", "gemma3-270m@llamacpp"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("pulled gemma3-270m:Q4_K_M (253.1 MB, 253.1 MB downloaded in ")
    # Not a terminal: each phase is a line, then the bar's final state (bytes, speed, ETA).
    label = "gemma3-270m@llamacpp: "
    phases = [line[len(label) :] for line in result.stderr.splitlines() if line.startswith(label)]
    assert phases[0] == "resolving"
    assert phases.index("downloading") < phases.index("verifying")
    assert "253.1 MB of 253.1 MB (100%)" in result.stderr
    assert hub.downloads(CATALOG_FILE)

    again: dict[str, Any] = json_of(invoke(["-o", "json", "model", "pull", "gemma3-270m@llamacpp"]))
    assert again["model"]["id"] == "gemma3-270m:Q4_K_M"
    assert len(hub.downloads(CATALOG_FILE)) == 1  # installed already: nothing downloaded


def test_pull_of_a_file_the_store_has_downloads_nothing(
    hub: HubStandin, gemma_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Hub's sha256 names a blob the store holds (here: an import of the same file), so
    the pull only writes the new name."""
    hub.add_repo(CATALOG_REPO, {CATALOG_FILE: gemma_path})
    store = tmp_path / "store"
    monkeypatch.setenv("LLMSPELL_MODELS", str(store))
    imported = invoke(["model", "import", str(gemma_path), "--name", "mine"])
    assert imported.exit_code == 0, imported.stderr
    result = invoke(["model", "pull", "gemma3-270m@llamacpp"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == (
        "pulled gemma3-270m:Q4_K_M (253.1 MB; the file was in the store: nothing downloaded)\n"
    )
    assert hub.downloads(CATALOG_FILE) == []
    assert len(list((store / "blobs").iterdir())) == 1
    listed = json_of(invoke(["-o", "json", "model", "list", "--backend", "llamacpp"]))
    assert sorted(m["id"] for m in listed["models"]) == ["gemma3-270m:Q4_K_M", "mine"]


def test_pull_of_an_unknown_quant_names_the_ones_that_exist(
    hub: HubStandin, gemma_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.add_repo(CATALOG_REPO, {CATALOG_FILE: gemma_path})
    monkeypatch.setenv("LLMSPELL_MODELS", str(tmp_path / "store"))
    result = invoke(["--output", "json", "model", "pull", f"hf:{CATALOG_REPO}:Q9_X"])
    assert result.exit_code == 1
    error = json_of(result)["error"]
    assert error["ename"] == "DownloadError"
    assert "Q4_K_M" in error["evalue"]
    assert_one_error_line(result.stderr, "Q9_X")


def test_load_ps_unload_on_a_connected_kernel(daemon: dict[str, Any]) -> None:
    connect = ["--connect", daemon["connection_file"]]
    loaded = invoke([*connect, "model", "load", GEMMA])
    assert loaded.exit_code == 0, loaded.stderr
    assert loaded.stdout == f"loaded {GEMMA}\n"
    ps_text = invoke([*connect, "model", "ps"])
    assert GEMMA in ps_text.stdout and "EXPIRES" in ps_text.stdout
    ps = json_of(invoke([*connect, "--output", "json", "model", "ps"]))
    assert [m["id"] for m in ps["models"]] == [GEMMA]
    listed = json_of(invoke([*connect, "--output", "json", "model", "list"]))
    assert listed["models"][0]["loaded"] is True
    unloaded = json_of(invoke([*connect, "--output", "json", "model", "unload", GEMMA]))
    assert unloaded == {"unloaded": GEMMA, "was_loaded": True}
    empty = invoke([*connect, "model", "ps"])
    assert empty.exit_code == 0
    assert "no models loaded" in empty.stderr

    as_json = json_of(invoke([*connect, "--output", "json", "model", "load", GEMMA]))
    assert as_json["model"]["id"] == GEMMA
    assert invoke([*connect, "model", "unload", GEMMA]).stdout == f"unloaded {GEMMA}\n"
    ps = json_of(invoke([*connect, "--output", "json", "model", "ps"]))
    assert ps == {"models": [], "requests": []}


def test_connect_to_a_missing_kernel_fails_clearly() -> None:
    result = invoke(["--connect", "no-such-kernel", "model", "list"])
    assert result.exit_code == 1
    assert_one_error_line(result.stderr, "no-such-kernel")


# Both backends up: the Ollama stand-in (tests/ollama_standin.py) serves real generation too.

standin = ollama_fixtures.standin
gemma_runner = ollama_fixtures.gemma_runner


@pytest.fixture
def with_ollama(
    standin: OllamaStandin, gemma_store: CliSession, monkeypatch: pytest.MonkeyPatch
) -> OllamaStandin:
    monkeypatch.setenv("OLLAMA_HOST", standin.url)
    return standin


def test_list_and_pull_with_both_backends(with_ollama: OllamaStandin) -> None:
    listed = invoke(["model", "list"])
    assert listed.exit_code == 0
    assert "unavailable" not in listed.stderr
    backends = {line.split()[0]: line.split()[2] for line in listed.stdout.splitlines()[2:]}
    assert backends == {
        GEMMA: "llamacpp",
        "gemma3:270m": "ollama",
        "hf.co/unsloth/gemma-3-270m-it-GGUF:Q4_K_M": "ollama",
    }
    pulled = invoke(["model", "pull", "smollm2:135m@ollama"])
    assert pulled.exit_code == 0, pulled.stderr
    assert pulled.stdout.startswith("pulled smollm2:135m")
    assert "smollm2:135m@ollama: downloading" in pulled.stderr
    assert "smollm2:135m@ollama: 270.9 MB of 270.9 MB (100%)" in pulled.stderr
    removed = json_of(invoke(["--output", "json", "model", "remove", "-y", "smollm2:135m"]))
    assert removed == {"removed": "smollm2:135m", "unfinished_download_bytes": None}


def test_prompt_through_ollama_streams(with_ollama: OllamaStandin) -> None:
    result = invoke(["prompt", "-m", "gemma3:270m@ollama", "--max-tokens", "8", "Hello"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.endswith("\n") and result.stdout.strip()
    document = json_of(
        invoke(["-o", "json", "prompt", "-m", "gemma3:270m", "--max-tokens", "8", "Hello"])
    )
    assert document["model"] == "gemma3:270m@ollama"
    assert document["metrics"]["generated_tokens"] <= 8


def test_config_file_is_used_by_the_embedded_kernel(
    gemma_store: CliSession, tmp_path: Path
) -> None:
    config = tmp_path / "llmspell.toml"
    config.write_text("[providers.ollama]\nenabled = false\n")
    status = json_of(invoke(["--config", str(config), "-o", "json", "model", "status"]))
    ollama = status["backends"]["ollama"]
    assert (ollama["available"], ollama["reason"]) == (False, "disabled")
    listed = invoke(["--config", str(config), "model", "list"])
    assert listed.exit_code == 0 and "unavailable" not in listed.stderr

    config.write_text("[providers.ollama]\nenabeld = false\n")
    broken = invoke(["--config", str(config), "model", "list"])
    assert broken.exit_code == 1
    assert_one_error_line(broken.stderr, "enabeld", str(config))
