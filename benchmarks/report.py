"""Print the recorded results (``benchmarks/results/*.json``) as Markdown: the machine, then
one table of all targets. docs/benchmarks.md embeds this output.

``.venv/bin/python -m benchmarks.report [--results DIR] [--write docs/benchmarks.md]``
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .common import RESULTS_DIR, verdict
from .run_all import SCRIPTS


def markdown(documents: list[dict[str, Any]]) -> str:
    if not documents:
        return "No results recorded yet.\n"
    machine = documents[0]["machine"]
    lines = [
        f"Machine: {machine['cpu']}, {machine['logical_cores']} logical / "
        f"{machine['physical_cores']} physical cores, {machine['ram_gb']} GB RAM, "
        f"{machine['os']}; Python {machine['python']}, llama-cpp-python "
        f"{machine['llama_cpp_python']}, ipykernel {machine['ipykernel']}, pyzmq "
        f"{machine['pyzmq']}, httpx {machine['httpx']}; commit {machine['git_commit']}"
        f"{' (with uncommitted changes)' if machine.get('git_dirty') else ''}.",
        "",
        "| benchmark | run at (UTC) | seconds | load average at start → end (1, 5, 15 min) |",
        "| --- | --- | --- | --- |",
    ]
    for doc in documents:
        m = doc["machine"]
        start = ", ".join(str(x) for x in m["load_average_start"])
        end = ", ".join(str(x) for x in m["load_average_end"])
        lines.append(
            f"| {doc['benchmark']}{' (quick)' if doc['quick'] else ''} | {doc['started_at']} "
            f"| {doc['seconds']} | {start} → {end} |"
        )
    lines += [
        "",
        "| what | llmspell | baseline | target | verdict |",
        "| --- | --- | --- | --- | --- |",
    ]
    for doc in documents:
        for row in doc["targets"]:
            cells = [row["what"], row["llmspell"], row["baseline"], row["target"]]
            cells.append(f"**{verdict(row['met'])}**")
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    notes = [f"- {doc['benchmark']}: {note}" for doc in documents for note in doc.get("notes", [])]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


def load(results: Path) -> list[dict[str, Any]]:
    documents = []
    for name in SCRIPTS:
        path = results / f"{name}.json"
        if path.exists():
            documents.append(json.loads(path.read_text(encoding="utf-8")))
    return documents


START = "<!-- results:start -->"
END = "<!-- results:end -->"


def embed(page: Path, text: str) -> None:
    """Replace what lies between the results markers of ``page`` with ``text``."""
    content = page.read_text(encoding="utf-8")
    head, start, rest = content.partition(START)
    _, end, tail = rest.partition(END)
    if not start or not end:
        raise SystemExit(f"{page} has no {START} ... {END} section")
    page.write_text(f"{head}{START}\n{text}{END}{tail}", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    parser.add_argument(
        "--write", type=Path, default=None, help="embed into this page (docs/benchmarks.md)"
    )
    args = parser.parse_args(argv)
    text = markdown(load(args.results))
    if args.write is not None:
        embed(args.write, text)
    else:
        print(text, end="")


if __name__ == "__main__":
    main()
