"""The official Ollama install steps (https://ollama.com/download) for the running system.

``llmspell model install-ollama`` prints these and runs :attr:`InstallPlan.command` only after
the user says yes. Nothing here talks to the kernel: installing Ollama is not a model operation.
"""

from __future__ import annotations

import platform
import shlex
import shutil
import subprocess
from dataclasses import dataclass

LINUX_SCRIPT = "curl -fsSL https://ollama.com/install.sh | sh"
LINUX_SCRIPT_URL = "https://ollama.com/install.sh"
# What -y runs for LINUX_SCRIPT: the same two steps, but a failed download fails the command
# (``curl … | sh`` reports only the status of ``sh``, which runs an empty script and succeeds;
# POSIX sh has no ``pipefail``).
LINUX_COMMAND = (
    "set -e; script=$(mktemp); trap 'rm -f \"$script\"' EXIT; "
    f'curl -fsSL {LINUX_SCRIPT_URL} -o "$script"; sh "$script"'
)
MACOS_APP = "https://ollama.com/download/Ollama.dmg"
WINDOWS_INSTALLER = "https://ollama.com/download/OllamaSetup.exe"
DOWNLOAD_PAGE = "https://ollama.com/download"


@dataclass(frozen=True)
class InstallPlan:
    system: str
    steps: tuple[str, ...]
    """What a person should do, one step per line."""
    command: list[str] | None
    """What ``-y`` runs; None when the steps cannot be run from a terminal here."""
    shown: str | None = None
    """The command as the official steps write it, when ``command`` is a safer equivalent."""

    @property
    def command_text(self) -> str:
        if self.command is None:
            return ""
        if self.shown is not None:
            return self.shown
        if self.command[:2] == ["sh", "-c"]:
            return self.command[2]
        return shlex.join(self.command)


def plan_for(system: str, *, has_brew: bool = False) -> InstallPlan:
    """The plan for ``system`` as named by :func:`platform.system`."""
    if system == "Linux":
        return InstallPlan(
            "Linux",
            (LINUX_SCRIPT, "then start the server: ollama serve"),
            ["sh", "-c", LINUX_COMMAND],
            shown=LINUX_SCRIPT,
        )
    if system == "Darwin":
        steps = (
            f"download {MACOS_APP}, open it and move Ollama to Applications",
            "or, with Homebrew: brew install ollama",
        )
        return InstallPlan("macOS", steps, ["brew", "install", "ollama"] if has_brew else None)
    if system == "Windows":
        return InstallPlan("Windows", (f"download and run {WINDOWS_INSTALLER}",), None)
    return InstallPlan(system or "this system", (f"see {DOWNLOAD_PAGE}",), None)


def plan_for_this_system() -> InstallPlan:
    return plan_for(platform.system(), has_brew=shutil.which("brew") is not None)


def run(plan: InstallPlan) -> int:
    """Run the plan's command in the foreground (it may ask for a sudo password); its exit
    status (that of the first step that failed)."""
    if plan.command is None:
        raise ValueError(f"no command to run on {plan.system}")
    return subprocess.run(plan.command, check=False).returncode


def installed() -> str | None:
    """Where ``ollama`` is on PATH, if it is."""
    return shutil.which("ollama")
