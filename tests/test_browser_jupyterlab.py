"""JupyterLab in headless Chromium on the llmspell kernel, as a user sees it: the launcher's
card and logo, a notebook on the kernel, ``LocalLLM.status()``'s HTML table, a streaming
``%%llm``, the Stop button during a long generation, and a pull's live progress bar.

One JupyterLab server and one browser for the module (tests/browser_fixtures.py); the kernel
runs the real Gemma 3 270M (a base model: ``%%llm --raw``), and pulls come from the Hub
stand-in on 127.0.0.1, throttled so that the bar is seen moving. On a failure the page's
screenshot and HTML are saved (the report names the folder).
"""

from __future__ import annotations

import re
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, expect

from llmspell_kernel.kernelspec import DISPLAY_NAME, KERNEL_NAME
from tests.browser_fixtures import (
    BrowserArtifacts,
    JupyterLab,
    chromium,
    ensure_chromium,
    install_kernelspec,
    jupyterlab,
    lab_environment,
    save_on_failure,
)
from tests.hub_standin import HubStandin
from tests.kernel_fixtures import GEMMA_ID, make_store

pytestmark = [pytest.mark.model, pytest.mark.slow]

WAIT = 60.0
"""Seconds for what takes under 5 s on a quiet machine (a bound that catches hangs)."""
MS = WAIT * 1000
"""WAIT for Playwright (whose ``expect`` would wait 5 s)."""
GENERATION_WAIT = 180.0
"""Seconds for a generation of 200 tokens (about 6 s on a quiet machine)."""
PULL_REPO = "example-org/gemma-3-270m-it-GGUF"
PULL_MODEL = f"hf:{PULL_REPO}:Q4_K_M"
PULL_RATE = 50e6
"""Bytes per second of the Hub stand-in: Gemma's 253 MB in about 5 s."""
COUNTING = "1, 2, 3, 4, 5, 6, 7, 8,"
"""A prompt the base model continues for as long as it may."""
DONE = re.compile(r"^\[\d+\]:$")
"""A code cell's prompt once its execution ended (``[*]:`` while it runs)."""
STDOUT = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stdout"]'
STDERR = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'
"""Error outputs (tracebacks) render as this mime type too."""
PLAIN = '.jp-OutputArea-output[data-mime-type="text/plain"]'
PROGRESS_BAR = ".jupyter-widgets.widget-hprogress .progress-bar"
"""ipywidgets 8's FloatProgress in JupyterLab (its width is the value, in %)."""
CELLS = ".jp-NotebookPanel:visible .jp-Notebook .jp-Cell"
INTERRUPT = '.jp-NotebookPanel-toolbar jp-button[data-command="notebook:interrupt-kernel"]'


@dataclass
class Lab:
    server: JupyterLab
    page: Page
    artifacts: BrowserArtifacts
    spec_dir: Path
    """The installed kernelspec (its logos)."""


@pytest.fixture(scope="module")
def lab(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, gemma_path: Path
) -> Iterator[Lab]:
    """JupyterLab with the llmspell kernelspec, on a store holding Gemma as the default
    model and the Hub stand-in as HF_ENDPOINT, open on a fresh workspace's launcher."""
    ensure_chromium()
    base = tmp_path_factory.mktemp("jupyterlab")
    store = make_store(base, gemma_path)
    with ExitStack() as stack:
        hub = HubStandin()
        hub.add_repo(PULL_REPO, {"gemma-3-270m-it-Q4_K_M.gguf": gemma_path})
        hub.faults.rate = PULL_RATE
        stack.enter_context(hub)
        env = lab_environment(
            base, LLMSPELL_MODELS=str(store), LLMSPELL_MODEL=GEMMA_ID, HF_ENDPOINT=hub.url
        )
        spec_dir = install_kernelspec(env)
        server = stack.enter_context(jupyterlab(base, env))
        browser = stack.enter_context(chromium())
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(MS)
        artifacts = BrowserArtifacts(base / "artifacts", page, server)
        stack.enter_context(save_on_failure(request, artifacts))
        # A fresh browser would get the saved layout, which may have no launcher.
        page.goto(server.workspace_url("llmspell-test"))
        expect(page.locator(".jp-Launcher")).to_be_visible(timeout=MS)
        yield Lab(server, page, artifacts, spec_dir)


