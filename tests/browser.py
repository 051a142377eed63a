"""Headless Chromium for the browser tests (the report page, the web UI): one finder, one setup.

driver = chrome(tmp_path, window="1280,900")     # skips the test when no browser is here
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest


def _find(*candidates: str) -> str | None:
    for c in candidates:
        path = c if os.path.isabs(c) else shutil.which(c)
        if path and os.path.exists(path) and os.access(path, os.X_OK):
            return path
    return None


CHROMIUM = _find("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome")
CHROMEDRIVER = _find("/usr/bin/chromedriver", "chromedriver")


def require_browser() -> None:
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("headless browser test: chromium and/or chromedriver not found (install Debian's chromium and chromium-driver)")


def chrome(tmp_path: Path, window: str = "1280,900", downloads: Path | None = None, console_logs: bool = False):
    """A headless Chromium WebDriver with the flags this machine needs (no background network)."""
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--window-size={window}",
    ):
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-', dir=tmp_path)}")
    if console_logs:
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    if downloads is not None:
        options.add_experimental_option("prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    if downloads is not None:
        driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    return driver
