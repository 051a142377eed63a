"""report.html renders in headless Chromium, offline, without console errors.

Saves full-page screenshots under tests/artifacts/ (git-ignored) for a human to look at.
Skipped only when chromium or chromedriver is absent.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from analysis.report import build_report
from browser import chrome
from synthetic import make_run

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # a browser per test: seconds each

ARTIFACTS = Path(__file__).parent / "artifacts"


@pytest.fixture()
def driver(tmp_path):
    d = chrome(tmp_path, window="1280,900", console_logs=True)
    d.set_page_load_timeout(60)
    try:
        yield d
    finally:
        d.quit()


def _render(driver, html: Path, shot: Path) -> dict:
    driver.get(html.resolve().as_uri())
    deadline = time.time() + 20
    while time.time() < deadline and driver.execute_script("return document.readyState") != "complete":
        time.sleep(0.1)
    info = driver.execute_script("""
        const imgs = Array.from(document.images);
        return {
          title: document.title,
          height: document.documentElement.scrollHeight,
          images: imgs.length,
          broken: imgs.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt),
          verdict: (document.querySelector('#verdict .big') || {}).textContent,
          resources: performance.getEntriesByType('resource').map(r => r.name).filter(n => !n.startsWith('data:')),
        };""")
    driver.set_window_size(1280, min(int(info["height"]) + 40, 16000))
    time.sleep(0.3)
    ARTIFACTS.mkdir(exist_ok=True)
    assert driver.save_screenshot(str(shot))
    info["logs"] = driver.get_log("browser")
    return info


def test_report_renders_without_console_errors(driver, tmp_path):
    slo = [{"expr": "respond.p95 < 800ms", "scope": "all", "observed": 512.3, "threshold": 800.0, "unit": "ms", "passed": True}]
    make_run(tmp_path / "base", rows=20_000, variants=["a", "b"], seed=2)
    make_run(tmp_path / "run", rows=20_000, variants=["a", "b"], variant_factor={"b": 1.2}, slo=slo, seed=3)
    html = build_report(tmp_path / "run", baseline=tmp_path / "base")
    shot = ARTIFACTS / "report.png"
    info = _render(driver, html, shot)
    assert [e for e in info["logs"] if e.get("level") == "SEVERE"] == []
    assert info["resources"] == []  # nothing fetched from anywhere
    assert info["title"].startswith("Load test report")
    assert info["verdict"].strip() == "PASS"
    assert info["images"] >= 5 and info["broken"] == []
    assert shot.stat().st_size > 50_000


def test_interrupted_run_without_slos_renders(driver, tmp_path):
    make_run(tmp_path / "run", rows=5_000, regions={"uk": (5.0, 0.4)}, status="interrupted", error_rate=0.2, seed=4)
    html = build_report(tmp_path / "run")
    info = _render(driver, html, ARTIFACTS / "report-interrupted.png")
    assert [e for e in info["logs"] if e.get("level") == "SEVERE"] == []
    assert info["verdict"].strip() == "NO SLOs" and info["broken"] == []
    assert "Interrupted run" in driver.page_source
