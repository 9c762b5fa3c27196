"""JupyterLab in a real browser for tests/test_browser_jupyterlab.py: Debian's ``chromium``
(installed here as root when it is missing) driven by Playwright (its driver only, from PyPI;
the browser is ``/usr/lib/chromium/chromium``, not the ``/usr/bin/chromium`` wrapper script),
and a JupyterLab server on 127.0.0.1 with its own Jupyter and IPython directories and the
``llmspell`` kernelspec installed into its data dir.

Both are context managers that stop their whole process tree (the server's kernels, the
browser's renderers) however the test ends. Within :func:`save_on_failure`, a failed test
gets a screenshot, the page's HTML and console saved with the server's log, under the temp dir
(pytest keeps it), and the report names the folder.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Generator, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.isolation import private_dirs

CHROMIUM = Path("/usr/lib/chromium/chromium")
LLMSPELL = Path(sys.executable).with_name("llmspell")
START_SECONDS = 120.0
"""JupyterLab answering its REST API (about 5 s on a quiet machine)."""
STOP_SECONDS = 20.0
INSTALL_SECONDS = 900.0
DEAD_OLLAMA = "http://127.0.0.1:9"
DISABLED_EXTENSIONS = (
    "@jupyterlab/apputils-extension:announcements",  # the "news?" toast over the notebook
)


def ensure_chromium() -> Path:
    """Install Debian's chromium if it is missing (as root, quietly); skip the tests, saying
    why, where that cannot be done. Returns the browser's binary."""
    if CHROMIUM.exists():
        return CHROMIUM
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        why = "not root" if os.geteuid() != 0 else "no apt-get"
        pytest.skip(f"no {CHROMIUM}, and Debian's chromium cannot be installed here ({why})")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"]
    if subprocess.run(install, env=env, capture_output=True, timeout=INSTALL_SECONDS).returncode:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600)
        done = subprocess.run(
            install, env=env, capture_output=True, text=True, timeout=INSTALL_SECONDS
        )
        if done.returncode != 0:
            pytest.skip(f"chromium cannot be installed: {done.stderr.strip()[-300:]}")
    if not CHROMIUM.exists():
        pytest.skip(f"the chromium package is installed but has no {CHROMIUM}")
    return CHROMIUM


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def kill_tree(processes: list[psutil.Process], grace: float = 0.0) -> None:
    """Terminate ``processes`` (give them ``grace`` seconds), then kill what is left."""
    if grace > 0:
        for proc in processes:
            with suppress(psutil.NoSuchProcess):
                proc.terminate()
        _, processes = psutil.wait_procs(processes, timeout=grace)
    for proc in processes:
        with suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(processes, timeout=10)


def process_tree(pid: int) -> list[psutil.Process]:
    """The process ``pid`` and all its descendants (children first, the process last)."""
    try:
        parent = psutil.Process(pid)
        return [*parent.children(recursive=True), parent]
    except psutil.NoSuchProcess:
        return []


