"""docs/protocol.md's command table and docs/protocol.schema.json are generated from the
protocol's models (scripts/protocol_schema.py) and must match them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from llmspell_kernel.protocol import REQUESTS, RESULTS

ROOT = Path(__file__).resolve().parent.parent


def test_the_docs_are_generated_from_the_models() -> None:
    check = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "protocol_schema.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_every_command_has_a_request_and_a_result_schema() -> None:
    schema = json.loads((ROOT / "docs" / "protocol.schema.json").read_text(encoding="utf-8"))
    assert list(schema["commands"]) == list(REQUESTS) == list(RESULTS)
    for command, pair in schema["commands"].items():
        assert pair["request"]["properties"]["command"] == {"const": command}
        assert "command" in pair["request"]["required"]
        assert pair["result"]["type"] == "object"
    generate = schema["commands"]["generate"]["request"]
    options = generate["$defs"]["GenerationOptions"]["properties"]
    top_p = next(kind for kind in options["top_p"]["anyOf"] if kind.get("type") == "number")
    assert top_p["exclusiveMinimum"] == 0 and top_p["maximum"] == 1
