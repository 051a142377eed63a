"""Headless CI runs: SLO exit codes and files, the open model, distributed workers."""

import re
import xml.etree.ElementTree as ET
from collections import Counter

import numpy as np
import pytest

from loadtest.mock import MockConfig, MockServer
from runs import FAST, loadtest, read_csv, read_rows, run_json

pytestmark = pytest.mark.slow


def test_impossible_slo_exits_1_with_a_junit_failure_and_lenient_ones_pass(tmp_path, monkeypatch):
    summary = tmp_path / "step-summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    proc = loadtest(
        "run",
        "--duration",
        "5s",
        "--users",
        "6",
        "--regions",
        "uk,eu",
        *FAST,
        "--mock-latency-scale",
        "0.2",
        "--out",
        str(tmp_path / "r"),
        "--slo",
        "respond.p95 < 1ms",
        "--slo",
        "error_rate < 5%",
        "--slo",
        "uk.create.p99 < 10s",
    )
    assert proc.returncode == 1, proc.stderr
    run_dir = (tmp_path / "r" / "latest").resolve()
    suite = ET.parse(run_dir / "junit.xml").getroot().find("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == 3
    failed = [c.get("name") for c in cases if c.find("failure") is not None]
    assert failed == ["respond.p95 < 1ms"]
    assert "respond.p95 < 1ms" in (run_dir / "slo.md").read_text()
    assert "respond.p95 < 1ms" in summary.read_text()  # appended for GitHub's job summary
    html = (run_dir / "report.html").read_text()
    assert "respond.p95 &lt; 1ms" in html or "respond.p95 < 1ms" in html

    lenient = loadtest(
        "run",
        "--duration",
        "4s",
        "--users",
        "4",
        "--regions",
        "uk",
        *FAST,
        "--mock-latency-scale",
        "0.2",
        "--out",
        str(tmp_path / "ok"),
        "--slo",
        "respond.p95 < 5s",
        "--slo",
        "error_rate < 1%",
    )
    assert lenient.returncode == 0, lenient.stderr
    ok_dir = (tmp_path / "ok" / "latest").resolve()
    assert all(c.find("failure") is None for c in ET.parse(ok_dir / "junit.xml").getroot().iter("testcase"))


def test_scenario_file_drives_a_run(tmp_path):
    scenario = tmp_path / "ci.toml"
    scenario.write_text(
        'regions = ["uk"]\nvariants = ["b"]\nusers = 3\nduration = "4s"\nthink_time = "0.1"\n'
        'slos = ["error_rate < 1%"]\n'
        'integration_attributes = { tier = "gold", crm_id = 42 }\n'
    )
    # a mock outside the run: its counters tell what the service received
    with MockServer(MockConfig(latency_scale=0.2), regions=["uk"]) as mock:
        proc = loadtest("run", "--config", str(scenario), "--base-urls", f"uk={mock.base_urls['uk']}", "--out", str(tmp_path / "r"))
        received = mock.stats("uk")["integration_attributes"]
    assert proc.returncode == 0, proc.stderr
    run_dir = (tmp_path / "r" / "latest").resolve()
    rows = read_rows(run_dir)
    assert {r["region"] for r in rows} == {"uk"} and {r["variant"] for r in rows} == {"b"}
    assert run_json(run_dir)["config"]["integration_attributes"] == {"tier": "gold", "crm_id": 42}
    creates = sum(r["endpoint"] == "create" and r["ok"] == "1" for r in rows)
    assert creates > 0 and received == {"conversations": creates, "pairs": {"tier=gold": creates, "crm_id=42": creates}}


def test_open_model_keeps_its_offered_rate_when_the_mock_slows_down(tmp_path):
    # The mock answers respond in seconds (latency x8): a closed model would slow down with
    # it; the open model still starts 6 conversations a second on schedule.
    rate, duration = 6.0, 8
    proc = loadtest(
        "run",
        "--duration",
        f"{duration}s",
        "--users",
        "80",
        "--regions",
        "uk,eu",
        "--arrival-rate",
        str(rate),
        "--arrival",
        "constant",
        "--think-time",
        "0.1",
        "--turns",
        "2",
        "--mock-latency-scale",
        "8",
        "--stop-timeout",
        "1s",
        "--spawn-rate",
        "100",
        "--out",
        str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    run_dir = (tmp_path / "latest").resolve()
    arrivals = read_csv(run_dir / "arrivals.csv")
    planned = np.array([float(a["planned"]) for a in arrivals])
    window = planned[(planned > planned.min() + 1) & (planned < planned.min() + duration - 3)]
    offered = len(window) / (duration - 4)
    assert offered == pytest.approx(rate, rel=0.2)
    started = [a for a in arrivals if a["dropped"] == "0"]
    assert len(started) >= 0.9 * len(arrivals)  # 80 users are enough: nothing much dropped
    lags = np.array([float(a["lag_ms"]) for a in started])
    assert Counter(a["region"] for a in arrivals).keys() == {"uk", "eu"}
    # The mock was slow: responds took far longer than the arrival gap.
    responds = [float(r["response_time_ms"]) for r in read_rows(run_dir) if r["endpoint"] == "respond"]
    assert np.median(responds) > 1000
    # Conversations start on their schedule, not after the slow replies (a closed model's
    # start lag would be a whole respond time): an ordering, not a bound on a shared CPU.
    assert np.percentile(lags, 95) < 0.1 * np.median(responds)


def test_two_local_workers_merge_without_lost_or_duplicated_rows(tmp_path):
    proc = loadtest(
        "run", "--duration", "6s", "--users", "8", "--processes", "2", "--regions", "uk,eu", *FAST, "--mock-latency-scale", "0.2", "--out", str(tmp_path)
    )
    assert proc.returncode == 0, proc.stderr
    run_dir = (tmp_path / "latest").resolve()
    # The workers' rows travel to the master: one requests.csv, told apart by the worker column.
    assert sorted(p.name for p in run_dir.glob("requests*.csv")) == ["requests.csv"]
    rows = read_rows(run_dir)
    keys = [(r["conversation_id"], r["endpoint"], r["turn"]) for r in rows]
    assert len(keys) == len(set(keys)), "duplicated rows"
    # Locust's own count (aggregated over workers by the master) equals our merged rows.
    aggregated = [r for r in read_csv(run_dir / "locust_stats.csv") if r["Name"] == "Aggregated"][0]
    assert int(aggregated["Request Count"]) == len(rows)
    assert {r["worker"] for r in rows} == {"worker0", "worker1"}
    accounts = run_json(run_dir)["worker_rows"]
    for worker in ("worker0", "worker1"):  # produced = received = rows in the folder
        mine = sum(r["worker"] == worker for r in rows)
        assert accounts[worker]["produced"]["requests"] == accounts[worker]["received"]["requests"] == mine
        assert accounts[worker]["complete"] and not accounts[worker]["dropped"]
    summary = read_csv(run_dir / "summary.csv")
    assert sum(int(s["count"]) for s in summary) == len(rows)
    assert run_json(run_dir)["mock_open_conversations"] == {"us": 0, "uk": 0, "eu": 0, "self-serve": 0}


def test_a_shape_drives_the_users_and_ends_the_run_by_itself(tmp_path):
    proc = loadtest("run", "--shape", "steps:start=2,step=2,every=2s,max=6", "--regions", "uk", *FAST, "--mock-latency-scale", "0.2", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    run_dir = (tmp_path / "latest").resolve()
    history = read_csv(run_dir / "locust_stats_history.csv")
    users = [int(h["User Count"]) for h in history if h["Name"] == "Aggregated"]
    assert max(users) == 6 and 2 in users and 4 in users
    info = run_json(run_dir)
    assert info["status"] == "completed" and info["mock_open_conversations"]["uk"] == 0
    assert 5 < info["ended"] - info["started"] < 20


def test_open_model_report_shows_offered_vs_achieved(tmp_path):
    proc = loadtest(
        "run",
        "--duration",
        "5s",
        "--users",
        "4",
        "--regions",
        "uk",
        "--arrival-rate",
        "20",
        "--arrival",
        "constant",
        "--think-time",
        "0.1",
        "--turns",
        "3",
        "--mock-latency-scale",
        "0.5",
        "--out",
        str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    run_dir = (tmp_path / "latest").resolve()
    arrivals = read_csv(run_dir / "arrivals.csv")
    dropped = sum(a["dropped"] == "1" for a in arrivals)
    assert dropped > 0  # 4 users cannot hold 20 new conversations a second of ~1 s each
    html = (run_dir / "report.html").read_text()
    table = html[html.index('<h3 id="arrivals">Open model: offered vs achieved') :]
    table = table[: table.index("</table>")]
    cells = {}
    for tr in re.findall(r"<tr[^>]*>(.*?)</tr>", table, re.S)[1:]:  # after the header
        row = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", tr, re.S)]
        cells[row[0]] = row
    assert set(cells) == {"uk", "all"} and cells["uk"][1:] == cells["all"][1:]
    planned, offered, achieved, dropped_cell = cells["uk"][1:5]
    assert int(planned.replace(",", "")) == len(arrivals)
    count, share = re.fullmatch(r"([\d,]+) \(([\d.]+)%\)", dropped_cell).groups()
    assert int(count.replace(",", "")) == dropped
    assert float(share) == pytest.approx(100 * dropped / len(arrivals), abs=0.05)
    assert float(achieved) / float(offered) == pytest.approx(1 - dropped / len(arrivals), abs=0.02)


def test_abort_on_fail_stops_a_failing_run_early_and_says_why(tmp_path):
    import time

    t0 = time.monotonic()
    proc = loadtest(
        "run",
        "--abort-on-fail",
        "--abort-grace",
        "5s",
        "--slo",
        "error_rate < 1%",
        "--fault",
        "*:503:0.3",
        "--duration",
        "90s",
        "--users",
        "6",
        "--regions",
        "uk,eu",
        *FAST,
        "--mock-latency-scale",
        "0.2",
        "--out",
        str(tmp_path / "r"),
    )
    elapsed = time.monotonic() - t0
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert elapsed < 60, f"took {elapsed:.0f} s: not stopped early\n{proc.stdout}\n{proc.stderr}"
    run_dir = (tmp_path / "r" / "latest").resolve()
    meta = run_json(run_dir)
    assert meta["status"] == "aborted" and meta["exit_code"] == 1
    breach = meta["abort"]
    assert breach["expr"] == "error_rate < 1%" and breach["observed"] > 0.01
    assert 5 <= breach["after_s"] < 40  # not before the grace; well before the 90 s
    assert meta["ended"] - meta["started"] < 50
    assert "error_rate < 1% breached" in proc.stderr
    # Stopped gracefully: every conversation that was created got its close request.
    rows = read_rows(run_dir)
    created = {r["conversation_id"] for r in rows if r["endpoint"] == "create" and r["ok"] == "1"}
    closes = {r["conversation_id"] for r in rows if r["endpoint"] == "close"}
    assert created and created <= closes
    # The report and the summary name the SLO that aborted the run, and when.
    html = (run_dir / "report.html").read_text()
    assert "Aborted by SLO error_rate &lt; 1%" in html
    assert f"{round(breach['after_s'])} s into the run" in html
    assert "by SLO `error_rate < 1%`" in (run_dir / "summary.md").read_text()
