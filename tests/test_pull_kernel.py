"""A pull through the kernel protocol: ``model_request pull`` from the Hub stand-in, with
``model_progress`` on IOPub as the bytes arrive, and errors as precise error replies."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmspell_kernel.client import LLMSpellClient
from providers.errors import ChecksumMismatch, DownloadError
from tests import hub_fixtures
from tests.hub_standin import HubStandin

hub = hub_fixtures.hub

REPO = "unsloth/gemma-3-270m-it-GGUF"
FILENAME = "gemma-3-270m-it-Q4_K_M.gguf"


@pytest.fixture
def client(hub: HubStandin, gemma_path: Path) -> Iterator[LLMSpellClient]:
    hub.add_repo(REPO, {FILENAME: gemma_path})
    with LLMSpellClient.embedded() as embedded:
        yield embedded


def test_pull_over_the_protocol_streams_progress(
    hub: HubStandin, client: LLMSpellClient, gemma_path: Path
) -> None:
    size = gemma_path.stat().st_size
    events: list[dict[str, Any]] = []

    reply = client.model_request(
        "pull", model="gemma3-270m@llamacpp", on_progress=events.append, timeout=120
    )

    assert reply["model"]["id"] == "gemma3-270m:Q4_K_M"
    assert reply["bytes"] == size
    downloading = [e["completed"] for e in events if e["phase"] == "downloading"]
    assert len(downloading) >= 3 and downloading == sorted(downloading)  # the kernel may throttle
    assert downloading[-1] == size
    assert events[-1]["phase"] == "done"
    listed = client.model_request("list", backend="llamacpp")["models"]
    assert [m["id"] for m in listed] == ["gemma3-270m:Q4_K_M"]


def test_failed_pulls_are_error_replies_and_list_stays_empty(
    hub: HubStandin, client: LLMSpellClient
) -> None:
    hub.faults.corrupt = True
    with pytest.raises(ChecksumMismatch):
        client.model_request("pull", model="gemma3-270m@llamacpp", timeout=120)

    hub.faults.reset()
    with pytest.raises(DownloadError, match="available: Q4_K_M"):
        client.model_request("pull", model="gemma3-270m:Q8_0@llamacpp", timeout=60)

    assert client.model_request("list", backend="llamacpp")["models"] == []
