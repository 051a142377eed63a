"""End to end: `loadtest run` against the embedded mock, as a user would run it.

One short real run (loopback, bounded users and time) is shared by the assertions below.
"""

import csv
import json
import os
import signal
import subprocess
import sys
from collections import defaultdict

import pytest

from analysis import records
from runs import loadtest, read_csv, wait_for_rows

pytestmark = pytest.mark.slow  # real load: deselect with -m "not slow"

SECRET_KEY = "sk-live-9f8e7d6c5b4a-secret"
SECRET_TOKEN = "tok-3c2b1a0f-very-secret"
REGIONS = ["us", "uk", "eu", "self-serve"]
VARIANTS = ["a", "b"]


def secret_env():
    env = dict(os.environ)
    env.update({"POLYAI_API_KEY": SECRET_KEY, "POLYAI_TOKEN": SECRET_TOKEN})
    return env


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("reports")
    proc = loadtest(
        "run",
        "--duration",
        "8s",
        "--users",
        "8",
        "--spawn-rate",
        "8",
        "--think-time",
        "0.05-0.2",
        "--turns",
        "2-4",
        "--regions",
        ",".join(REGIONS),
        "--variants",
        ",".join(VARIANTS),
        "--mock-latency-scale",
        "0.3",
        "--out",
        str(out),
        env=secret_env(),
    )
    run_dir = (out / "latest").resolve()
    return proc, run_dir


def test_run_succeeds_and_writes_every_file(run):
    proc, run_dir = run
    assert proc.returncode == 0, proc.stderr
    for name in (
        "requests.csv",
        "conversations.csv",
        "run.json",
        "locust_stats.csv",
        "locust_stats_history.csv",
        "locust_failures.csv",
        "report.html",
        "summary.csv",
        "summary.md",
    ):
        assert (run_dir / name).is_file(), name
    assert f"Report: {run_dir / 'report.html'}" in proc.stdout


def _ms(text):
    value, unit = text.split()
    return float(value) * (1000.0 if unit == "s" else 1.0)


def test_printed_table_matches_requests_csv(run):
    """The table printed at the end: counts, failures and percentiles of requests.csv."""
    import numpy as np

    proc, run_dir = run
    rows = read_csv(run_dir / "requests.csv")
    lines = proc.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:3] == ["region", "endpoint", "requests"])
    printed = {}
    for line in lines[start + 2 :]:
        cells = [c for c in line.split("  ") if c.strip()]
        if len(cells) != 7:
            break
        printed[(cells[0].strip(), cells[1].strip())] = [c.strip() for c in cells[2:]]
    groups = {(r["region"], r["endpoint"]) for r in rows}
    assert set(printed) == groups
    for (region, endpoint), (count, failed, p50, p95, p99) in printed.items():
        group = [r for r in rows if r["region"] == region and r["endpoint"] == endpoint]
        assert int(count.replace(",", "")) == len(group)
        assert int(failed.split()[0].replace(",", "")) == sum(r["ok"] == "0" for r in group)
        ok = np.array([float(r["response_time_ms"]) for r in group if r["ok"] == "1"])
        for text, q in ((p50, 50), (p95, 95), (p99, 99)):
            assert _ms(text) == pytest.approx(np.percentile(ok, q), rel=0.006), (region, endpoint, q)


def test_locust_csvs_count_the_same_requests(run):
    """Locust's own CSVs hold the same requests under the same names, except those still in
    flight when its users were told to stop: Locust writes its last stats before they end
    (at most a respond and the close per user); requests.csv keeps them."""
    _, run_dir = run
    rows = read_csv(run_dir / "requests.csv")
    stats = {r["Name"]: r for r in read_csv(run_dir / "locust_stats.csv")}
    by_name = {}
    for r in rows:
        by_name[r["name"]] = by_name.get(r["name"], 0) + 1
    locust = {n: int(s["Request Count"]) for n, s in stats.items() if n != "Aggregated"}
    assert set(locust) == set(by_name)
    assert all(locust[n] <= by_name[n] for n in by_name)
    missing = len(rows) - int(stats["Aggregated"]["Request Count"])
    assert 0 <= missing <= 2 * 8, missing
    assert sum(locust.values()) == int(stats["Aggregated"]["Request Count"])
    assert int(stats["Aggregated"]["Failure Count"]) <= sum(r["ok"] == "0" for r in rows)
    history = read_csv(run_dir / "locust_stats_history.csv")
    assert len(history) >= 4 and max(int(h["Total Request Count"]) for h in history) <= len(rows)


