"""A real browser for the tests: Debian's headless Chromium, off the network.

`.ci/run` installs Chromium; tests that need it skip (or leave out their screenshot) when
it is missing. Screenshots are kept in ``test-artifacts/`` (git-ignored) to be looked at.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.helpers import REPO

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = REPO / "test-artifacts"
# Headless flags that keep Chromium off the network (this machine has none) and sandboxed
# in a fresh profile.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=20000"]


def browse(url: str, profile: Path, *extra: str) -> str:
    """Open a page in headless Chromium; return what it printed (the DOM with --dump-dom)."""
    out = subprocess.run([str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *extra, url],
                         capture_output=True, text=True, timeout=120)
    return out.stdout


def page_with(url: str, profile: Path, *needles: str, tries: int = 4,
              size: str = "1400,900") -> str:
    """Return the rendered page once it shows every needle (the UI loads data lazily).

    Tables render only the columns in the window: ``size`` ("width,height") widens it.
    """
    dom = ""
    for _ in range(tries):
        dom = browse(url, profile, "--dump-dom", f"--window-size={size}")
        if all(n in dom for n in needles):
            break
    return dom


def screenshot(url: str, profile: Path, name: str, size: str = "1400,900") -> Path:
    """Save a screenshot of a page as ``test-artifacts/<name>.png`` and return its path."""
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"{name}.png"
    shot.unlink(missing_ok=True)
    browse(url, profile, f"--window-size={size}", f"--screenshot={shot}")
    return shot
