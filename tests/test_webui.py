"""`loadtest ui` end to end, in headless Chromium.

Starts `loadtest ui` as a child process (the mock + Locust's web UI on free loopback ports;
importing locust here would monkey-patch the test process), then drives the browser like a
user: fill the start form (2 regions, 2 variants, 5 users, short think time), start, watch
the Regions tab fill with numbers, stop, check the mock holds no open conversation, follow the
report link, download requests.csv, start a second test (a second run folder), then Ctrl-C.

Screenshots land in tests/artifacts/ (git-ignored). With LOADTEST_UPDATE_DOCS_SCREENSHOT=1
the Regions tab is also saved as docs/webui.png for the README.

Needs /usr/bin/chromium (or chromium/google-chrome on PATH) and chromedriver; skipped
without them.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from analysis.stats import percentiles
from browser import chrome, require_browser
from runs import until, wait_for_rows
from loadtest import config
from analysis import records


ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
DOCS_SCREENSHOT = ROOT / "docs" / "webui.png"
UI_CMD = [sys.executable, "-m", "loadtest", "ui"]
SECRET_KEY, SECRET_TOKEN = "uitest-key-4b1d9e57", "uitest-token-8c2f7a31"  # the mock accepts these
REGIONS, VARIANTS = ("us", "uk"), ("a", "b")
WAIT_S = 25.0


def _until(condition, timeout: float = WAIT_S, what: str = "condition"):
    # stale elements while React re-renders count as not yet
    return until(condition, timeout, 0.25, what=what, ignore=(Exception,))


@pytest.fixture
def ui(tmp_path):
    """`loadtest ui` on free ports; yields its ready-file info; Ctrl-C at the end."""
    require_browser()  # nothing to start when the browser test will skip anyway
    ready = tmp_path / "ui-ready.json"
    log_path = tmp_path / "ui.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POLYAI_", "LOADTEST_"))}
    env.update(POLYAI_API_KEY=SECRET_KEY, POLYAI_TOKEN=SECRET_TOKEN)
    cmd = UI_CMD + ["--out", str(tmp_path / "reports"), "--ready-file", str(ready), "--mock-latency-scale", "0.3"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    info = {"proc": proc, "log": log_path, "out": tmp_path / "reports"}
    try:
        _until(lambda: ready.exists() or proc.poll() is not None, 40, what="loadtest ui to start")
        assert proc.poll() is None, f"loadtest ui exited with {proc.returncode}:\n{log_path.read_text()}"
        info.update(json.loads(ready.read_text()))
        info["out"] = Path(info["out"])
        yield info
        proc.send_signal(signal.SIGINT)  # Ctrl-C: Locust stops, then the mock
        assert proc.wait(timeout=30) == 0, log_path.read_text()
        for url in info["mock"].values():
            with pytest.raises(httpx.HTTPError):
                httpx.get(url + "/_mock/stats", timeout=1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copy(log_path, ARTIFACTS / "webui-ui.log")


@pytest.fixture
def browser(tmp_path):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver = chrome(tmp_path, window="1400,1250", downloads=downloads)
    driver.downloads = downloads
    try:
        yield driver
    finally:
        driver.quit()


# ---- page helpers ----------------------------------------------------------------------------


def _by_text(driver, text: str, tag: str = "*"):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.XPATH, f"//{tag}[normalize-space()={json.dumps(text)}]")


def _fill(driver, name: str, value: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    field = driver.find_element(By.NAME, name)
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(Keys.DELETE)
    field.send_keys(value)
    assert field.get_attribute("value") == value


def _open_tab(driver, title: str) -> None:
    _until(lambda: _by_text(driver, title, "button").click() or True, what=f"the {title} tab")


def _table(driver) -> list[dict[str, str]]:
    from selenium.webdriver.common.by import By

    table = driver.find_element(By.CSS_SELECTOR, "table")
    heads = [th.text.strip() for th in table.find_elements(By.CSS_SELECTOR, "thead th")]
    return [dict(zip(heads, (td.text.strip() for td in tr.find_elements(By.CSS_SELECTOR, "td")))) for tr in table.find_elements(By.CSS_SELECTOR, "tbody tr")]


def _number(text: str) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _regions_filled(driver) -> list[dict] | None:
    rows = _table(driver)
    live = {
        r["Region"]
        for r in rows
        if r.get("Variant") == "all"
        and r.get("Endpoint") == "respond"
        and _number(r.get("p50 ms"))
        and _number(r.get("p95 ms"))
        and _number(r.get("p99 ms"))
        and _number(r.get("Req/s (last 10 s)"))
    }
    variants = {r["Variant"] for r in rows if r.get("Region") == "all" and _number(r.get("p95 ms"))}
    return rows if live >= set(REGIONS) and variants >= set(VARIANTS) else None


def _chart_lines(driver, view: str) -> dict[tuple[str, str], int] | None:
    """{(series, p50|p95): points drawn} of the Regions tab's live chart in `view`, if drawn."""
    from selenium.webdriver.common.by import By

    svg = driver.find_element(By.CSS_SELECTOR, "#loadtest-region-chart svg")
    if svg.get_attribute("data-view") != view:
        return None
    return {
        (p.get_attribute("data-series"), p.get_attribute("data-q")): int(p.get_attribute("data-drawn"))
        for p in svg.find_elements(By.CSS_SELECTOR, "path[data-series]")
    }


