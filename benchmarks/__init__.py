"""Reproducible benchmarks: llmspell measured side by side with the engines it drives.

Run one with ``.venv/bin/python -m benchmarks.bench_generation`` (from the repository root), or
all of them with ``.venv/bin/python -m benchmarks.run_all``. See benchmarks/README.md.
"""
