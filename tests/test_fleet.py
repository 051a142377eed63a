"""Distributed runs without shared storage: rows travel from workers to the master.

Unit tests of `loadtest.inlocust.fleet` (batches, acks, resends, the worker's bound, the master's
dedup), and a fleet of separate processes whose workers cannot see the master's disk.
"""

import csv
import io
import json
import shutil
import subprocess
import sys
import time
from collections import defaultdict

import gevent
import httpx
import pytest

from loadtest import config
from loadtest.inlocust import fleet
from analysis import records
from loadtest import children
from loadtest.inlocust.recorder import Recorder
from runs import FAST, free_port_block, read_csv, read_rows, run_json


class Channel:
    """Stands in for Locust's message channel: records what a worker sends, may fail."""

    def __init__(self):
        self.sent = []
        self.broken = False

    def send(self, kind, payload):
        if self.broken:
            raise ConnectionError("connection reset")
        self.sent.append((kind, json.loads(json.dumps(payload))))  # as if serialised


def deliver(channel, collector, worker="worker0"):
    """Hand what the worker sent to the master; return the acks the master would send."""
    acks = []
    for kind, payload in channel.sent:
        if kind == fleet.ROWS:
            collector.on_rows(worker, "node-0", payload)
            acks.append({"run": payload["run"], "seq": payload["seq"]})
        else:
            collector.on_done(worker, "node-0", payload)
    channel.sent = []
    return acks


def streams(outbox):
    return [outbox.stream(name) for name in ("requests", "conversations", "connections")]


def request_row(recorder, i):
    recorder.on_request(
        request_type="POST",
        name="uk · a · respond",
        response_time=12.5,
        response_length=40,
        context={"region": "uk", "variant": "a", "endpoint": "respond", "conversation_id": f"c{i}", "turn": 1, "user": "u1"},
        start_time=1000.0 + i,
    )


def test_batches_reach_the_run_folder_once_even_when_resent(tmp_path, monkeypatch):
    run_dir = tmp_path / "run-1"
    run_dir.mkdir()
    collector = fleet.Collector(run_dir, open_model=False)
    channel = Channel()
    shipper = fleet.Shipper(channel.send, "run-1")
    shipper.stop()  # drive it by hand, no timer
    recorder = Recorder(*streams(shipper.outbox), "worker0")
    for i in range(5):
        request_row(recorder, i)
    shipper.ship()
    channel.broken = True  # the second batch is lost on a reset connection
    for i in range(5, 8):
        request_row(recorder, i)
    shipper.ship()
    assert shipper.send_errors == 1
    channel.broken = False
    deliver(channel, collector)  # batch 1 is written; its ack is lost on the way back
    assert sorted(shipper.sent) == [1, 2] and shipper.outbox.unacked == 8
    shipper.resend_overdue()  # nothing is resent before RESEND_AFTER_S
    assert channel.sent == []
    monkeypatch.setattr(fleet, "RESEND_AFTER_S", -1.0)
    shipper.resend_overdue()  # then both are: 2 was lost, 1 is a repeat the master skips
    assert sorted(p["seq"] for _, p in channel.sent) == [1, 2]
    recorder.close()
    shipper.finish()
    for ack in deliver(channel, collector):
        shipper.on_ack(ack)
    assert shipper.sent == {} and shipper.outbox.unacked == 0
    accounts = collector.close()
    rows = read_csv(run_dir / records.REQUESTS_CSV)
    assert [r["conversation_id"] for r in rows] == [f"c{i}" for i in range(8)]
    assert all(r["worker"] == "worker0" and r["response_time_ms"] == "12.500" for r in rows)
    account = accounts["worker0"]
    assert account["produced"] == {"requests": 8} == account["received"]
    assert account["repeated_batches"] == 1 and account["complete"] and account["batches"] == 2


