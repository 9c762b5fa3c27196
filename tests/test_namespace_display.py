"""How notebook results look: HTML tables that stay data, progress bars that end as a line,
Stop as one line that keeps the text, ``%%llm --format markdown`` (issue 19), in a real
IPython shell over a scripted backend. The browser sees the same in
test_browser_jupyterlab.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from llmspell_kernel import progress_view
from llmspell_kernel.interrupts import GenerationStopped
from llmspell_kernel.namespace import install_namespace
from llmspell_kernel.views import KeyedTable, Record, Table
from providers import ProviderManager
from tests.namespace_fixtures import GEMMA_ID, ScriptedBackend, scripted, scripted_manager, shell

__all__ = ["scripted", "scripted_manager", "shell"]  # fixtures used by name


@pytest.fixture
def ns(
    shell: Any, scripted_manager: ProviderManager, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    # display() and capture_output() reach the running shell as the kernel's is: the instance
    monkeypatch.setattr(InteractiveShell, "_instance", shell)
    install_namespace(shell, scripted_manager)
    return shell.user_ns  # type: ignore[no-any-return]


@pytest.fixture
def widget_frontend(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """As after JupyterLab's widget manager asked for ``jupyter.widget`` comms."""
    monkeypatch.setattr(progress_view, "_widget_frontends", progress_view.threading.Event())
    assert not progress_view.widgets_shown()
    progress_view.note_comm_info("jupyter.widget")
    yield


# Results that render and stay data -----------------------------------------------------------


def test_results_render_as_html_tables_and_stay_plain_data(ns: dict[str, Any]) -> None:
    llm = ns["LocalLLM"]
    status = llm.status()
    assert isinstance(status, KeyedTable) and isinstance(status, dict)
    assert status["llamacpp"]["available"] is True
    page = status._repr_html_()
    assert page.startswith('<table class="llmspell-table">')
    assert page.count("<tr>") == 1 + len(status)  # the header and a row per backend
    assert "<td>llamacpp</td>" in page
    text = repr(status)
    assert text.splitlines()[0].split()[:2] == ["backend", "name"] or "backend" in text
    assert json.loads(status.to_json()) == status.to_dict()

    models = llm.list()
    assert isinstance(models, Table) and models[0]["id"] == GEMMA_ID
    assert [row["id"] for row in models] == [GEMMA_ID]
    assert models.to_list() == [dict(models[0])] and type(models.to_list()) is list
    assert "installed models" in repr(models) and GEMMA_ID in repr(models)
    assert f"<td>{GEMMA_ID}</td>" in models._repr_html_()

    info = llm.info(GEMMA_ID)
    assert isinstance(info, Record) and info["context_length"] == 32768
    assert "<td>context_length</td><td>32768</td>" in info._repr_html_()
    assert json.loads(json.dumps(info)) == info.to_dict()


def test_nested_values_fold_and_console_text_is_clipped() -> None:
    manifest = {"layers": [{"digest": "sha256:" + "a" * 64, "size": 253_100_000}] * 5}
    record = Record({"id": "m", "size_bytes": 253_100_000, "details": manifest, "none": None})
    page = record._repr_html_()
    assert "<details><summary>1 field</summary><pre>" in page and "none" not in page
    text = repr(record)
    assert "253.1 MB" in text and max(len(line) for line in text.splitlines()) < 80
    assert len(text.splitlines()) == 4  # header + three fields (None left out)
    assert Table([], caption="loaded models")._repr_html_() == "<p>loaded models: none</p>"
    assert repr(Table([], caption="loaded models")) == "loaded models: none"
    shown = Table([{"name": "<script>", "ok": True}])._repr_html_()
    assert "<td>&lt;script&gt;</td><td>yes</td>" in shown


def test_the_shell_displays_them_as_html_and_text(shell: Any, ns: dict[str, Any]) -> None:
    data, _ = shell.display_formatter.format(ns["LocalLLM"].list())
    assert '<table class="llmspell-table">' in data["text/html"]
    assert data["text/plain"].startswith("installed models\n")


# Progress -------------------------------------------------------------------------------------


def test_a_widget_frontend_gets_a_bar_that_ends_as_the_summary(
    shell: Any, ns: dict[str, Any], widget_frontend: None
) -> None:
    with capture_output() as captured:
        result = shell.run_cell("pulled = LocalLLM.pull('tinyllama')")
    assert result.success, result.error_in_exec
    bar, *rest = captured.outputs
    assert "application/vnd.jupyter.widget-view+json" in bar.data
    summary = ns["pulled"]
    assert summary.line.startswith("pulled tinyllama@llamacpp: 5.0 MB in ")
    assert summary["bytes"] == 5_000_000 and summary["model"]["id"] == "tinyllama"
    assert captured.stdout == ""  # no text line beside the bar
    assert rest == [] or all("widget" not in str(o.data) for o in rest)