def _colour_pixels(png: bytes, hex_colour: str, tolerance: int = 40) -> int:
    """How many pixels of a screenshot are close to a colour (anti-aliasing blurs edges)."""
    import matplotlib.image

    rgb = (matplotlib.image.imread(io.BytesIO(png), format="png")[..., :3] * 255).astype(int)
    target = [int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)]
    return int((abs(rgb - target).max(axis=-1) <= tolerance).sum())


def _check_live_chart(driver, info) -> None:
    """The chart above the Regions table draws one p50 and one p95 line per region, then per variant."""
    from selenium.webdriver.common.by import By

    from analysis.colours import region_colours, variant_colours

    lines = _until(
        lambda: (got := _chart_lines(driver, "region")) and all(got.get((r, q), 0) >= 2 for r in REGIONS for q in ("p50", "p95")) and got,
        what="the live chart to draw two points per region",
    )
    assert {name for name, _ in lines} == set(REGIONS)  # regions only, no variant mixed in
    box = driver.find_element(By.ID, "loadtest-region-chart")
    table = driver.find_element(By.CSS_SELECTOR, "table")
    assert box.location["y"] < table.location["y"]  # in the tab, above its table
    png = box.screenshot_as_png
    (ARTIFACTS / "webui-region-chart.png").write_bytes(png)
    colours = region_colours(list(REGIONS))
    for region in REGIONS:  # the lines are on the screen, in each region's report colour
        assert _colour_pixels(png, colours[region]) > 100, f"no {region} line in the chart screenshot"
    # The history behind it: the same series, percentiles of the live window.
    history = httpx.get(info["url"].rstrip("/") + "/loadtest/history.json", timeout=10).json()
    assert set(history["region"]) == set(REGIONS) and set(history["variant"]) == set(VARIANTS)
    assert len(history["times"]) >= 2
    for region in REGIONS:
        p50, p95 = history["region"][region]["p50"], history["region"][region]["p95"]
        assert all(a <= b for a, b in zip(p50, p95) if a is not None and b is not None)
    _by_text(driver, "By variant", "button").click()
    lines = _until(lambda: _chart_lines(driver, "variant"), what="the variant view")
    assert {name for name, _ in lines} == set(VARIANTS)
    png = driver.find_element(By.ID, "loadtest-region-chart").screenshot_as_png
    (ARTIFACTS / "webui-variant-chart.png").write_bytes(png)
    for variant, colour in variant_colours(list(VARIANTS)).items():
        assert _colour_pixels(png, colour) > 100, f"no variant {variant} line in the chart screenshot"
    _by_text(driver, "By region", "button").click()


def _state(driver) -> str:
    return _by_text(driver, "Status").find_element("xpath", "following-sibling::*[1]").text.strip().lower()