def test_progress_lines_count_up_to_the_run(run):
    """Plain progress lines (not a terminal): elapsed/planned, users, a growing request count."""
    import re

    proc, run_dir = run
    progress = re.findall(r"^\[\s*(\d+)s/8s\] users (\d+) .*? requests (\d+)", proc.stdout, re.M)
    assert len(progress) >= 2, proc.stdout
    counts = [int(n) for _, _, n in progress]
    assert counts == sorted(counts) and counts[-1] > 0
    assert counts[-1] <= len(read_csv(run_dir / "requests.csv"))
    assert int(progress[-1][1]) == 8  # every user spawned


def test_requests_csv_has_the_contract_columns_and_all_regions_and_variants(run):
    _, run_dir = run
    with open(run_dir / "requests.csv", newline="") as f:
        header = next(csv.reader(f))
    assert tuple(header) == records.REQUEST_COLUMNS
    rows = read_csv(run_dir / "requests.csv")
    assert len(rows) > 50
    assert {r["region"] for r in rows} == set(REGIONS)
    assert {r["variant"] for r in rows} == set(VARIANTS)
    assert {r["endpoint"] for r in rows} == {"create", "respond", "close"}
    for r in rows:
        assert float(r["response_time_ms"]) > 0
        assert r["ok"] == "1" and r["status"] == "200", r
        assert r["name"] == f"{r['region']} · {r['variant']} · {r['endpoint']}"


def test_each_conversation_is_create_then_responds_then_close(run):
    _, run_dir = run
    by_conversation = defaultdict(list)
    for r in read_csv(run_dir / "requests.csv"):
        by_conversation[r["conversation_id"]].append(r)
    assert "" not in by_conversation  # every row, the create's too, carries its conversation id
    conversations = {c["conversation_id"]: c for c in read_csv(run_dir / "conversations.csv")}
    assert set(conversations) == set(by_conversation)
    for cid, rows in by_conversation.items():
        rows.sort(key=lambda r: float(r["timestamp"]))
        endpoints = [r["endpoint"] for r in rows]
        assert endpoints[0] == "create" and endpoints[-1] == "close", endpoints
        assert set(endpoints[1:-1]) <= {"respond"}
        assert [int(r["turn"]) for r in rows] == list(range(len(rows)))
        assert len({(r["region"], r["variant"]) for r in rows}) == 1
        conv = conversations[cid]
        assert int(conv["turns"]) == len(rows) - 2
        assert conv["ended_by"] in records.ENDED_BY


def test_no_conversation_left_open_at_the_mock(run):
    _, run_dir = run
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "completed"
    assert info["mock_open_conversations"] == {r: 0 for r in REGIONS}


def test_secrets_appear_nowhere(run):
    proc, run_dir = run
    for text in (proc.stdout, proc.stderr):
        assert SECRET_KEY not in text and SECRET_TOKEN not in text
    for path in run_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert SECRET_KEY.encode() not in data and SECRET_TOKEN.encode() not in data, path


def test_sigterm_mid_run_keeps_rows_and_still_reports(tmp_path):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "loadtest",
            "run",
            "--duration",
            "60s",
            "--users",
            "6",
            "--think-time",
            "0.05-0.1",
            "--regions",
            "uk,eu",
            "--mock-latency-scale",
            "0.2",
            "--out",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert wait_for_rows(tmp_path / "latest" / "requests.csv", 20), "the run never wrote rows"
    run_dir = (tmp_path / "latest").resolve()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 4, err  # interrupted: not green, data and report kept
    rows = read_csv(run_dir / "requests.csv")
    assert len(rows) > 20 and all(r["response_time_ms"] for r in rows)
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "interrupted"
    assert set(info["mock_open_conversations"].values()) == {0}
    stopped = [c for c in read_csv(run_dir / "conversations.csv") if c["ended_by"] == "stopped"]
    assert stopped, "conversations open at the interrupt end as 'stopped'"
    assert (run_dir / "report.html").is_file()
