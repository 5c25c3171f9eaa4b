"""Debian's Chromium, headless, driven by its chromedriver (Selenium), as the dashboard's
browser tests and docs/screenshot.py start it. No browser is ever downloaded.

Usage::

    found = find()          # None: chromium or chromedriver is not installed (MISSING)
    driver = start(*found, profile=tmp_path / "chromium-profile")
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

__all__ = ["FLAGS", "MISSING", "find", "start"]

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)
MISSING = (
    "needs chromium and chromedriver (Debian packages chromium, chromium-driver;"
    " .ci/run installs them)"
)


def find() -> tuple[str, str] | None:
    """The paths of ``chromium`` and ``chromedriver``, or None if either is missing."""
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    return None if chromium is None or chromedriver is None else (chromium, chromedriver)


def start(chromium: str, chromedriver: str, *, profile: Path, width: int = 1400) -> Any:
    """Headless Chromium with a profile of its own in ``profile``, a window ``width``
    pixels wide, keeping the pages' console log (``get_log("browser")``)."""
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*FLAGS, f"--window-size={width},1000", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(
        options=options, service=webdriver.ChromeService(executable_path=chromedriver)
    )
    driver.set_page_load_timeout(60)
    return driver