def _open_conversations(info) -> dict[str, int]:
    return {r: httpx.get(u + "/_mock/stats", timeout=5).json()["open_conversations"] for r, u in info["mock"].items()}


def _shot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    return path


def _start_test(driver, think_time: str = "0.1-0.3") -> None:
    _until(lambda: _by_text(driver, "Custom parameters").click() or True, what="the start form")
    _fill(driver, "userCount", "5")
    _fill(driver, "spawnRate", "5")
    _fill(driver, "regions", ",".join(REGIONS))
    _fill(driver, "variants", ",".join(VARIANTS))
    _fill(driver, "thinkTime", think_time)
    _fill(driver, "turns", "2-4")
    _shot(driver, "webui-form.png")
    _by_text(driver, "Start", "button").click()
    _until(lambda: _state(driver) in ("running", "spawning"), what="the test to start")


def _stop_test(driver, info) -> None:
    _by_text(driver, "Stop", "button").click()
    _until(lambda: _state(driver) == "stopped", what="the test to stop")
    assert _until(lambda: sum(_open_conversations(info).values()) == 0 or None, 10, what="the mock to hold no open conversation") is True


# ---- the test --------------------------------------------------------------------------------


@pytest.mark.slow  # real load through the UI: deselect with -m "not slow"
@pytest.mark.browser
@pytest.mark.timeout(150)
def test_web_ui_runs_a_test_end_to_end(ui, browser):
    t0 = time.monotonic()
    driver = browser
    driver.get(ui["url"])

    # The start form shows every custom parameter with the mock's base URLs; no secret.
    _until(lambda: _by_text(driver, "Custom parameters"), what="the start form")
    page = httpx.get(ui["url"], timeout=10).text
    assert SECRET_KEY not in page and SECRET_TOKEN not in page
    for url in ui["mock"].values():
        assert url in page  # --base-urls of the started mock, in the form
    _start_test(driver)
    assert SECRET_KEY not in driver.page_source

    # Regions tab: both regions and both variants with live percentiles and throughput.
    _open_tab(driver, "Regions")
    rows = _until(lambda: _regions_filled(driver), what="the Regions tab to show both regions")
    assert {r["Endpoint"] for r in rows} >= {"create", "respond", "close", "all"}
    _check_live_chart(driver, ui)
    _shot(driver, "webui-regions.png")
    if os.environ.get("LOADTEST_UPDATE_DOCS_SCREENSHOT"):
        time.sleep(4)  # let the header's RPS and the windows fill
        DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
        driver.save_screenshot(str(DOCS_SCREENSHOT))
    _open_tab(driver, "Conversations")
    conv = _until(lambda: [r for r in _table(driver) if int(r.get("Completed") or 0) > 0], what="completed conversations")[0]
    # 5 users, each in at most one conversation, hardly ever between two (0.1-0.3 s think time
    # inside one); every completed conversation ended one of the known ways.
    assert 1 <= int(conv["Active"]) <= 5, conv
    assert int(conv["Completed"]) == sum(int(conv[f"Ended by {e}"]) for e in records.ENDED_BY), conv
    _shot(driver, "webui-conversations.png")

    # Stop: users close their conversations, the CSVs are finalised.
    _stop_test(driver, ui)
    run_dirs = sorted(p for p in ui["out"].iterdir() if p.is_dir() and not p.is_symlink())
    assert len(run_dirs) == 1
    run_dir = run_dirs[0]
    meta = json.loads((run_dir / records.RUN_JSON).read_text())
    assert meta["status"] == "completed" and meta["ended"]
    _open_tab(driver, "Conversations")
    conv = _until(lambda: _table(driver), what="the Conversations table")[0]
    assert conv["Active"] == "0"

    # requests.csv, downloaded by the browser from the Download Data tab.
    _open_tab(driver, "Download Data")
    _by_text(driver, "requests.csv of the current or last run (one row per request)", "a").click()
    downloaded = _until(lambda: [p for p in driver.downloads.glob("*requests.csv")], 15, what="the requests.csv download")[0]
    text = downloaded.read_text()
    assert SECRET_KEY not in text and SECRET_TOKEN not in text
    reader = csv.DictReader(io.StringIO(text))
    assert tuple(reader.fieldnames) == records.REQUEST_COLUMNS
    got = list(reader)
    assert len(got) == len(list(csv.DictReader(open(run_dir / records.REQUESTS_CSV))))
    assert {r["region"] for r in got} == set(REGIONS)
    assert {r["variant"] for r in got} == set(VARIANTS)
    assert {r["endpoint"] for r in got} == {"create", "respond", "close"}
    assert sum(r["ok"] == "1" for r in got) == len(got)
    created = {r["conversation_id"] for r in got if r["endpoint"] == "create"}
    closed = {r["conversation_id"] for r in got if r["endpoint"] == "close"}
    assert created and created == closed  # every conversation was closed, including on Stop

    # A second test in the same session opens a second run folder.
    driver.get(ui["url"])
    _until(lambda: _by_text(driver, "New", "button").click() or True, what="the New button")
    _start_test(driver)
    _until(lambda: len([p for p in ui["out"].iterdir() if p.is_dir() and not p.is_symlink()]) == 2, what="a second run folder")
    second = sorted(p for p in ui["out"].iterdir() if p.is_dir() and not p.is_symlink())[-1]
    assert wait_for_rows(second / records.REQUESTS_CSV, 3), "the second test recorded no requests"
    _stop_test(driver, ui)
    assert second != run_dir
    assert json.loads((second / records.RUN_JSON).read_text())["status"] == "completed"
    assert (ui["out"] / "latest").resolve() == second.resolve()

    # The report link builds and shows the HTML report of the last run.
    _open_tab(driver, "Download Data")
    _by_text(driver, "Load test report (HTML) of the current or last run", "a").click()
    _until(lambda: "/loadtest/" in driver.current_url and driver.execute_script("return document.readyState") == "complete", 90, what="the report page")
    _shot(driver, "webui-report.png")
    assert driver.current_url.endswith(f"/loadtest/runs/{second.name}/report.html"), driver.find_element("tag name", "body").text[:2000]
    assert (second / records.REPORT_HTML).exists()
    body = driver.find_element("tag name", "body").text
    assert "Load test report" in body and all(region in body for region in REGIONS)

    assert time.monotonic() - t0 < 90, "the browser test must stay under 90 s"


