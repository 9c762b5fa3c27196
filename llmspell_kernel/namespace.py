"""What notebook and script users find in the llmspell kernel: ``LocalLLM``, ``Agent``, ``%llm``.

Everything here runs inside the kernel process and calls the kernel's ProviderManager directly.
"""

from __future__ import annotations

from typing import Any

from providers import LLMSpellError, ProviderManager

from .agent import Agent, bind_agent
from .local_llm import LocalLLM
from .magics import LLMMagic, protect_llm_lines, show_llmspell_error

__all__ = ["Agent", "LocalLLM", "install_namespace"]


def install_namespace(shell: Any, manager: ProviderManager) -> None:
    """Put ``LocalLLM`` and ``Agent`` in ``shell.user_ns``, register ``%llm``/``%%llm``, and
    show llmspell errors raised in cells as one line (``ModelNotFound: ...``).

    ``shell`` is an IPython ``InteractiveShell`` (the kernel's ``ZMQInteractiveShell``).
    """
    llm = LocalLLM(manager)
    shell.user_ns["LocalLLM"] = llm
    shell.user_ns["Agent"] = bind_agent(llm)
    shell.register_magic_function(LLMMagic(llm).__call__, magic_kind="line_cell", magic_name="llm")
    if protect_llm_lines not in shell.input_transformers_cleanup:
        shell.input_transformers_cleanup.append(protect_llm_lines)
    shell.set_custom_exc((LLMSpellError,), show_llmspell_error)
