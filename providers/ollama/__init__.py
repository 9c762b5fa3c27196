"""The Ollama backend: every model operation and streamed generation over Ollama's REST API.

Only httpx is used to talk to Ollama (no Ollama client library). All httpx errors and Ollama
error replies are translated in :mod:`providers.ollama.client`.
"""

from .backend import OllamaBackend

__all__ = ["OllamaBackend"]
