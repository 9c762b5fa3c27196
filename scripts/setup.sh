#!/usr/bin/env bash
# Create .venv (once) and install llmspell into it with the given extras (default: test).
# llama-cpp-python builds from source the first time (about 8 minutes on 2 cores); pip caches
# the wheel, so later set-ups take seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-test}"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv 2>/dev/null || {
        python3 -m pip install --user --quiet virtualenv && python3 -m virtualenv .venv
    }
fi
.venv/bin/python -m pip install --quiet --upgrade pip >/dev/null
.venv/bin/python -m pip install --quiet -e ".[${extras}]"
if [ "${extras}" = test ]; then
    bash scripts/gateway_venv.sh  # Jupyter Enterprise Gateway, for tests/test_gateway.py
fi
