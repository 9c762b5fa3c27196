"""The openai backend: any OpenAI-compatible server (vLLM, llama-server, SGLang, TGI, LM
Studio...) over its HTTP API, named by a ``[providers.NAME]`` table with ``type = "openai"``.

Only httpx (and httpx-sse for the event streams) is used; no OpenAI SDK. All httpx errors and
the server's error replies are translated in :mod:`providers.openai.client`.
"""

from .backend import OpenAIBackend

__all__ = ["OpenAIBackend"]