# ---- without a browser: the pieces -----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.timeout(120)
def test_a_stop_that_takes_a_while_still_ends_as_stopped_on_the_page(ui, browser):
    """Users stopped mid-conversation finish it first (think, then close): with 3-4 s of think
    time the stop lasts seconds, so the page polls while Locust says "cleanup". Locust's page
    polls only while it believes the test is spawning or running: told "cleanup", it stopped
    polling and showed it for ever (the end-to-end test above failed so, now and then)."""
    browser.get(ui["url"])
    _start_test(browser, think_time="3-4")
    _until(lambda: sum(_open_conversations(ui).values()) >= 3 or None, 30, what="conversations to open")
    t0 = time.monotonic()
    _stop_test(browser, ui)
    assert time.monotonic() - t0 > 2  # the stop did last across a poll of the page (every 2 s)


def test_regions_tab_pools_samples_per_region_and_variant():
    from loadtest.inlocust.live import LiveStats
    from loadtest.inlocust.webui import conversation_rows, region_rows

    live, now = LiveStats(), time.time()
    values = {("us", "a"): [10, 20, 30], ("us", "b"): [40, 50], ("uk", "a"): [5, 500]}
    for (region, variant), times in values.items():
        for t in times:
            live.add_request(region, variant, "respond", t, True, now)
    live.add_request("uk", "b", "respond", 1, False, now)
    live.add_conversation("handoff")
    snap = live.snapshot(now)
    rows = region_rows(live, snap)
    assert [(r["region"], r["variant"], r["endpoint"]) for r in rows] == [
        ("us", "all", "respond"),
        ("us", "all", "all"),
        ("uk", "all", "respond"),
        ("uk", "all", "all"),
        ("all", "a", "respond"),
        ("all", "a", "all"),
        ("all", "b", "respond"),
        ("all", "b", "all"),
    ]
    assert [r["name"] for r in rows] == sorted(r["name"] for r in rows)  # the UI sorts by name
    us = rows[0]
    assert (us["count"], us["failures"]) == (5, 0)
    assert us["p95"] == round(float(percentiles([10, 20, 30, 40, 50], [95])[0]), 1)
    uk = rows[2]
    assert (uk["count"], uk["failures"], uk["error_pct"]) == (3, 1, 33.33)
    assert conversation_rows(snap)[0]["ended_by_handoff"] == 1

    plain = LiveStats()
    plain.add_request("eu", "", "create", 12, True, now)
    assert {r["variant"] for r in region_rows(plain, plain.snapshot(now))} == {"all"}


