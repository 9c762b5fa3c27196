#!/usr/bin/env bash
# Create .venv-gateway (once): Jupyter Enterprise Gateway for tests/test_gateway.py. It lives in
# a venv of its own because it pins jupyter_client < 7 and pyzmq < 25; the kernels it starts
# run in .venv, as a gateway's kernels run in their own environments.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv-gateway/bin/jupyter-enterprisegateway ]; then
    rm -rf .venv-gateway
    python3 -m venv .venv-gateway
    .venv-gateway/bin/python -m pip install --quiet --upgrade pip >/dev/null
    log=$(mktemp)
    .venv-gateway/bin/python -m pip install --quiet "jupyter_enterprise_gateway==3.3.*" \
        >"$log" 2>&1 || { cat "$log" >&2; rm -f "$log"; exit 1; }
    rm -f "$log"
fi
