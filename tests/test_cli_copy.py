"""`llmspell model cp SRC NEW` (issue 21, item 5): a second name for an installed model, the
same blob in the store, through the kernel's `copy` command (protocol 1.1)."""

from __future__ import annotations

import pytest

from tests import cli_fixtures
from tests.cli_fixtures import GEMMA, CliSession, invoke, json_of

cli_session = cli_fixtures.cli_session
gemma_store = cli_fixtures.gemma_store

pytestmark = pytest.mark.model


def test_cp_gives_a_second_name_without_a_copy(gemma_store: CliSession) -> None:
    blobs = gemma_store.models / "blobs"
    assert len(list(blobs.iterdir())) == 1  # the import stored the file once, as a blob
    copied = invoke(["model", "cp", GEMMA, "gemma-alias:q4"])
    assert copied.exit_code == 0, copied.stderr
    assert copied.stdout == f"copied {GEMMA} to gemma-alias:q4 (the same file: no bytes copied)\n"
    try:
        listing = json_of(invoke(["--output", "json", "model", "list", "--backend", "llamacpp"]))
        rows = {m["id"]: m for m in listing["models"]}
        assert {GEMMA, "gemma-alias:q4"} <= set(rows)
        assert rows[GEMMA]["size_bytes"] == rows["gemma-alias:q4"]["size_bytes"]
        assert len(list(blobs.iterdir())) == 1
        info = json_of(invoke(["--output", "json", "model", "info", "gemma-alias:q4"]))
        assert info["model"]["details"]["path"] == str(next(blobs.iterdir()))
        again = invoke(["--output", "json", "model", "cp", GEMMA, "gemma-alias:q4"])
        assert json_of(again)["model"]["id"] == "gemma-alias:q4"  # nothing to do
        missing = invoke(["model", "cp", "no-such-model@llamacpp", "x"])
        assert missing.exit_code == 1
        assert missing.stderr.startswith("error: model 'no-such-model' is not installed")
    finally:
        removed = invoke(["model", "remove", "gemma-alias:q4", "-y"])
    assert removed.exit_code == 0, removed.stderr
    assert len(list(blobs.iterdir())) == 1  # the other name still uses the blob
    assert invoke(["model", "info", GEMMA]).exit_code == 0