def test_csv_download_keeps_complete_rows_and_one_header(tmp_path):
    from loadtest.inlocust.webui import complete_csv_rows

    a, b = tmp_path / "requests-worker1.csv", tmp_path / "requests-worker2.csv"
    a.write_bytes(b"h1,h2\r\n1,2\r\n3,4\r\n")
    b.write_bytes(b"h1,h2\r\n5,6\r\n7,")  # still being written
    assert b"".join(complete_csv_rows([a, b])) == b"h1,h2\r\n1,2\r\n3,4\r\n5,6\r\n"


def test_csv_download_never_ends_inside_a_multi_line_error_field(tmp_path, monkeypatch):
    """A quoted error field holds line ends; the download cuts only at real row ends."""
    import csv
    import io

    from loadtest.inlocust import webui

    rows = [["timestamp", "ok", "error"], ["1.0", "1", ""], ["2.0", "0", 'upstream said:\nline two,\n"quoted"\nline four'], ["3.0", "1", ""]]
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    done = buf.getvalue().encode()
    f = tmp_path / "requests.csv"
    # The run is still writing a second multi-line error: the file ends inside its quotes.
    f.write_bytes(done + b'4.0,0,"timeout after\nretry\n')
    for chunk in (7, 16, 1 << 16):  # chunk boundaries inside and outside the quoted field
        monkeypatch.setattr(webui, "CSV_CHUNK", chunk)
        got = b"".join(webui.complete_csv_rows([f]))
        assert got == done, chunk
        assert list(csv.reader(io.StringIO(got.decode()))) == rows


def test_ui_passes_the_mock_and_every_setting_to_the_form(monkeypatch):
    from loadtest.commands import ui

    monkeypatch.setenv("POLYAI_API_KEY", SECRET_KEY)
    scenario = config.resolve(flags={"regions": "us,uk"}, environ={})
    mock = {"us": "http://127.0.0.1:4001", "uk": "http://127.0.0.1:4002", "eu": "http://127.0.0.1:4003"}
    cmd = ui.locust_command(scenario, ui.form_base_urls(scenario, mock), 8089)
    args = dict(zip(cmd[::1], cmd[1:]))
    assert args["--web-host"] == "127.0.0.1" and args["--web-port"] == "8089"
    assert args["--base-urls"] == ",".join(f"{r}={u}" for r, u in mock.items())
    assert args["--regions"] == "us,uk" and args["--variants"] == "a,b"
    assert args["--think-time"] == "0.5-1.5" and args["--request-timeout"] == "10s"
    assert float(args["--stop-timeout"]) >= 2 * scenario.request_timeout
    assert "--run-time" not in args and "--headless" not in cmd
    assert all(s.flag in args for s in config.SETTINGS if s.locust)
    assert SECRET_KEY not in " ".join(cmd)
    timed = config.resolve(flags={"duration": "30s", "stop_timeout": "5s"}, environ={})
    args = dict(zip(ui.locust_command(timed, {}, 1), ui.locust_command(timed, {}, 1)[1:]))
    assert args["--run-time"] == "30s" and args["--stop-timeout"] == "5"


