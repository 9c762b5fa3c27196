"""The llmspell kernelspec: its files, and install/uninstall into temporary Jupyter dirs."""

from __future__ import annotations

import json
import struct
import sys
import zlib
from pathlib import Path

import pytest
from jupyter_client.kernelspec import KernelSpecManager

from llmspell_kernel import kernelspec
from providers import LLMSpellError

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "llmspell_kernel" / "resources" / "kernelspec"
FILES = ("kernel.json", "logo-32x32.png", "logo-64x64.png")


@pytest.fixture
def jupyter_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Point Jupyter's user data dir and search path at empty temporary dirs."""
    dirs = {"data": tmp_path / "jupyter-data", "path": tmp_path / "jupyter-path"}
    for path in dirs.values():
        path.mkdir()
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(dirs["data"]))
    monkeypatch.setenv("JUPYTER_PATH", str(dirs["path"]))
    return dirs


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG, checking the signature and every chunk's CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    offset, size = 8, (0, 0)
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        tag = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
        assert crc == zlib.crc32(tag + body) & 0xFFFFFFFF, tag
        if tag == b"IHDR":
            size = struct.unpack(">II", body[:8])
        offset += 12 + length
    return size


def test_package_data_is_the_repository_kernelspec() -> None:
    for name in FILES:
        assert (SHIPPED / name).read_bytes() == (REPO / "kernelspec" / name).read_bytes(), name
    assert sorted(p.name for p in (REPO / "kernelspec").iterdir()) == sorted(FILES)


def test_logos_are_valid_pngs_of_their_size() -> None:
    assert png_size((SHIPPED / "logo-32x32.png").read_bytes()) == (32, 32)
    assert png_size((SHIPPED / "logo-64x64.png").read_bytes()) == (64, 64)


def test_kernel_json() -> None:
    spec = kernelspec.kernel_json()
    assert spec == {
        "argv": [sys.executable, "-m", "llmspell_kernel", "-f", "{connection_file}"],
        "display_name": "llmspell (local LLMs)",
        "language": "python",
        "interrupt_mode": "message",
        "metadata": {"debugger": False, "supported_encryption": ["curve"]},
    }


def test_the_gateway_form_names_enterprise_gateways_local_process_proxy() -> None:
    spec = kernelspec.kernel_json(gateway="local")
    assert spec["metadata"]["process_proxy"] == {
        "class_name": "enterprise_gateway.services.processproxies.processproxy.LocalProcessProxy"
    }
    assert spec["argv"] == kernelspec.kernel_json()["argv"]
    with pytest.raises(LLMSpellError, match="unknown gateway process proxy 'yarn'"):
        kernelspec.kernel_json(gateway="yarn")


def test_install_into_a_prefix_is_found_by_jupyter(
    tmp_path: Path, jupyter_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = tmp_path / "env"
    installed = kernelspec.install(prefix=prefix)
    assert installed == prefix / "share" / "jupyter" / "kernels" / "llmspell"
    assert sorted(p.name for p in installed.iterdir()) == sorted(FILES)

    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    spec = KernelSpecManager().get_kernel_spec("llmspell")
    assert Path(spec.resource_dir) == installed
    assert spec.argv == [sys.executable, "-m", "llmspell_kernel", "-f", "{connection_file}"]
    assert spec.display_name == "llmspell (local LLMs)"
    assert spec.language == "python"
    assert spec.interrupt_mode == "message"
    assert spec.metadata == {"debugger": False, "supported_encryption": ["curve"]}


def test_user_install_replace_and_uninstall(jupyter_dirs: dict[str, Path]) -> None:
    installed = kernelspec.install()
    assert installed == jupyter_dirs["data"] / "kernels" / "llmspell"
    (installed / "stale.txt").write_text("from an older install")
    assert kernelspec.install() == installed  # replaces what was there
    assert not (installed / "stale.txt").exists()
    assert Path(KernelSpecManager().get_kernel_spec("llmspell").resource_dir) == installed

    assert kernelspec.uninstall() == installed
    assert not installed.exists()
    with pytest.raises(LLMSpellError, match="kernelspec is not installed"):
        kernelspec.uninstall()


def test_sys_prefix_install(
    tmp_path: Path, jupyter_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "venv"))
    installed = kernelspec.install(sys_prefix=True)
    assert installed == tmp_path / "venv" / "share" / "jupyter" / "kernels" / "llmspell"
    assert json.loads((installed / "kernel.json").read_text())["argv"][0] == sys.executable


def test_unwritable_destination_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(LLMSpellError, match="cannot install the llmspell kernelspec into"):
        kernelspec.install(prefix=blocker)
