"""What the HTTP clients of the backends verify TLS with."""

from __future__ import annotations

import functools
import ssl


@functools.cache
def _system_context() -> ssl.SSLContext:
    return ssl.create_default_context()


def verify_for(base_url: str) -> ssl.SSLContext | bool:
    """httpx's ``verify=`` for a client of ``base_url``: the system's CA store, loaded once per
    process and shared, for ``https``; nothing for plain ``http`` (the clients never follow
    redirects). Each httpx client otherwise loads the CA store anew, about 30 ms apiece, and
    every backend has two clients: that was a fifth of an embedded ``llmspell model list``."""
    if base_url.lower().startswith("https:"):
        return _system_context()
    return False