class Notebook:
    """The notebook the tests run cells in, on the llmspell kernel."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.page = lab.page
        self.artifacts = lab.artifacts
        self.cells = self.page.locator(CELLS)

    def run(self, code: str) -> Locator:
        """Type ``code`` into the last cell and run it (Shift+Enter, which adds a new last
        cell); returns that cell, still running perhaps."""
        index = self.cells.count() - 1
        cell = self.page.locator(f'{CELLS}[data-windowed-list-index="{index}"]')
        editor = cell.locator(".cm-content")
        editor.click()
        self.page.keyboard.insert_text(code)
        expect(editor).to_have_text(code.replace("\n", ""), timeout=MS)  # each line is a div
        self.page.keyboard.press("Shift+Enter")
        expect(self.cells).to_have_count(index + 2, timeout=MS)
        return cell

    def wait_done(self, cell: Locator, timeout: float = WAIT) -> None:
        expect(cell.locator(".jp-InputPrompt")).to_have_text(DONE, timeout=timeout * 1000)

    def shoot(self, cell: Locator, name: str) -> Path:
        """A screenshot of ``cell`` kept with the artifacts (for a look at a failed run)."""
        path = self.artifacts.folder / "steps" / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cell.screenshot(path=path)
        return path


@pytest.fixture(scope="module")
def notebook(lab: Lab) -> Notebook:
    """A new notebook from the launcher's llmspell card, its kernel started and answering."""
    lab.page.locator(launcher_card()).click()
    panel = lab.page.locator(".jp-NotebookPanel:visible")
    expect(panel.locator(".jp-Toolbar-kernelName")).to_have_text(DISPLAY_NAME, timeout=MS)
    nb = Notebook(lab)
    cell = nb.run("1 + 1")
    nb.wait_done(cell, WAIT * 2)  # the kernel's start, then the cell
    expect(cell.locator(PLAIN)).to_have_text("2", timeout=MS)
    return nb


def launcher_card() -> str:
    return f'.jp-LauncherCard[data-category="Notebook"][title="{DISPLAY_NAME}"]'


