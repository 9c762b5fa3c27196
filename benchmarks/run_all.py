"""Run every benchmark, one after another, each in its own process; the same options as each
script (``--quick``, ``--rounds``, ``--output``) are passed through.

``.venv/bin/python -m benchmarks.run_all [--quick] [--only generation,cli]``
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Sequence

from .common import PYTHON, RESULTS_DIR, ROOT

SCRIPTS = (
    "roundtrip",
    "generation",
    "conversations",
    "runner",
    "structured",
    "ollama",
    "openai",
    "pull",
    "memory",
    "cli",
    "embed",
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--output", default=str(RESULTS_DIR))
    parser.add_argument("--only", default=None, help=f"comma-separated subset of {SCRIPTS}")
    args = parser.parse_args(argv)
    names = SCRIPTS if args.only is None else tuple(args.only.split(","))
    unknown = sorted(set(names) - set(SCRIPTS))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)} (known: {', '.join(SCRIPTS)})")
    extra = ["--output", args.output]
    if args.quick:
        extra.append("--quick")
    if args.rounds is not None:
        extra += ["--rounds", str(args.rounds)]
    failed = []
    for name in names:
        started = time.perf_counter()
        print(f"== {name}", flush=True)
        code = subprocess.call([PYTHON, "-m", f"benchmarks.bench_{name}", *extra], cwd=ROOT)
        print(f"== {name}: exit {code} in {time.perf_counter() - started:.0f} s", flush=True)
        if code != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
