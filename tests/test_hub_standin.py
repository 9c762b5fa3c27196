"""The Hub stand-in speaks what huggingface_hub itself expects (checked with its own client)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_download, hf_hub_url
from huggingface_hub.errors import (
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from tests import hub_fixtures
from tests.hub_fixtures import SMALL_REPO, SMALL_SIZE, fake_gguf
from tests.hub_standin import HubStandin

hub = hub_fixtures.hub
FILENAME = "tiny-test-Q8_0.gguf"


def test_hf_hub_download_fetches_a_file(hub: HubStandin, tmp_path: Path) -> None:
    path = hf_hub_download(SMALL_REPO, FILENAME, cache_dir=tmp_path, endpoint=hub.url)
    assert Path(path).read_bytes() == fake_gguf("Q8_0")
    assert hub.repos[SMALL_REPO].commit in path


def test_hf_hub_download_recovers_from_a_dropped_connection(
    hub: HubStandin, tmp_path: Path
) -> None:
    hub.faults.drop_at, hub.faults.drop_times = 70_000, 1
    path = hf_hub_download(SMALL_REPO, FILENAME, cache_dir=tmp_path, endpoint=hub.url)
    assert Path(path).read_bytes() == fake_gguf("Q8_0")
    # It retries within the call; it buffers 10 MB chunks, so it starts over rather than resume.
    assert [r.status for r in hub.downloads(FILENAME)] == [200, 200]


def test_file_metadata_headers(hub: HubStandin) -> None:
    url = hf_hub_url(SMALL_REPO, FILENAME, endpoint=hub.url)
    metadata = get_hf_file_metadata(url, endpoint=hub.url)
    assert metadata.commit_hash == hub.repos[SMALL_REPO].commit
    assert metadata.size == SMALL_SIZE
    assert metadata.etag == hub.repos[SMALL_REPO].files[FILENAME].sha256


def test_model_info_and_tree_listing(hub: HubStandin) -> None:
    api = HfApi(endpoint=hub.url)
    info = api.model_info(SMALL_REPO, files_metadata=True)
    assert info.sha == hub.repos[SMALL_REPO].commit
    sizes = {s.rfilename: s.lfs.size for s in info.siblings or [] if s.lfs is not None}
    assert sizes[FILENAME] == SMALL_SIZE
    tree = {entry.path for entry in api.list_repo_tree(SMALL_REPO)}
    assert FILENAME in tree
    split = {e.path for e in api.list_repo_tree("example-org/Split-Test-GGUF")}
    assert split == {"split-test-Q4_K_M.gguf", "Q8_0"}  # a folder when not recursive
    deep = {e.path for e in api.list_repo_tree("example-org/Split-Test-GGUF", recursive=True)}
    assert "Q8_0/split-test-Q8_0-00001-of-00002.gguf" in deep


def test_error_codes_map_to_huggingface_hub_errors(hub: HubStandin, tmp_path: Path) -> None:
    api = HfApi(endpoint=hub.url)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("nobody/nothing")
    with pytest.raises(RevisionNotFoundError):
        api.model_info(SMALL_REPO, revision="v0")
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(SMALL_REPO, "missing.gguf", cache_dir=tmp_path, endpoint=hub.url)


def test_range_requests(hub: HubStandin) -> None:
    url = hf_hub_url(SMALL_REPO, FILENAME, endpoint=hub.url)
    content = fake_gguf("Q8_0")
    with httpx.Client() as client:
        part = client.get(url, headers={"Range": "bytes=100-199"})
        assert part.status_code == 206
        assert part.headers["Content-Range"] == f"bytes 100-199/{SMALL_SIZE}"
        assert part.content == content[100:200]
        beyond = client.get(url, headers={"Range": f"bytes={SMALL_SIZE}-"})
        assert beyond.status_code == 416


def test_stopped_standin_is_unreachable(hub: HubStandin) -> None:
    url = hub.url
    with httpx.Client() as client:
        assert client.get(f"{url}/api/models/{SMALL_REPO}").status_code == 200
        hub.stop()
        with pytest.raises(httpx.TransportError):
            client.get(f"{url}/api/models/{SMALL_REPO}", timeout=5)
