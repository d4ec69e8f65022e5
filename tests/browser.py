"""Headless Debian Chromium for the report check. Installed with apt-get when missing and
we are root (CI machines start without it); under CI its absence fails, elsewhere it
skips with the reason."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]


def chromium() -> str:
    found = shutil.which("chromium")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "chromium"], env=env,
                                 capture_output=True, text=True, timeout=900)
        if install.returncode != 0:  # stale package lists on a fresh machine
            subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=900)
            subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "chromium"], env=env,
                           capture_output=True, timeout=900)
        found = shutil.which("chromium")
    if found is None:
        reason = "Debian chromium is not installed and cannot be (needs root and apt-get)"
        if os.environ.get("CI"):
            pytest.fail(f"under CI the browser check must run: {reason}")
        pytest.skip(reason)
    return found


def render(html: Path, out_dir: Path, width: int = 1280, height: int = 2400) -> tuple[Path, str]:
    """(screenshot PNG, DOM after rendering) of a local HTML file."""
    binary = chromium()
    profile = out_dir / "chromium-profile"
    common = [binary, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"]
    shot = out_dir / "report.png"
    subprocess.run([*common, f"--screenshot={shot}", html.resolve().as_uri()], capture_output=True, timeout=180,
                   check=True)
    dom = subprocess.run([*common, "--dump-dom", html.resolve().as_uri()], capture_output=True, text=True,
                         timeout=180, check=True).stdout
    return shot, dom
