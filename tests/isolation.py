"""What keeps a test, a benchmark or an example run away from the user's files and servers."""

from __future__ import annotations

import socket
from pathlib import Path


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def private_dirs(root: Path) -> dict[str, str]:
    """Variables that put the config, data, cache and runtime directories of llmspell, Jupyter
    and huggingface_hub inside ``root`` (created here), with Hub telemetry off."""
    for sub in ("config", "data", "cache", "runtime"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return {
        "XDG_CONFIG_HOME": str(root / "config"),
        "XDG_DATA_HOME": str(root / "data"),
        "XDG_CACHE_HOME": str(root / "cache"),
        "JUPYTER_RUNTIME_DIR": str(root / "runtime"),
        "HF_HOME": str(root / "cache" / "huggingface"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
