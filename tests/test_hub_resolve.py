"""providers.llamacpp.hub.resolve against the Hub stand-in: picking the GGUF file for a quant."""

from __future__ import annotations

import hashlib

import pytest

from providers.errors import DownloadError, ModelNotFound
from providers.llamacpp.hub import quant_label, resolve
from tests import hub_fixtures
from tests.hub_fixtures import SMALL_REPO, fake_gguf
from tests.hub_standin import HubStandin

hub = hub_fixtures.hub
dead_endpoint = hub_fixtures.dead_endpoint


def test_resolve_picks_the_file_of_the_quant(hub: HubStandin) -> None:
    file = resolve(SMALL_REPO, "Q4_K_M")

    assert file.repo == SMALL_REPO
    assert file.filename == "tiny-test-Q4_K_M.gguf"
    assert file.size == len(fake_gguf("Q4_K_M"))
    assert file.sha256 == hashlib.sha256(fake_gguf("Q4_K_M")).hexdigest()
    assert file.revision == hub.repos[SMALL_REPO].commit
    assert file.quant == "Q4_K_M"


def test_resolve_matches_the_quant_case_insensitively(hub: HubStandin) -> None:
    assert resolve(SMALL_REPO, "q8_0").filename == "tiny-test-Q8_0.gguf"
    assert resolve(SMALL_REPO, " iq4_xs ").filename == "tiny-test-IQ4_XS.gguf"


def test_resolve_skips_vision_projectors(hub: HubStandin) -> None:
    # mmproj-tiny-test-F16.gguf also holds "F16" but is not a language model.
    assert resolve(SMALL_REPO, "f16").filename == "tiny-test-F16.gguf"


def test_unknown_quant_lists_the_quants_that_exist(hub: HubStandin) -> None:
    with pytest.raises(DownloadError) as caught:
        resolve(SMALL_REPO, "Q5_K_M")
    message = str(caught.value)
    assert SMALL_REPO in message and "'Q5_K_M'" in message
    assert "available: F16, IQ4_XS, Q4_K_M, Q4_K_S, Q8_0" in message


def test_ambiguous_quant_names_the_candidates(hub: HubStandin) -> None:
    with pytest.raises(DownloadError, match="matches several files") as caught:
        resolve(SMALL_REPO, "Q4_K")
    assert "Q4_K_M" in str(caught.value) and "Q4_K_S" in str(caught.value)


def test_quant_is_matched_as_a_whole_word_first(hub: HubStandin) -> None:
    names = [
        "Llama-3.2-1B-Instruct-Q4_0.gguf",
        "Llama-3.2-1B-Instruct-Q4_0_4_4.gguf",
        "Llama-3.2-1B-Instruct-Q4_K_M.gguf",
        "Llama-3.2-1B-Instruct-Q4_K_L.gguf",
        "Llama-3.2-1B-Instruct-f16.gguf",
        "Llama-3.2-1B-Instruct-bf16.gguf",
    ]
    hub.add_repo("bartowski/Llama-3.2-1B-Instruct-GGUF", {n: n.encode() for n in names})
    repo = "bartowski/Llama-3.2-1B-Instruct-GGUF"

    assert resolve(repo, "Q4_0").filename == "Llama-3.2-1B-Instruct-Q4_0.gguf"
    assert resolve(repo, "F16").filename == "Llama-3.2-1B-Instruct-f16.gguf"
    assert resolve(repo, "q4_k_l").quant == "Q4_K_L"


def test_phi3_style_names(hub: HubStandin) -> None:
    repo = "microsoft/Phi-3-mini-4k-instruct-gguf"
    hub.add_repo(
        repo, {"Phi-3-mini-4k-instruct-q4.gguf": b"q4", "Phi-3-mini-4k-instruct-fp16.gguf": b"f"}
    )
    file = resolve(repo, "Q4")
    assert file.filename == "Phi-3-mini-4k-instruct-q4.gguf"
    assert file.quant == "Q4"


def test_split_gguf_is_refused_with_a_clear_message(hub: HubStandin) -> None:
    with pytest.raises(DownloadError, match="split into 2 files") as caught:
        resolve("example-org/Split-Test-GGUF", "Q8_0")
    assert "Q4_K_M" in str(caught.value)  # the single-file alternative
    assert resolve("example-org/Split-Test-GGUF", "Q4_K_M").filename == "split-test-Q4_K_M.gguf"


def test_unknown_repo_is_model_not_found(hub: HubStandin) -> None:
    with pytest.raises(ModelNotFound, match="no-such-org/Nothing-GGUF"):
        resolve("no-such-org/Nothing-GGUF", "Q4_K_M")


def test_unknown_revision_is_model_not_found(hub: HubStandin) -> None:
    with pytest.raises(ModelNotFound, match="revision v9"):
        resolve(SMALL_REPO, "Q4_K_M", revision="v9")


def test_repo_without_gguf_files(hub: HubStandin) -> None:
    hub.add_repo("example-org/safetensors-only", {"model.safetensors": b"x", "README.md": b"y"})
    with pytest.raises(DownloadError, match="no GGUF model files"):
        resolve("example-org/safetensors-only", "Q4_K_M")


def test_unreachable_hub_is_an_offline_error(dead_endpoint: str) -> None:
    with pytest.raises(DownloadError) as caught:
        resolve(SMALL_REPO, "Q4_K_M")
    assert f"cannot reach the Hugging Face Hub at {dead_endpoint} (offline?)" in str(caught.value)


def test_hf_hub_offline_is_refused_without_a_request(
    hub: HubStandin, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError, match="offline mode is on \\(HF_HUB_OFFLINE=1\\)"):
        resolve(SMALL_REPO, "Q4_K_M")
    assert hub.requests == []


@pytest.mark.parametrize(
    ("filename", "label"),
    [
        ("tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf", "Q4_K_M"),
        ("qwen2.5-0.5b-instruct-q8_0.gguf", "Q8_0"),
        ("gemma-3-270m-it-UD-Q4_K_XL.gguf", "UD-Q4_K_XL"),
        ("Llama-3.2-1B-Instruct-IQ4_XS.gguf", "IQ4_XS"),
        ("Phi-3-mini-4k-instruct-fp16.gguf", "FP16"),
        ("Q8_0/big-model-Q8_0-00001-of-00003.gguf", "Q8_0"),
        ("model.gguf", None),
    ],
)
def test_quant_label(filename: str, label: str | None) -> None:
    assert quant_label(filename) == label