def test_ui_is_a_loadtest_subcommand():
    from loadtest import cli
    from loadtest.commands import ui

    args = cli.build_parser().parse_args(["ui", "--web-port", "8123", "--regions", "us"])
    assert args.func is ui.ui_command and args.web_port == 8123 and args.regions == "us"


def test_a_mock_session_refuses_a_start_that_leaves_the_machine():
    from types import SimpleNamespace

    from loadtest.inlocust.webui import WebUIExtension

    run = SimpleNamespace(base_urls={"us": "https://api.us-1.platform.polyai.app"}, run_dir=Path("/nonexistent/run"))
    ext = WebUIExtension(SimpleNamespace(run=run))
    ext.allow_remote = False  # the UI was started for the mock
    env = SimpleNamespace(loadtest_run=run, runner=SimpleNamespace(stop=lambda: None))
    ext.on_test_start(env)
    assert env.loadtest_run is None and ext.runs == []  # users stop in on_start, no run listed
    run.base_urls = {"us": "http://127.0.0.1:4001"}
    env.loadtest_run = run
    ext.on_test_start(env)
    assert env.loadtest_run is run and ext.runs == [run.run_dir]


def _same(got: list, want: list) -> bool:
    """Series equal up to the live histograms' 3 significant digits (None is a gap)."""
    return len(got) == len(want) and all(
        (g is None and w is None) or (g is not None and w is not None and g == pytest.approx(w, rel=1e-3)) for g, w in zip(got, want)
    )


def test_live_history_pools_the_window_per_region_and_variant_over_time():
    import numpy as np

    from loadtest.inlocust.live import LiveHistory, LiveStats

    live, history, t0 = LiveStats(window_s=10), LiveHistory(), 1_000_000.0
    live.started = t0
    for i, v in enumerate([10, 20, 30, 40]):
        live.add_request("us", "a", "respond", v, True, t0 + i)
    live.add_request("us", "b", "respond", 400, True, t0 + 1)
    live.add_request("uk", "b", "respond", 90, True, t0 + 2)
    live.add_request("uk", "a", "create", 5000, True, t0 + 2)  # another endpoint: not charted
    history.sample(live, t0 + 5)
    us = np.percentile([10, 20, 30, 40, 400], [50, 95])
    assert _same(history.series["region"]["us"]["p50"], [us[0]])
    assert _same(history.series["region"]["us"]["p95"], [us[1]])
    assert _same(history.series["region"]["uk"]["p50"], [90.0])
    b = np.percentile([400, 90], [50, 95])
    assert _same(history.series["variant"]["b"]["p95"], [b[1]])
    # 11 s later only the new sample is in the window; uk has none: a gap, not a zero.
    live.add_request("us", "a", "respond", 7, True, t0 + 15)
    history.sample(live, t0 + 16)
    assert _same(history.series["region"]["us"]["p50"], [us[0], 7.0])
    assert _same(history.series["region"]["uk"]["p50"], [90.0, None])
    assert history.times == [t0 + 5, t0 + 16]
    # A variant first seen late is padded at the front; variant "" makes no variant series.
    live.add_request("eu", "c", "respond", 3, True, t0 + 17)
    live.add_request("eu", "", "respond", 4, True, t0 + 17)
    history.sample(live, t0 + 18)
    assert _same(history.series["variant"]["c"]["p50"], [None, None, 3.0])
    assert set(history.series["variant"]) == {"a", "b", "c"}


def test_live_history_stays_bounded_and_keeps_the_newest_point():
    from loadtest.inlocust.live import LiveHistory, LiveStats

    live, history = LiveStats(), LiveHistory(max_points=10)
    for i in range(100):
        live.add_request("us", "a", "respond", float(i), True, 1000.0 + i)
        history.sample(live, 1000.0 + i)
        assert len(history.times) <= 10
        assert history.times[-1] == 1000.0 + i
        assert len(history.series["region"]["us"]["p50"]) == len(history.times)
    assert history.times[0] < 1000.0 + 50  # the whole span, coarser, not only the last 10 s