def test_a_worker_backlog_is_bounded_and_what_it_drops_is_counted(tmp_path):
    channel = Channel()
    channel.broken = True  # the master is unreachable: nothing is ever acknowledged
    shipper = fleet.Shipper(channel.send, "run-1", fleet.Outbox(max_held=100, batch_rows=30))
    shipper.stop()
    recorder = Recorder(*streams(shipper.outbox), "worker3")
    for i in range(250):
        request_row(recorder, i)
        if i % 30 == 29:
            shipper.ship()
    outbox = shipper.outbox
    assert outbox.waiting + outbox.unacked == 100  # held: never more than the bound
    assert outbox.produced["requests"] == 250 and outbox.dropped["requests"] == 150
    channel.broken = False
    shipper.finish()
    done = channel.sent[-1]
    assert done[0] == fleet.DONE
    assert done[1]["produced"] == {"requests": 250} and done[1]["dropped"] == {"requests": 150}


def test_the_master_ignores_batches_of_another_test_and_waits_for_pending_workers(tmp_path):
    run_dir = tmp_path / "run-2"
    run_dir.mkdir()
    collector = fleet.Collector(run_dir, open_model=True)
    assert not collector.on_rows("worker0", "n0", {"run": "run-1", "seq": 1, "counts": {"requests": 1}, "requests": "x\n"})
    assert collector.foreign_batches == 1
    assert collector.on_rows("worker0", "n0", {"run": "run-2", "seq": 2, "counts": {"arrivals": 1}, "arrivals": "1.0,uk,a,1.1,100.000,0\n"})
    collector.on_done("worker0", "n0", {"run": "run-2", "last_seq": 2, "produced": {"arrivals": 1}, "dropped": {}})
    started = time.monotonic()
    collector.wait_until_complete(lambda: set(), timeout=0.5)  # seq 1 of run-2 never came
    assert time.monotonic() - started >= 0.5
    gevent.spawn_later(0.2, collector.on_rows, "worker0", "n0", {"run": "run-2", "seq": 1, "counts": {"arrivals": 1}, "arrivals": "2.0,uk,a,,,1\n"})
    started = time.monotonic()
    collector.wait_until_complete(lambda: set(), timeout=10)
    assert time.monotonic() - started < 5
    accounts = collector.close()
    assert accounts["worker0"]["complete"] and accounts["worker0"]["received"] == {"arrivals": 2}
    assert [r["planned"] for r in read_csv(run_dir / records.ARRIVALS_CSV)] == ["1.0", "2.0"]
    assert read_csv(run_dir / records.REQUESTS_CSV) == []  # header only: nothing foreign written


def test_the_outbox_carries_lines_that_need_quoting(tmp_path):
    outbox = fleet.Outbox()
    recorder = Recorder(*streams(outbox), "worker1")
    recorder.on_request(
        request_type="POST",
        name="uk · a · respond",
        response_time=5.0,
        response_length=0,
        context={"region": "uk", "endpoint": "respond", "error_kind": "http"},
        exception=RuntimeError('HTTP 503: "busy",\nretry'),
        start_time=1.0,
    )
    texts, counts = outbox.take()
    assert counts == {"requests": 1}
    (row,) = list(csv.reader(io.StringIO(texts["requests"])))
    assert row[records.REQUEST_COLUMNS.index("error")] == 'HTTP 503: "busy",\nretry'
    recorder.close()


def test_workers_and_processes_exclude_each_other_and_workers_become_master_flags():
    with pytest.raises(config.ConfigError, match="--workers and --processes exclude each other"):
        config.resolve(flags={"workers": "2", "processes": "2"}, environ={})
    scenario = config.resolve(flags={"workers": "3", "master_bind_port": "6000"}, environ={})
    assert children.fleet_master_args(scenario) == ["--master", "--expect-workers", "3", "--master-bind-host", "*", "--master-bind-port", "6000"]
    assert children.fleet_master_args(config.resolve(environ={})) == []
    cmd = children.worker_command("10.0.0.5", 6000, 2)
    assert cmd[cmd.index("-f") + 1] == str(children.locustfile())
    assert cmd[cmd.index("--worker") :] == ["--worker", "--master-host", "10.0.0.5", "--master-port", "6000", "--processes", "2"]


