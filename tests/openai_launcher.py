"""``python -m tests.openai_launcher ARGS``: llama-cpp-python's OpenAI-compatible server
(``python -m llama_cpp.server ARGS``) with llmspell's llama.cpp set-up applied first.

As shipped, the server dies with an illegal instruction on the first decode on CPUs with AMX
(see :mod:`providers.llamacpp.native`); :func:`prepare_llama_cpp` builds models without the
extra buffer types that take that path, and routes llama.cpp's log to Python logging.
"""

from __future__ import annotations

import sys


def main() -> None:
    from providers.llamacpp.native import prepare_llama_cpp

    prepare_llama_cpp()
    from llama_cpp.server.__main__ import main as serve

    sys.argv[0] = "llama_cpp.server"
    serve()


if __name__ == "__main__":
    main()