def test_progress_bar_shows_bytes_speed_and_eta() -> None:
    now = [0.0]
    bar = progress_view.ProgressBar(interval=0.25, clock=lambda: now[0])
    for step in range(11):
        now[0] = step * 0.5
        bar(progress_view.Progress("m", "downloading", step * 1_000_000, 10_000_000))
    assert bar._bar.value == pytest.approx(1.0)
    now[0] = 5.5
    bar(progress_view.Progress("m", "downloading", 5_000_000, 10_000_000))
    assert bar._bar.value == pytest.approx(0.5)
    assert "5.0 MB / 10.0 MB (50%)" in bar._label.value and " left" in bar._label.value
    bar.finish("pulled m")
    assert bar._box.comm is None  # closed: the front-end drops it


def test_without_a_widget_frontend_progress_is_a_text_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(progress_view, "_widget_frontends", progress_view.threading.Event())
    progress_view.note_comm_info("comm.other")
    assert isinstance(progress_view.progress_view(), progress_view.ProgressLine)


# Stop -----------------------------------------------------------------------------------------


def test_stop_in_a_cell_magic_is_one_line_and_keeps_the_text(
    shell: Any, ns: dict[str, Any], scripted: ScriptedBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    scripted.interrupt_after = 2
    result = shell.run_cell(f"%%llm -m {GEMMA_ID}\nSay hello\n")
    assert isinstance(result.error_in_exec, GenerationStopped)
    assert isinstance(result.error_in_exec, KeyboardInterrupt)
    out = capsys.readouterr().out
    assert out == "Hello,\ngeneration stopped after 2 tokens\n"
    scripted.interrupt_after = None
    assert shell.run_cell("1 + 1").result == 2


def test_a_stopped_agent_stream_keeps_the_turn_and_its_metrics(
    shell: Any, ns: dict[str, Any], scripted: ScriptedBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    ns["agent"] = agent = ns["Agent"](GEMMA_ID)
    scripted.interrupt_after = 3
    cell = "for piece in agent.stream('Hi'):\n    print(piece, end='')\n"
    result = shell.run_cell(cell)
    assert isinstance(result.error_in_exec, GenerationStopped)
    assert capsys.readouterr().out == "Hello, worldgeneration stopped after 3 tokens\n"
    assert agent.history == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello, world"},
    ]
    assert agent.last_metrics["stop_reason"] == "cancelled"
    assert agent.last_metrics["generated_tokens"] == 3


def test_an_interrupt_in_the_readers_own_loop_keeps_the_turn(
    ns: dict[str, Any], scripted: ScriptedBackend
) -> None:
    agent = ns["Agent"](GEMMA_ID)
    stream = agent.stream("Hi")
    received = [next(stream), next(stream)]
    # Stop landed in the reader's code (a print): the generator is neither finished nor closed
    assert agent.history[-1] == {"role": "assistant", "content": "".join(received)}
    stream.close()
    assert agent.history[-1] == {"role": "assistant", "content": "Hello,"}
    assert agent.last_metrics["stop_reason"] == "cancelled"


def test_a_failed_generation_adds_no_turn(ns: dict[str, Any], scripted: ScriptedBackend) -> None:
    agent = ns["Agent"](GEMMA_ID)
    scripted.fail_after = 2
    with pytest.raises(Exception, match="scripted model broke"):
        list(agent.stream("Hi"))
    assert agent.history == []


# %%llm --format ------------------------------------------------------------------------------


def test_markdown_format_streams_text_then_renders_markdown(
    shell: Any, ns: dict[str, Any], scripted: ScriptedBackend
) -> None:
    scripted.pieces = ["# Title", "\n\n", "*bold*", " text"]
    with capture_output() as captured:
        result = shell.run_cell(f"%%llm -m {GEMMA_ID} --format markdown\nWrite markdown\n")
    assert result.success, result.error_in_exec
    assert captured.stdout == ""
    last = captured.outputs[-1].data
    assert last["text/markdown"] == "# Title\n\n*bold* text"


def test_json_format_is_the_structured_answer(
    shell: Any, ns: dict[str, Any], scripted: ScriptedBackend
) -> None:
    scripted.pieces = ['{"a":', " 1}"]
    result = shell.run_cell(f"%%llm -m {GEMMA_ID} --format json\nGive JSON\n")
    assert result.success, result.error_in_exec
    assert result.result == {"a": 1}
    assert scripted.chats[-1][2].format == "json"
    both = shell.run_cell(f"%%llm -m {GEMMA_ID} --format json --schema json\nGive JSON\n")
    assert "not both" in str(both.error_in_exec)