# JupyterLab --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JupyterLab:
    """A running JupyterLab server."""

    url: str
    """``http://127.0.0.1:PORT``"""
    token: str
    process: subprocess.Popen[bytes]
    root_dir: Path
    """Where its notebooks are."""
    env: dict[str, str]
    """The server's environment (its kernels inherit it)."""
    log: Path

    def workspace_url(self, name: str) -> str:
        """A fresh workspace: the default layout, with a launcher (a saved one may have none)."""
        return f"{self.url}/lab/workspaces/{name}?reset&token={self.token}"

    def api(self, path: str) -> object:
        """GET a REST API path (``/api/...``), as JSON."""
        request = urllib.request.Request(
            self.url + path, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.load(answer)

    def log_tail(self, lines: int = 60) -> str:
        text = self.log.read_text("utf-8", errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def lab_environment(base: Path, **variables: str) -> dict[str, str]:
    """The server's environment: HOME, Jupyter, IPython, XDG and Hub dirs under ``base``,
    nothing of the developer's llmspell, Hub or Ollama settings, then ``variables``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("LLMSPELL_", "HF_", "JUPYTER", "JPY_", "XDG_", "OLLAMA_"))
        and key != "IPYTHONDIR"
    }
    home = base / "home"
    env.update(private_dirs(home))
    for sub in ("jupyter-config", "jupyter-data", "ipython"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    env.update(
        HOME=str(home),
        JUPYTER_CONFIG_DIR=str(base / "jupyter-config"),
        JUPYTER_DATA_DIR=str(base / "jupyter-data"),
        IPYTHONDIR=str(base / "ipython"),
        OLLAMA_HOST=DEAD_OLLAMA,
        PYTHONUNBUFFERED="1",
    )
    env.update(variables)
    return env


def install_kernelspec(env: dict[str, str]) -> Path:
    """``llmspell kernel install --user`` into ``env``'s JUPYTER_DATA_DIR; the spec's dir."""
    done = subprocess.run(
        [str(LLMSPELL), "kernel", "install", "--user"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    spec = Path(env["JUPYTER_DATA_DIR"]) / "kernels" / "llmspell"
    assert (spec / "kernel.json").is_file(), done.stdout
    return spec


@contextmanager
def jupyterlab(base: Path, env: dict[str, str]) -> Iterator[JupyterLab]:
    """JupyterLab on 127.0.0.1 (a free port, a token, no browser of its own, prebuilt
    extensions, no news, update checks or extension manager) in ``env``; the server and its
    kernels are stopped at exit."""
    root_dir = base / "notebooks"
    root_dir.mkdir(parents=True, exist_ok=True)
    labconfig = Path(env["JUPYTER_CONFIG_DIR"]) / "labconfig"
    labconfig.mkdir(parents=True, exist_ok=True)
    disabled = dict.fromkeys(DISABLED_EXTENSIONS, True)
    (labconfig / "page_config.json").write_text(json.dumps({"disabledExtensions": disabled}))
    port, token = free_port(), secrets.token_hex(16)
    command = [
        sys.executable, "-m", "jupyterlab",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", "--ServerApp.open_browser=False",
        f"--ServerApp.root_dir={root_dir}", "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
    ]  # fmt: skip
    if os.geteuid() == 0:
        command.append("--allow-root")
    log = base / "jupyterlab.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, env=env, cwd=root_dir, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    server = JupyterLab(f"http://127.0.0.1:{port}", token, process, root_dir, env, log)
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                server.api("/api/status")
                break
            except (OSError, urllib.error.URLError):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"JupyterLab did not start (exit {process.poll()}):\n{server.log_tail()}"
                    ) from None
                time.sleep(0.2)
        yield server
    finally:
        kill_tree(process_tree(process.pid), grace=STOP_SECONDS)
        process.wait(10)


# The browser -------------------------------------------------------------------------------------


@contextmanager
def chromium() -> Iterator[Browser]:
    """Headless Debian chromium under Playwright's driver; the driver, the browser and every
    renderer are stopped at exit."""
    executable = ensure_chromium()
    before = {proc.pid for proc in psutil.Process().children()}
    playwright = sync_playwright().start()
    started: list[psutil.Process] = []
    try:
        browser = playwright.chromium.launch(
            executable_path=str(executable),
            headless=True,
            args=["--disable-dev-shm-usage", "--disable-gpu", "--no-first-run"],
            timeout=120_000,
        )
        drivers = [p for p in psutil.Process().children() if p.pid not in before]
        started = [proc for driver in drivers for proc in process_tree(driver.pid)]
        try:
            yield browser
        finally:
            with suppress(Exception):
                browser.close()
    finally:
        with suppress(Exception):
            playwright.stop()
        kill_tree([p for p in started if p.is_running()])


# Artifacts of a failed test ----------------------------------------------------------------------


class BrowserArtifacts:
    """Where a failed test's screenshots and page HTML go: ``folder``/TEST-NAME/."""

    def __init__(self, folder: Path, page: Page, server: JupyterLab | None = None) -> None:
        self.folder = folder
        self.page = page
        self.server = server
        self.console: list[str] = []
        """The page's console messages and uncaught errors, saved with a failure."""
        page.on("console", lambda msg: self.console.append(f"{msg.type}: {msg.text}"))
        page.on("pageerror", lambda error: self.console.append(f"pageerror: {error}"))

    def save(self, name: str) -> Path:
        """A screenshot, the page's HTML and console (and the server's log) in a new dir."""
        target = self.folder / name.replace("/", "_").replace("::", "-")
        target.mkdir(parents=True, exist_ok=True)
        with suppress(Exception):
            self.page.screenshot(path=target / "page.png", full_page=True, timeout=30_000)
        with suppress(Exception):
            (target / "page.html").write_text(self.page.content(), "utf-8")
        (target / "console.txt").write_text("\n".join(self.console) + "\n", "utf-8")
        if self.server is not None:
            with suppress(OSError):
                shutil.copy(self.server.log, target / "jupyterlab.log")
        return target


class SaveOnFailure:
    """A pytest plugin: when a test of the module at ``path`` fails (in its set-up too), save
    the page as it is and name the folder in the report."""

    def __init__(self, artifacts: BrowserArtifacts, path: Path) -> None:
        self.artifacts = artifacts
        self.path = path

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if report.failed and call.when in ("setup", "call") and item.path == self.path:
            saved = self.artifacts.save(item.name)
            report.sections.append(
                ("browser artifacts", f"screenshot, page HTML and console, server log in {saved}")
            )
            print(f"\nbrowser artifacts of {item.nodeid}: {saved}", file=sys.stderr)
            if self.artifacts.server is not None:
                report.sections.append(("JupyterLab log (tail)", self.artifacts.server.log_tail()))
        return report


@contextmanager
def save_on_failure(request: pytest.FixtureRequest, artifacts: BrowserArtifacts) -> Iterator[None]:
    """While in the block, a failed test of ``request``'s module saves ``artifacts``
    (:class:`SaveOnFailure`); for a module-scoped fixture's ``request``."""
    plugin = SaveOnFailure(artifacts, request.path)
    config = request.config
    config.pluginmanager.register(plugin, f"llmspell-browser-artifacts-{id(plugin)}")
    try:
        yield
    finally:
        config.pluginmanager.unregister(plugin)
