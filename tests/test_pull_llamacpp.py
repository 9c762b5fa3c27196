"""End to end: ``LlamaCppBackend.pull`` through providers.llamacpp.hub from the Hub stand-in.

The stand-in serves the real Gemma 3 270M GGUF (streamed from disk), so what is pulled is a
real, loadable model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from providers.config import Config
from providers.errors import ChecksumMismatch, DownloadError, ModelNotFound
from providers.llamacpp import LlamaCppBackend
from providers.spec import ModelSpec
from providers.types import GenerationOptions, Progress
from tests import hub_fixtures
from tests.hub_standin import HubStandin, file_sha256

hub = hub_fixtures.hub

CATALOG_REPO = "unsloth/gemma-3-270m-it-GGUF"
CATALOG_FILE = "gemma-3-270m-it-Q4_K_M.gguf"
GGML_REPO = "ggml-org/gemma-3-270m-it-GGUF"


@pytest.fixture
def gemma_hub(hub: HubStandin, gemma_path: Path) -> HubStandin:
    """The stand-in serving the real Gemma GGUF in the catalog's repo and in ggml-org's."""
    hub.add_repo(CATALOG_REPO, {CATALOG_FILE: gemma_path, "gemma-3-270m-it-Q8_0.gguf": b"q8"})
    hub.add_repo(GGML_REPO, {"gemma-3-270m-it-Q4_K_M.gguf": gemma_path})
    return hub


@pytest.fixture
def backend() -> Iterator[LlamaCppBackend]:
    instance = LlamaCppBackend(Config())
    try:
        yield instance
    finally:
        instance.close()


def pull(backend: LlamaCppBackend, spec: str, *, force: bool = False) -> tuple[int, list[Progress]]:
    events: list[Progress] = []
    result = backend.pull(ModelSpec.parse(spec), events.append, force=force)
    return result.bytes, events


def assert_growing_download(events: list[Progress], total: int) -> None:
    phases = [e.phase for e in events]
    assert phases[0] == "resolving" and phases[-1] == "done"
    assert phases.index("downloading") < phases.index("verifying")
    done = [e.completed for e in events if e.phase == "downloading"]
    assert len(done) > 10  # reported as bytes arrive, not only at the end
    assert all(isinstance(d, int) for d in done)
    assert done == sorted(done)  # type: ignore[type-var]
    assert done[-1] == total
    assert {e.total for e in events if e.phase == "downloading"} == {total}


def test_pull_catalog_name_gives_a_real_loadable_model(
    gemma_hub: HubStandin, backend: LlamaCppBackend, gemma_path: Path
) -> None:
    size = gemma_path.stat().st_size

    pulled, events = pull(backend, "gemma3-270m@llamacpp")

    assert pulled == size
    assert_growing_download(events, size)
    assert {e.model for e in events} == {"gemma3-270m:Q4_K_M"}
    rows = backend.list_models()
    assert [(m.id, m.size_bytes) for m in rows] == [("gemma3-270m:Q4_K_M", size)]
    info = backend.info(ModelSpec.parse("gemma3-270m"))
    assert info.architecture == "gemma3"
    assert [r.path for r in gemma_hub.downloads()] == [
        f"/{CATALOG_REPO}/resolve/{gemma_hub.repos[CATALOG_REPO].commit}/{CATALOG_FILE}"
    ]


@pytest.mark.model
def test_pulled_model_generates(gemma_hub: HubStandin, backend: LlamaCppBackend) -> None:
    pull(backend, "hf:ggml-org/gemma-3-270m-it-GGUF:q4_k_m")
    spec = ModelSpec.parse("hf:ggml-org/gemma-3-270m-it-GGUF:Q4_K_M")

    chunks = list(
        backend.complete(spec, "The capital of France is", GenerationOptions(max_tokens=8))
    )

    assert chunks[-1].done and chunks[-1].metrics is not None
    assert chunks[-1].metrics.generated_tokens > 0
    assert "".join(c.text for c in chunks).strip()


def test_pull_hf_spec(gemma_hub: HubStandin, backend: LlamaCppBackend, gemma_path: Path) -> None:
    pulled, events = pull(backend, "hf:ggml-org/gemma-3-270m-it-GGUF:Q4_K_M")

    assert pulled == gemma_path.stat().st_size
    assert_growing_download(events, pulled)
    ids = [m.id for m in backend.list_models()]
    assert ids == ["hf:ggml-org/gemma-3-270m-it-GGUF:Q4_K_M"]
    assert backend.has_model(ModelSpec.parse("hf:ggml-org/gemma-3-270m-it-GGUF:Q4_K_M"))


def test_dropped_connection_then_repull_resumes(
    gemma_hub: HubStandin, backend: LlamaCppBackend, gemma_path: Path
) -> None:
    cut = 100_000_000
    gemma_hub.faults.drop_at = cut

    with pytest.raises(DownloadError, match="resume"):
        backend.pull(ModelSpec.parse("gemma3-270m"))
    assert backend.list_models() == []
    assert not backend.has_model(ModelSpec.parse("gemma3-270m"))

    gemma_hub.faults.reset()
    events: list[Progress] = []
    result = backend.pull(ModelSpec.parse("gemma3-270m"), events.append)

    assert result.resumed_bytes == cut
    assert result.bytes == gemma_path.stat().st_size - cut  # only the rest was downloaded
    last = gemma_hub.downloads(CATALOG_FILE)[-1]
    assert (last.range, last.status) == (f"bytes={cut}-", 206)
    downloading = [e.completed for e in events if e.phase == "downloading" and e.completed]
    assert downloading[0] >= cut  # progress resumes from the kept bytes
    [model] = backend.list_models()
    assert model.id == "gemma3-270m:Q4_K_M"
    assert file_sha256(Path(model.details["path"])) == file_sha256(gemma_path)


def test_corrupted_download_never_shows_up(
    gemma_hub: HubStandin, backend: LlamaCppBackend, isolated_env: Path
) -> None:
    gemma_hub.faults.corrupt = True

    with pytest.raises(ChecksumMismatch):
        backend.pull(ModelSpec.parse("hf:ggml-org/gemma-3-270m-it-GGUF"))

    assert backend.list_models() == []
    leftovers = [p for p in Path(isolated_env).rglob("*") if p.suffix in (".gguf", ".partial")]
    assert leftovers == []


def test_force_downloads_again(gemma_hub: HubStandin, backend: LlamaCppBackend) -> None:
    first, _ = pull(backend, "gemma3-270m")
    again, events = pull(backend, "gemma3-270m")
    assert again == 0 and [e.phase for e in events] == ["done"]
    assert len(gemma_hub.downloads(CATALOG_FILE)) == 1

    forced, _ = pull(backend, "gemma3-270m", force=True)

    assert forced == first
    assert [(r.range, r.status) for r in gemma_hub.downloads(CATALOG_FILE)] == [
        (None, 200),
        (None, 200),
    ]
    assert [m.id for m in backend.list_models()] == ["gemma3-270m:Q4_K_M"]


def test_unknown_quant_lists_what_exists(gemma_hub: HubStandin, backend: LlamaCppBackend) -> None:
    with pytest.raises(DownloadError, match="available: Q4_K_M, Q8_0"):
        backend.pull(ModelSpec.parse("gemma3-270m:Q5_K_M"))
    assert backend.list_models() == []


def test_unknown_repo_and_offline(
    gemma_hub: HubStandin, backend: LlamaCppBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ModelNotFound, match="nobody/none-GGUF"):
        backend.pull(ModelSpec.parse("hf:nobody/none-GGUF"))

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError, match="offline"):
        backend.pull(ModelSpec.parse("gemma3-270m"))


def test_served_gguf_is_the_real_file(gemma_hub: HubStandin, gemma_path: Path) -> None:
    # Guards the stand-in itself: what it announces is the real file's hash.
    entry = gemma_hub.repos[CATALOG_REPO].files[CATALOG_FILE]
    digest = hashlib.sha256()
    with open(gemma_path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    assert entry.sha256 == digest.hexdigest()
