"""jupyter_kernel_test's conformance suite against the installed ``llmspell`` kernelspec.

The kernel must behave as a standard Jupyter Python kernel for every message the suite checks
(kernel_info, execute, stdout/stderr, completion, is_complete, pager, errors, execute_result,
display_data, history, inspect, clear_output).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import jupyter_kernel_test

from llmspell_kernel.kernelspec import KERNEL_NAME, install

_ENV_VARS = (
    "JUPYTER_PATH",
    "JUPYTER_RUNTIME_DIR",
    "IPYTHONDIR",
    "LLMSPELL_MODELS",
    "LLMSPELL_CONFIG",
    "OLLAMA_HOST",
)


class LLMSpellKernelTests(jupyter_kernel_test.KernelTests):
    kernel_name = KERNEL_NAME
    language_name = "python"
    file_extension = ".py"

    code_hello_world = "print('hello, world')"
    code_stderr = "import sys; print('test', file=sys.stderr)"
    completion_samples: ClassVar[list[dict[str, Any]]] = [
        {"text": "zi", "matches": {"zip"}},
        {"text": "LocalL", "matches": {"LocalLLM"}},
    ]
    complete_code_samples: ClassVar[list[str]] = [
        "1",
        "print('hello, world')",
        "def f(x):\n  return x*2\n\n\n",
    ]
    incomplete_code_samples: ClassVar[list[str]] = ["print('''hello", "def f(x):\n  x*2"]
    invalid_code_samples: ClassVar[list[str]] = ["import = 7q"]
    code_page_something = "zip?"
    code_generate_error = "raise ValueError('boom')"
    code_execute_result: ClassVar[list[dict[str, str]]] = [
        {"code": "1+2+3", "result": "6"},
        {"code": "[n*n for n in range(4)]", "result": "[0, 1, 4, 9]"},
    ]
    code_display_data: ClassVar[list[dict[str, str]]] = [
        {
            "code": "from IPython.display import HTML, display; display(HTML('<b>x</b>'))",
            "mime": "text/html",
        },
        {
            "code": "from IPython.display import Math, display; display(Math('x^2'))",
            "mime": "text/latex",
        },
    ]
    code_history_pattern = "1?2*"
    # Not "range": IPython answers a range over the current session with session number 0
    # instead of the number ``tail`` gave, which the suite rejects (as for the stock kernel).
    supported_history_operations = ("tail", "search")
    code_inspect_sample = "zip"
    code_clear_output = "from IPython.display import clear_output; clear_output()"

    _saved_env: ClassVar[dict[str, str | None]] = {}
    _base: ClassVar[Path]

    @classmethod
    def setUpClass(cls) -> None:
        cls._base = Path(tempfile.mkdtemp(prefix="llmspell-jkt-"))
        cls._saved_env = {name: os.environ.get(name) for name in _ENV_VARS}
        install(prefix=cls._base / "prefix")
        for sub in ("runtime", "ipython", "models"):
            (cls._base / sub).mkdir()
        os.environ.pop("LLMSPELL_CONFIG", None)
        os.environ.update(
            JUPYTER_PATH=str(cls._base / "prefix" / "share" / "jupyter"),
            JUPYTER_RUNTIME_DIR=str(cls._base / "runtime"),
            IPYTHONDIR=str(cls._base / "ipython"),
            LLMSPELL_MODELS=str(cls._base / "models"),
            OLLAMA_HOST="http://127.0.0.1:9",
        )
        try:
            super().setUpClass()
        except BaseException:
            cls._restore()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        try:
            super().tearDownClass()
        finally:
            cls._restore()

    @classmethod
    def _restore(cls) -> None:
        for name, value in cls._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(cls._base, ignore_errors=True)
