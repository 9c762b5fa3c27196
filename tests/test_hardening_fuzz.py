"""Protocol fuzzing: 10,000 generated malformed or hostile ``model_request`` contents.

One kernel subprocess (the real Gemma imported in its store, Ollama down, a Hub stand-in with
no repositories, ``default_backend = "llamacpp"``, its working directory inside a sentinel
tree) gets every content of tests/protocol_fuzzer.py, pipelined on one shell socket. Each must
get exactly one ``model_reply``: ``status: error`` with the ename its case calls for, or
``ok`` for the few valid harmless requests the generator makes. Afterwards the kernel answers
``kernel_info`` and a real ``list``, and neither the sentinel tree nor the model store has
changed.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from llmspell_kernel.protocol import PROTOCOL_VERSION
from tests.hardening_kernel_fixtures import (
    RawShell,
    kernel_alive,
    record_figures,
    snapshot_tree,
    tree_changes,
)
from tests.hub_standin import HubStandin
from tests.kernel_fixtures import (
    GEMMA_ID,
    KernelProcess,
    kernel_environment,
    make_store,
    start_kernel_process,
)
from tests.protocol_fuzzer import OK, Case, ProtocolFuzzer

pytestmark = pytest.mark.model

CASES = 10_000
SEED = int(os.environ.get("LLMSPELL_FUZZ_SEED", "20261125"))


@dataclass
class FuzzKernel:
    kernel: KernelProcess
    store: Path
    outside: Path


def make_outside(base: Path) -> Path:
    """The sentinel tree: files an attacker would like to read, overwrite or delete."""
    outside = base / "outside"
    (outside / "a" / "b" / "c").mkdir(parents=True)  # the kernel's working directory
    (outside / "nested" / "deeper").mkdir(parents=True)
    (outside / "secret.txt").write_text("root:x:0:0:do not touch\n")
    (outside / "fake.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + os.urandom(4096))
    (outside / "nested" / "deeper" / "notes.md").write_text("keep me\n")
    (outside / "link-to-secret").symlink_to(outside / "secret.txt")
    os.mkfifo(outside / "fifo")
    for path in (outside / "secret.txt", outside / "fake.gguf"):
        path.chmod(0o640)
    return outside


@pytest.fixture(scope="module")
def fuzz_kernel(tmp_path_factory: pytest.TempPathFactory, gemma_path: Path) -> Iterator[FuzzKernel]:
    base = tmp_path_factory.mktemp("fuzz")
    store = make_store(base, gemma_path)
    outside = make_outside(base)
    config = base / "llmspell.toml"
    config.write_text('default_backend = "llamacpp"\n')
    hub = HubStandin()  # no repositories: every pull of a well-formed spec is ModelNotFound
    hub.start()
    try:
        env = kernel_environment(
            base, store, HF_ENDPOINT=hub.url, LLMSPELL_CONFIG=str(config), HF_HUB_OFFLINE="0"
        )
        kernel = start_kernel_process(base, env, cwd=outside / "a" / "b" / "c")
        try:
            yield FuzzKernel(kernel, store, outside)
        finally:
            kernel.stop()
    finally:
        hub.stop()


def judge(case: Case, replies: list[dict[str, Any]]) -> str | None:
    """Why the replies to ``case`` are wrong, or None."""
    if not replies:
        return "no reply"
    if len(replies) > 1:
        return f"{len(replies)} replies"
    reply = replies[0]
    if reply["header"]["msg_type"] != "model_reply":
        return f"a {reply['header']['msg_type']}"
    content = reply["content"]
    if case.expect == OK:
        return None if content.get("status") == "ok" else f"not ok: {content.get('evalue')}"
    if content.get("status") != "error":
        return f"status {content.get('status')!r}"
    if not isinstance(content.get("traceback"), list) or not content.get("evalue"):
        return "an error reply without evalue/traceback"
    if content.get("ename") not in case.expect:
        evalue = str(content.get("evalue"))[:160]
        return f"ename {content.get('ename')} ({evalue}), expected {sorted(case.expect)}"
    return None


def test_ten_thousand_hostile_requests_each_get_one_precise_error(
    fuzz_kernel: FuzzKernel,
) -> None:
    outside_before = snapshot_tree(fuzz_kernel.outside)
    store_before = snapshot_tree(fuzz_kernel.store)
    cases = list(ProtocolFuzzer(SEED, fuzz_kernel.outside).cases(CASES))
    shell = RawShell(fuzz_kernel.kernel.connection_file)
    try:
        started = time.perf_counter()
        outcomes = shell.pipeline(
            (shell.message("model_request", case.content) for case in cases),
            window=32,
            timeout=150,
        )
        elapsed = time.perf_counter() - started
        strays = len(shell.strays)
    finally:
        shell.close()

    failures: list[str] = []
    enames: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    for case, outcome in zip(cases, outcomes, strict=True):
        categories[case.category.split(":")[0]] += 1
        for reply in outcome.replies:
            content = reply["content"]
            enames[content.get("ename") or content.get("status", "?")] += 1
        problem = judge(case, outcome.replies)
        if problem is not None:
            failures.append(f"{problem}: {case.describe()}")

    answered = sum(1 for o in outcomes if o.replies)
    replies = sum(len(o.replies) for o in outcomes)
    record_figures(
        "fuzz",
        {
            "seed": SEED,
            "tried": len(cases),
            "answered": answered,
            "replies": replies,
            "lost": len(cases) - answered,
            "duplicates": replies - answered,
            "stray_replies": strays,
            "wrong": len(failures),
            "seconds": round(elapsed, 2),
            "requests_per_second": round(len(cases) / elapsed, 1),
            "huge_1mb_strings": sum(
                1 for c in cases if len(json.dumps(c.content, default=str)) > 1_000_000
            ),
            "valid_harmless": sum(1 for c in cases if c.expect == OK),
            "by_ename": dict(enames.most_common()),
            "by_category": dict(categories.most_common()),
        },
    )
    assert len(cases) >= 10_000
    assert not failures, f"{len(failures)} wrong replies, e.g.:\n" + "\n".join(failures[:25])
    assert strays == 0

    # Alive, and still doing real work.
    info = kernel_alive(fuzz_kernel.kernel.connection_file)
    assert info["llmspell"]["protocol_version"] == PROTOCOL_VERSION
    shell = RawShell(fuzz_kernel.kernel.connection_file)
    try:
        [listed] = shell.pipeline([shell.message("model_request", {"command": "list"})])
    finally:
        shell.close()
    assert len(listed.replies) == 1
    assert GEMMA_ID in [m["id"] for m in listed.replies[0]["content"]["models"]]

    # Nothing outside the store was touched, and the store holds what it held.
    assert tree_changes(outside_before, snapshot_tree(fuzz_kernel.outside)) == {
        "added": [],
        "removed": [],
        "changed": [],
    }
    store_changes = tree_changes(store_before, snapshot_tree(fuzz_kernel.store))
    # An import copies into the store's scratch folder first; a failed one leaves nothing.
    scratch = [p for p in store_changes["added"] if not (fuzz_kernel.store / p).is_dir()]
    assert scratch == [] and store_changes["removed"] == [], store_changes
    assert store_changes["changed"] == [], store_changes


def test_content_ipykernel_cannot_decode_is_dropped_and_the_kernel_lives(
    fuzz_kernel: FuzzKernel,
) -> None:
    """Signed messages whose content is not JSON (or nests deeper than Python can parse) are
    dropped by ipykernel before any handler runs ("Invalid Message" in its log): no reply is
    possible, but the kernel must live on."""
    undecodable: list[str | bytes] = [
        "{not json",
        "",
        b"\xff\xfe\x00 not utf-8",
        "[" * 100_000 + "]" * 100_000,
        '{"command": "list"',
    ]
    shell = RawShell(fuzz_kernel.kernel.connection_file)
    try:
        outcomes = shell.pipeline(
            (shell.message("model_request", raw) for raw in undecodable),
            settle=2.0,
            request_timeout=2.0,
        )
        [after] = shell.pipeline([shell.message("model_request", {"command": "ps"})])
    finally:
        shell.close()
    record_figures(
        "fuzz_undecodable",
        {"tried": len(undecodable), "replies": sum(len(o.replies) for o in outcomes)},
    )
    assert [len(o.replies) for o in outcomes] == [0] * len(undecodable)
    assert after.replies and after.replies[0]["content"]["status"] == "ok"


def test_json_that_is_not_utf8_is_answered_with_invalid_request(fuzz_kernel: FuzzKernel) -> None:
    """Bytes that are not UTF-8 inside valid JSON reach the handler as U+FFFD and get the
    error reply of any bad request (docs/reliability.md)."""
    raw = [b'{"command": "caf\xe9"}', b'{"command": "ps", "x\xe9": 1}']
    shell = RawShell(fuzz_kernel.kernel.connection_file)
    try:
        outcomes = shell.pipeline((shell.message("model_request", r) for r in raw), settle=1.0)
    finally:
        shell.close()
    replies = [o.replies[0]["content"] for o in outcomes]
    assert [r["ename"] for r in replies] == ["InvalidRequest", "InvalidRequest"]
    assert "unknown command 'caf\ufffd'" in replies[0]["evalue"]
    assert "unknown field 'x\ufffd'" in replies[1]["evalue"]


# The faults the fuzzing found, each pinned by a direct test --------------------------------------


def test_a_reply_echoing_lone_surrogates_can_still_be_sent() -> None:
    """``{"command": "\\ud800"}`` (escaped JSON) used to go unanswered: the error reply echoed
    the surrogate and jupyter_client could not encode it as UTF-8."""
    from jupyter_client.session import Session

    from llmspell_kernel.protocol import error_reply, ok_reply, parse_request, wire_safe
    from llmspell_kernel.protocol.results import ListResult, ModelRow
    from providers.errors import InvalidRequest

    content = json.loads('{"command": "x\\ud800"}')
    with pytest.raises(InvalidRequest) as caught:
        parse_request(content)
    reply = error_reply(content["command"], caught.value)
    packed = Session(key=b"k").pack(reply)  # raised UnicodeEncodeError before the fix
    assert json.loads(packed)["command"] == "x\ufffd"
    assert "'x\\ud800'" in reply["evalue"]  # the message shows it escaped (repr)
    assert wire_safe({"path": Path("/x"), "odd": "\udcff"}) == {"path": "/x", "odd": "\ufffd"}
    odd = ListResult(models=[ModelRow(id="\udcff", backend="llamacpp")])
    assert ok_reply("list", odd)["models"][0]["id"] == "\ufffd"


@pytest.mark.parametrize(
    ("path", "needle"),
    [("/proc/self/mem", "cannot read"), ("x" * 5000 + ".gguf", "File name too long")],
)
def test_import_of_an_unreadable_path_is_a_model_error(
    tmp_path: Path, path: str, needle: str
) -> None:
    """An import used to answer with a foreign ``OSError`` here (EIO, ENAMETOOLONG)."""
    from providers.config import Config
    from providers.errors import ModelLoadError
    from providers.llamacpp import LlamaCppBackend

    config = Config.from_dict(
        {"providers": {"llamacpp": {"options": {"model_directory": tmp_path / "models"}}}}
    )
    backend = LlamaCppBackend(config)
    try:
        with pytest.raises(ModelLoadError, match=needle):
            backend.import_model(Path(path), "some-name")
    finally:
        backend.close()
    assert not any((tmp_path / "models").glob("some-name*"))