# ---- a fleet of separate processes, the workers blind to the master's disk ---------------------


def _unshare_works() -> str | None:
    if not shutil.which("unshare"):
        return "unshare is not installed"
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs tmpfs /mnt"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"unshare -m with a tmpfs mount is not permitted here: {probe.stderr.strip()}"
    return None


def _mock(tmp_path, regions=4):
    port = free_port_block(regions)
    ready = tmp_path / "mock-ready.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadtest", "mock", "--port", str(port), "--latency-scale", "0.2", "--quiet", "--ready-file", str(ready)],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready.exists(), "the mock did not start"
    return proc, json.loads(ready.read_text())["regions"]


def _stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_master_and_two_workers_that_cannot_see_its_disk(tmp_path):
    reason = _unshare_works()
    if reason:
        pytest.skip(reason)
    out = tmp_path / "master-out"
    out.mkdir()
    mock, urls = _mock(tmp_path)
    master_port = free_port_block(1)
    workers = []
    try:
        base_urls = ",".join(f"{r}={urls[r]}" for r in ("uk", "eu"))
        master = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "loadtest",
                "run",
                "--workers",
                "2",
                "--master-bind-host",
                "127.0.0.1",
                "--master-bind-port",
                str(master_port),
                "--duration",
                "6s",
                "--users",
                "6",
                "--regions",
                "uk,eu",
                "--base-urls",
                base_urls,
                *FAST,
                "--out",
                str(out),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        for _ in range(2):
            # A private mount namespace with an empty tmpfs over the master's output folder:
            # a worker that wrote there (or read the master's run folder) would not reach it.
            script = (
                f'mount -t tmpfs tmpfs {out} && test -z "$(ls -A {out})" && exec {sys.executable} '
                f"-m loadtest worker --master-host 127.0.0.1 --master-port {master_port}"
            )
            workers.append(subprocess.Popen(["unshare", "-m", "sh", "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        stdout, stderr = master.communicate(timeout=180)
        assert master.returncode == 0, stderr[-3000:]
        assert "Waiting for 2 worker(s)" in stdout
        run_dir = (out / "latest").resolve()
        rows = read_rows(run_dir)
        counted = 0
        for region in ("uk", "eu"):  # the API calls it answered (its own stats GETs are "other")
            seen = httpx.get(f"{urls[region]}/_mock/stats", timeout=5).json()["requests"]
            counted += sum(seen.get(op, 0) for op in ("create", "respond", "close"))
        assert len(rows) == counted > 50  # every request the mock saw, once
        assert {r["worker"] for r in rows} == {"worker0", "worker1"}
        by_conversation = defaultdict(list)
        for r in rows:
            assert r["ok"] == "1", r
            by_conversation[r["conversation_id"]].append(r)
        conversations = {c["conversation_id"]: c for c in read_csv(run_dir / "conversations.csv")}
        assert set(conversations) == set(by_conversation)
        for cid, rs in by_conversation.items():  # create → respond 1..N → close, nothing missing
            turns = sorted(int(r["turn"]) for r in rs)
            assert turns == list(range(len(rs))), (cid, turns)
            assert [r["endpoint"] for r in sorted(rs, key=lambda r: int(r["turn"]))] == ["create"] + ["respond"] * (len(rs) - 2) + ["close"]
            assert int(conversations[cid]["turns"]) == len(rs) - 2
            assert len({r["worker"] for r in rs}) == 1
        accounts = run_json(run_dir)["worker_rows"]
        for worker, account in accounts.items():
            assert account["produced"] == account["received"]
            assert account["received"]["requests"] == sum(r["worker"] == worker for r in rows)
        for w in workers:
            w.wait(timeout=60)  # the master's end lets its workers go
            assert w.returncode == 0, w.stderr.read()[-2000:]
    finally:
        for w in workers:
            _stop(w)
        _stop(mock)
        if "master" in locals():
            _stop(master)
