"""Rough edges of the CLI (issue 21, item 7), each as a new user met it: a stray space on stdout
after `remove`'s question, `<bool>` after flags in the help, `unload` saying "unloaded" for a
model that was not loaded, Python list reprs in `model info`, two `expires_at` formats, `chat
--output json` naming the model unresolved, and a re-pull printing "done" before "100%"."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from providers.ollama.convert import utc_iso
from tests import cli_fixtures, hub_fixtures, ollama_fixtures
from tests.cli_fixtures import GEMMA, GEMMA_SPEC, CliSession, invoke, json_of
from tests.hub_standin import HubStandin
from tests.ollama_standin import OllamaStandin
from tests.test_llamacpp_units import Loader, take

hub = hub_fixtures.hub
cli_session = cli_fixtures.cli_session
gemma_store = cli_fixtures.gemma_store
standin = ollama_fixtures.standin
gemma_runner = ollama_fixtures.gemma_runner

UTC_SECONDS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
"""The one format of every timestamp llmspell reports: ISO 8601 UTC, whole seconds, ``Z``."""


@pytest.fixture
def with_ollama(
    standin: OllamaStandin, gemma_store: CliSession, monkeypatch: pytest.MonkeyPatch
) -> OllamaStandin:
    monkeypatch.setenv("OLLAMA_HOST", standin.url)
    return standin


@pytest.mark.model
def test_remove_asks_on_stderr_and_leaves_stdout_clean(
    gemma_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMSPELL_MODELS", str(tmp_path / "store"))
    for name in ("g1", "g2"):
        imported = invoke(["model", "import", str(gemma_path), "--name", name, "--link"])
        assert imported.exit_code == 0, imported.stderr
    removed = invoke(["model", "remove", "g1"], input="y\n")
    assert removed.exit_code == 0, removed.stderr
    assert removed.stdout == "removed g1\n"  # was " removed g1": the prompt's space
    assert removed.stderr == "Remove model g1? [y/N]: "
    as_json = invoke(["-o", "json", "model", "remove", "g2"], input="yes\n")
    assert as_json.exit_code == 0, as_json.stderr
    assert as_json.stdout.startswith("{")
    assert json_of(as_json)["removed"] == "g2"


def test_remove_without_an_answer_is_a_no() -> None:
    for answer in (None, "\n", "n\n", "maybe\n"):
        refused = invoke(["model", "remove", "anything"], input=answer)
        assert refused.exit_code == 1
        assert refused.stdout == ""
        assert "anything not removed" in refused.stderr


def test_help_shows_no_bool_placeholder_after_flags() -> None:
    for command in (["model", "pull"], ["model", "remove"], ["model", "import"], ["prompt"]):
        shown = invoke([*command, "--help"])
        assert shown.exit_code == 0
        assert "<bool>" not in shown.stdout, command
    pull = invoke(["model", "pull", "--help"]).stdout
    assert "<str>" in pull  # options that take a value keep their placeholder
    assert "--force" in pull


@pytest.mark.model
def test_unload_of_a_model_that_is_not_loaded_says_so(with_ollama: OllamaStandin) -> None:
    idle = invoke(["model", "unload", GEMMA])
    assert idle.exit_code == 0, idle.stderr
    assert idle.stdout == f"{GEMMA} was not loaded (nothing to free)\n"
    as_json = json_of(invoke(["-o", "json", "model", "unload", "gemma3:270m@ollama"]))
    assert as_json == {"unloaded": "gemma3:270m", "was_loaded": False}


@pytest.mark.model
def test_model_info_joins_lists(with_ollama: OllamaStandin) -> None:
    shown = invoke(["model", "info", "gemma3:270m@ollama"])
    assert shown.exit_code == 0, shown.stderr
    assert "['" not in shown.stdout
    assert re.search(r"^capabilities\s+completion\s*$", shown.stdout, re.MULTILINE), shown.stdout


def test_expires_at_has_one_format_on_both_backends() -> None:
    ollama = utc_iso("2026-12-01T21:59:08.123456789-08:00")
    assert ollama == "2026-12-02T05:59:08Z"
    from providers.llamacpp.cache import ModelCache

    cache = ModelCache(max_loaded=1, keep_alive=300)
    try:
        take(cache, Loader(), "m")
        llamacpp = cache.snapshot()[0].expires_at
    finally:
        cache.close()
    assert llamacpp is not None
    assert UTC_SECONDS.fullmatch(ollama) and UTC_SECONDS.fullmatch(llamacpp), (ollama, llamacpp)


@pytest.mark.model
def test_chat_json_names_the_resolved_model_like_prompt(gemma_store: CliSession) -> None:
    args = ["--max-tokens", "4", "--temperature", "0"]
    chatted = invoke(["-o", "json", "chat", "-m", GEMMA, *args], input="Hi\n")
    assert chatted.exit_code == 0, chatted.stderr
    prompted = invoke(["-o", "json", "prompt", "-m", GEMMA, *args, "Hi"])
    assert prompted.exit_code == 0, prompted.stderr
    assert json_of(chatted)["model"] == json_of(prompted)["model"] == GEMMA_SPEC


def test_a_repull_says_done_without_a_download_line(
    hub: HubStandin, gemma_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.add_repo("unsloth/gemma-3-270m-it-GGUF", {"gemma-3-270m-it-Q4_K_M.gguf": gemma_path})
    monkeypatch.setenv("LLMSPELL_MODELS", str(tmp_path / "store"))
    spec = "gemma3-270m@llamacpp"
    first = invoke(["model", "pull", spec])
    assert first.exit_code == 0, first.stderr
    lines = first.stderr.splitlines()
    assert lines.index(f"{spec}: 253.1 MB of 253.1 MB (100%)") < lines.index(f"{spec}: done")
    again = invoke(["model", "pull", spec])
    assert again.exit_code == 0, again.stderr
    assert again.stderr.splitlines() == [f"{spec}: done"]  # was "done", then "100%"