def poll(read: Callable[[], str], ok: Callable[[str], bool], timeout: float, what: str) -> str:
    """``read()`` every 0.1 s until ``ok`` of it, within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout} s; last seen: {value!r}")
        time.sleep(0.1)


def png_width(path: Path) -> int:
    width: int = struct.unpack(">I", path.read_bytes()[16:20])[0]  # the IHDR chunk
    return width


def test_launcher_shows_the_llmspell_card_with_its_logo(lab: Lab) -> None:
    card = lab.page.locator(launcher_card())
    expect(card).to_be_visible(timeout=MS)
    expect(card.locator(".jp-LauncherCard-label")).to_have_text(DISPLAY_NAME, timeout=MS)
    logo = card.locator("img")
    src = logo.get_attribute("src") or ""
    assert src.endswith(f"/kernelspecs/{KERNEL_NAME}/logo-64x64.png"), src
    logo.evaluate("img => img.decode()")  # rejects when the image cannot be loaded
    natural = logo.evaluate("img => [img.complete, img.naturalWidth, img.naturalHeight]")
    expected = png_width(lab.spec_dir / "logo-64x64.png")
    assert natural == [True, expected, expected]
    served = lab.page.request.get(lab.server.url + src)
    assert served.ok and served.body() == (lab.spec_dir / "logo-64x64.png").read_bytes()


def test_status_renders_as_an_html_table(notebook: Notebook) -> None:
    cell = notebook.run("LocalLLM.status()")
    notebook.wait_done(cell)
    table = cell.locator('.jp-OutputArea-output[data-mime-type="text/html"] table.llmspell-table')
    expect(table).to_be_visible(timeout=MS)
    names = table.locator("tbody tr > td:first-child").all_inner_texts()
    assert "llamacpp" in names, names
    assert len(names) == len(set(names)) and all(names), names  # one row per backend
    box = table.bounding_box()
    assert box is not None and box["height"] > 20 * len(names)  # rendered rows, not text


def test_streaming_llm_output_grows_while_the_cell_runs(notebook: Notebook) -> None:
    cell = notebook.run(f"%%llm --raw --max-tokens 200 --temperature 0\n{COUNTING}")
    stdout = cell.locator(STDOUT)
    prompt = cell.locator(".jp-InputPrompt")

    def read() -> str:
        shown = "\n".join(stdout.all_inner_texts())
        return f"{prompt.inner_text()}|{shown.strip()}"

    first = poll(read, lambda s: s.partition("|")[2] != "", GENERATION_WAIT, "no text")
    notebook.shoot(cell, "stream-1")
    assert first.startswith("[*]"), f"the first text came with the end of the cell: {first!r}"
    text = first.partition("|")[2]
    later = poll(read, lambda s: s.partition("|")[2] != text, WAIT, "the text did not grow")
    notebook.shoot(cell, "stream-2")
    grown = later.partition("|")[2]
    assert grown.startswith(text) and len(grown) > len(text), (text, grown)
    notebook.wait_done(cell, GENERATION_WAIT)
    final = "\n".join(stdout.all_inner_texts()).strip()
    assert final.startswith(grown) and "10, 11, 12" in final
    expect(cell.locator(STDERR)).to_have_count(0, timeout=MS)


def test_stop_during_a_generation_shows_one_line_and_the_next_cell_runs(
    notebook: Notebook,
) -> None:
    cell = notebook.run(f"%%llm --raw --max-tokens 2000 --temperature 0\n{COUNTING}")
    stdout = cell.locator(STDOUT)
    poll(lambda: "".join(stdout.all_inner_texts()).strip(), bool, GENERATION_WAIT, "no text")
    time.sleep(0.5)  # a few more tokens
    notebook.page.locator(INTERRUPT).click()
    stopped = time.monotonic()
    notebook.wait_done(cell)
    notebook.shoot(cell, "stopped")
    print(f"the cell ended {time.monotonic() - stopped:.1f} s after Stop")

    partial = "".join(stdout.all_inner_texts()).strip()
    assert partial.startswith("9"), partial  # the text so far stays (the count goes on)
    errors = "\n".join(cell.locator(STDERR).all_inner_texts())
    assert re.search(r"generation stopped after [1-9]\d* tokens?", errors), errors
    assert "Traceback" not in errors and "KeyboardInterrupt" not in errors, errors
    assert len([line for line in errors.splitlines() if line.strip()]) <= 2, errors

    after = notebook.run("1 + 1")
    notebook.wait_done(after)
    expect(after.locator(PLAIN)).to_have_text("2", timeout=MS)


def test_pull_shows_a_moving_progress_bar_then_one_summary_line(notebook: Notebook) -> None:
    # force: the store holds this very file already (as gemma3-270m), which a pull would reuse
    cell = notebook.run(f'LocalLLM.pull("hf:{PULL_REPO}", force=True)')
    bar = cell.locator(PROGRESS_BAR)

    def width() -> str:
        shown = bar.evaluate_all("bars => bars.map(b => b.style.width)")
        return str(shown[0]) if len(shown) == 1 else ""

    def percent(text: str) -> float:
        return float(text.rstrip("%")) if text.endswith("%") else -1.0

    first = poll(width, lambda w: percent(w) > 0, WAIT, "no progress bar with a value")
    notebook.shoot(cell, "pull-1")
    label = cell.locator(".widget-hbox .widget-html-content")
    later = poll(width, lambda w: percent(w) > percent(first), WAIT, "the bar did not move")
    notebook.shoot(cell, "pull-2")
    assert percent(later) <= 100
    shown = label.inner_text()
    assert PULL_MODEL in shown and "MB" in shown, shown
    poll(label.inner_text, lambda t: "/s" in t and "left" in t, WAIT, "no speed and ETA")

    notebook.wait_done(cell, WAIT * 2)
    expect(cell.locator(".jupyter-widgets")).to_have_count(0, timeout=MS)  # the widget is gone...
    lines = [
        line.strip()
        for text in cell.locator(f"{PLAIN}, {STDOUT}").all_inner_texts()
        for line in text.splitlines()
        if line.strip()
    ]
    summaries = [line for line in lines if "pulled" in line and PULL_MODEL in line]
    assert len(summaries) >= 1, lines  # ...for one summary line
    expect(cell.locator(STDERR)).to_have_count(0, timeout=MS)
