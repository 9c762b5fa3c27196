"""Forged, unsigned, tampered and replayed messages (bad HMAC) are neither run nor answered.

Every attack is an ``execute_request`` whose code would create a marker file (or a
``model_request``, or a control request that would shut the kernel down), crafted with raw ZMQ
sockets and jupyter_client's ``Session``: signed with a wrong key, unsigned, signed with the
right key and then altered, signed with another scheme, or a correctly signed message sent a
second time. ipykernel checks the HMAC-SHA256 signature of every message and keeps a history
of the signatures it has seen (``Session.digest_history``), so none of them may run, and none
may get a reply; the kernel must stay alive and keep serving its legitimate client.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.session import Session

from llmspell_kernel.protocol import PROTOCOL_VERSION
from tests.hardening_kernel_fixtures import RawShell, kernel_alive, kernel_pid, record_figures
from tests.kernel_fixtures import KernelProcess, kernel_environment, start_kernel_process

PER_KIND = 40


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KernelProcess]:
    base = tmp_path_factory.mktemp("auth")
    (base / "models").mkdir()
    process = start_kernel_process(base, kernel_environment(base, base / "models"))
    try:
        yield process
    finally:
        process.stop()


def key_of(kernel: KernelProcess) -> bytes:
    info = json.loads(Path(kernel.connection_file).read_text())
    return str(info["key"]).encode()


def execute(code: str) -> dict[str, Any]:
    return {"code": code, "silent": False, "store_history": False, "user_expressions": {}}


def marker_code(marker: Path) -> str:
    return f"open({str(marker)!r}, 'a').write('ran\\n')"


Frames = list[bytes]


def signed_frames(session: Session, msg: dict[str, Any]) -> Frames:
    """[<IDS|MSG>, signature, header, parent, metadata, content] as ``session`` signs them."""
    return [bytes(frame) for frame in session.serialize(msg)]


def attacks(key: bytes, markers: Path) -> Iterator[tuple[str, str, Frames]]:
    """(kind, channel, frames) for every forged message."""
    right = Session(key=key)

    def forged(kind: str, index: int, msg_type: str = "execute_request") -> dict[str, Any]:
        content = execute(marker_code(markers / f"{kind}-{index}"))
        if msg_type == "model_request":
            content = {"command": "list"}
        return right.msg(msg_type, content)

    def shutdown() -> dict[str, Any]:
        return right.msg("shutdown_request", {"restart": False})

    for i in range(PER_KIND):
        wrong = Session(key=os.urandom(16).hex().encode())
        yield "wrong-key", "shell", signed_frames(wrong, forged("wrong-key", i))
        yield "unsigned", "shell", signed_frames(Session(key=b""), forged("unsigned", i))
        content_changed = tamper_content(right, forged("tampered-content", i), markers)
        yield "tampered-content", "shell", content_changed
        yield "tampered-header", "shell", tamper_header(right, forged("tampered-header", i))
        sha512 = Session(key=key, signature_scheme="hmac-sha512")
        yield "other-scheme", "shell", signed_frames(sha512, forged("other-scheme", i))
        cut = truncate_signature(right, forged("truncated-signature", i))
        yield "truncated-signature", "shell", cut
        model = signed_frames(wrong, forged("m", i, "model_request"))
        yield "model-request-wrong-key", "shell", model
        yield "control-shutdown-wrong-key", "control", signed_frames(wrong, shutdown())
        yield "control-shutdown-unsigned", "control", signed_frames(Session(key=b""), shutdown())


def tamper_content(session: Session, msg: dict[str, Any], markers: Path) -> Frames:
    frames = signed_frames(session, msg)
    evil = execute(marker_code(markers / "tampered-content-evil"))
    frames[5] = json.dumps(evil).encode()
    return frames


def tamper_header(session: Session, msg: dict[str, Any]) -> Frames:
    frames = signed_frames(session, msg)
    header = json.loads(frames[2])
    header["username"] = "mallory"
    frames[2] = json.dumps(header).encode()
    return frames


def truncate_signature(session: Session, msg: dict[str, Any]) -> Frames:
    frames = signed_frames(session, msg)
    frames[1] = frames[1][:-2]
    return frames


def drain(socket_owner: RawShell, seconds: float) -> list[dict[str, Any]]:
    got = []
    while (reply := socket_owner.recv(seconds)) is not None:
        got.append(reply)
    return got


def test_forged_unsigned_and_tampered_messages_are_neither_run_nor_answered(
    kernel: KernelProcess, tmp_path: Path
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    pid = kernel_pid(kernel)
    # The attacker can reach the ports, but has its own sockets (and identity).
    shell = RawShell(kernel.connection_file)
    control = RawShell(kernel.connection_file, channel="control")
    tried: Counter[str] = Counter()
    try:
        for kind, channel, frames in attacks(key_of(kernel), markers):
            target = shell if channel == "shell" else control
            target.socket.send_multipart(frames)
            tried[kind] += 1
        # A legitimate request on the same socket after all of them: its reply proves the
        # kernel has read past every forged message.
        legit_marker = tmp_path / "legit-ran"  # the same code, signed right, does run
        [legit] = shell.pipeline(
            [shell.message("execute_request", execute(marker_code(legit_marker)))],
            settle=0,
            timeout=30,
        )
        answered = drain(shell, 2.0) + drain(control, 0.5)
    finally:
        shell.close()
        control.close()

    ran = sorted(p.name for p in markers.iterdir())
    info = kernel_alive(kernel.connection_file)
    record_figures(
        "auth_forged",
        {
            "tried": sum(tried.values()),
            "by_kind": dict(tried),
            "answered": len(answered),
            "executed": len(ran),
            "kernel_alive": bool(info),
        },
    )
    assert sum(tried.values()) == PER_KIND * 9
    assert len(legit.replies) == 1 and legit.replies[0]["content"]["status"] == "ok"
    assert legit_marker.read_text() == "ran\n"
    assert answered == [], [m["header"]["msg_type"] for m in answered]
    assert ran == []
    assert info["status"] == "ok" and info["llmspell"]["protocol_version"] == PROTOCOL_VERSION
    assert kernel_pid(kernel) == pid and kernel.manager.is_alive()


def test_replayed_messages_are_neither_run_nor_answered(
    kernel: KernelProcess, tmp_path: Path
) -> None:
    """A captured, correctly signed message sent again — on the same socket, from another
    socket, and on the control channel — is rejected as a duplicate signature."""
    right = Session(key=key_of(kernel))
    rounds = 25
    shell = RawShell(kernel.connection_file, session=right)
    other = RawShell(kernel.connection_file, session=Session(key=key_of(kernel)))
    control = RawShell(kernel.connection_file, session=right, channel="control")
    counter = tmp_path / "counter"
    originals: list[Frames] = []
    replies: list[dict[str, Any]] = []
    try:
        for _ in range(rounds):
            frames = signed_frames(
                right,
                right.msg("execute_request", execute(f"open({str(counter)!r}, 'a').write('x')")),
            )
            originals.append(frames)
            shell.socket.send_multipart(frames)
            reply = shell.recv(30)
            assert reply, "the original message is answered"
            replies.append(reply)
        model_frames = signed_frames(right, right.msg("model_request", {"command": "ps"}))
        shell.socket.send_multipart(model_frames)
        model_reply = shell.recv(30)
        control_frames = signed_frames(right, right.msg("kernel_info_request", {}))
        control.socket.send_multipart(control_frames)
        control_reply = control.recv(30)

        for frames in originals:
            shell.socket.send_multipart(frames)  # same socket
            other.socket.send_multipart(frames)  # another connection
        for _ in range(rounds):
            shell.socket.send_multipart(model_frames)
            control.socket.send_multipart(control_frames)
        [legit] = shell.pipeline(
            [shell.message("execute_request", execute("2 + 2"))], settle=0, timeout=30
        )
        replayed_answers = drain(shell, 2.0) + drain(other, 0.5) + drain(control, 0.5)
    finally:
        shell.close()
        other.close()
        control.close()

    tried = len(originals) * 2 + rounds * 2
    runs = len(counter.read_text())
    record_figures(
        "auth_replay",
        {
            "originals": rounds + 2,
            "tried": tried,
            "answered": len(replayed_answers),
            "executed": runs - rounds,
        },
    )
    assert all(r["content"]["status"] == "ok" for r in replies)
    assert model_reply and model_reply["content"]["status"] == "ok"
    assert control_reply and control_reply["header"]["msg_type"] == "kernel_info_reply"
    assert runs == rounds, "each original ran once, no replay ran"
    assert replayed_answers == [], [m["header"]["msg_type"] for m in replayed_answers]
    assert len(legit.replies) == 1
    assert kernel_alive(kernel.connection_file)["status"] == "ok"
