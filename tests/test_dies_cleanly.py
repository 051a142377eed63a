"""Dying cleanly: hangups, kills and a full disk never leave load running or a run folder that lies.

- children (mock, Locust) end with `loadtest`, however it ends (`loadtest.processes`);
- SIGHUP stops a run like SIGTERM: interrupted, data kept, report built;
- a full disk stops the load at the first failed write: exit 3, one line, whole rows kept;
- a run whose process vanished reads as "did not finish", not "running".
"""

import csv
import errno
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import gevent
import httpx
import pytest
from locust.env import Environment

from loadtest import processes, runfolder
from loadtest.commands import run as runner
from loadtest.inlocust.locust_csv import LocustCsv
from loadtest.mock import MockConfig, MockServer
from loadtest.rowfile import RowFile
from runs import FAST, loadtest, read_csv, run_json, until, wait_for_rows

psutil = pytest.importorskip("psutil")

LOADTEST = [sys.executable, "-m", "loadtest"]


_until = until  # poll until true, else the last (falsy) value, asserted by the caller


def _alive(procs) -> list:
    return [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def _port_free(url: str) -> bool:
    host, port = url.rsplit("/", 1)[-1].rsplit(":", 1)
    with socket.socket() as s:
        return s.connect_ex((host, int(port))) != 0


def _kill_and_check_children(proc: subprocess.Popen, at_least: int) -> None:
    """SIGKILL `proc`, as a CI job's timeout does: its children (at least `at_least` of them,
    counted now) must all be gone within 5 s."""
    kids = psutil.Process(proc.pid).children(recursive=True)
    assert len(kids) >= at_least
    proc.kill()
    proc.wait()
    assert _until(lambda: not _alive(kids), 5), f"children left after 5 s: {_alive(kids)}"


def _kill_everything(proc: subprocess.Popen) -> None:
    """Whatever a failed test left running: `proc` and every process this test started."""
    proc.kill()
    for k in psutil.Process().children(recursive=True):
        k.kill()


def _children_once_running(pid: int, count: int, timeout: float = 60) -> list:
    kids = _until(lambda: len(psutil.Process(pid).children(recursive=True)) >= count and psutil.Process(pid).children(recursive=True), timeout)
    assert kids, "the children never started"
    return kids


# ----------------------------------------------------------------------------- child lifetime


def test_a_child_that_does_not_watch_its_lifeline_still_dies_with_its_parent(tmp_path):
    """PR_SET_PDEATHSIG (Linux): any spawned child gets SIGHUP when its parent is killed."""
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux only; elsewhere children watch their lifeline")
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; from loadtest import processes\n"
                "child = processes.spawn(['sleep', '120'])\n"
                f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
                "time.sleep(120)\n"
            ),
        ]
    )
    try:
        assert _until(lambda: pid_file.exists() and pid_file.read_text(), 30), "no child started"
        child = psutil.Process(int(pid_file.read_text()))
        assert child.is_running()
        parent.kill()
        parent.wait()
        assert _until(lambda: not _alive([child]), 5), "sleep outlived its killed parent"
    finally:
        parent.kill()


def test_lifeline_is_readable_exactly_when_the_parent_is_gone(tmp_path):
    """The portable half: what a child forks (here the child itself has exited) sees end of
    file on its lifeline when the loadtest process is gone."""
    out = tmp_path / "seen"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; from loadtest import processes\n"
                "processes.spawn([sys.executable, '-c', '''\n"
                "import os, select, signal, time\n"
                "from loadtest.processes import lifeline_fd\n"
                "signal.signal(signal.SIGHUP, signal.SIG_IGN)  # only the pipe, here\n"
                "if os.fork():  # what the child forks (Locust's workers) inherits the lifeline\n"
                "    os._exit(0)\n"
                "fd = lifeline_fd()\n"
                "assert select.select([fd], [], [], 0)[0] == []\n"
                f"open({str(out)!r}, 'w').write('watching')\n"
                "select.select([fd], [], [])\n"
                f"open({str(out)!r}, 'w').write('gone %d' % os.read(fd, 1).__len__())\n"
                "'''])\n"
                "time.sleep(120)\n"
            ),
        ]
    )
    try:
        assert _until(lambda: out.exists() and out.read_text() == "watching", 30)
        parent.kill()
        parent.wait()
        assert _until(lambda: out.read_text() == "gone 0", 5), out.read_text()
    finally:
        parent.kill()
    assert processes.lifeline_fd() is None  # pytest was not started by loadtest


@pytest.mark.slow
def test_sighup_stops_a_run_gracefully_reports_and_leaves_no_child(tmp_path):
    proc = subprocess.Popen(
        [*LOADTEST, "run", "--duration", "30s", "--users", "4", "--regions", "uk,eu", *FAST, "--mock-latency-scale", "0.2", "--out", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_for_rows(tmp_path / "latest" / "requests.csv", 10), "the run never wrote rows"
        kids = psutil.Process(proc.pid).children(recursive=True)
        assert len(kids) >= 2  # the mock and Locust
        proc.send_signal(signal.SIGHUP)  # the SSH session dropped
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == runner.EXIT_INTERRUPTED, err  # interrupted: data and report kept
    assert not _alive(kids), f"children left: {_alive(kids)}"
    run_dir = (tmp_path / "latest").resolve()
    info = run_json(run_dir)
    assert info["status"] == "interrupted" and info["reason"] == "stopped by SIGHUP"
    assert info["ended"] - info["started"] < 25
    assert (run_dir / "report.html").is_file() and "Report:" in out
    assert "stopped early (stopped by SIGHUP)" in (run_dir / "report.html").read_text()
    assert "Traceback" not in err
    rows = read_csv(run_dir / "requests.csv")
    conversations = read_csv(run_dir / "conversations.csv")
    # Gracefully: every conversation created was closed before Locust exited.
    created = {r["conversation_id"] for r in rows if r["endpoint"] == "create" and r["ok"] == "1"}
    closed = {r["conversation_id"] for r in rows if r["endpoint"] == "close"}
    assert created and created == closed
    assert {c["conversation_id"] for c in conversations} == created
    assert set(info["mock_open_conversations"].values()) == {0}


@pytest.mark.slow
def test_a_dropped_terminal_stops_the_run_gracefully_though_output_fails(tmp_path):
    """An SSH session dropping: the terminal hangs up (SIGHUP to its session), and from then on
    every write to it fails with EIO, the run's progress lines included."""
    master, slave = os.openpty()

    def own_the_terminal():  # after setsid: this pty becomes the controlling terminal
        import fcntl
        import termios

        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(
        [*LOADTEST, "run", "--duration", "40s", "--users", "4", "--regions", "uk", *FAST, "--mock-latency-scale", "0.2", "--out", str(tmp_path)],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        preexec_fn=own_the_terminal,
    )
    os.close(slave)
    try:
        seen = b""
        deadline = time.monotonic() + 60
        while b"requests " not in seen and time.monotonic() < deadline:  # a progress line
            try:
                seen += os.read(master, 4096)
            except OSError:
                break
        assert b"requests " in seen, seen.decode(errors="replace")
        kids = psutil.Process(proc.pid).children(recursive=True)
        os.close(master)  # the terminal is gone
        assert proc.wait(timeout=60) == runner.EXIT_INTERRUPTED
    finally:
        proc.kill()
    assert _until(lambda: not _alive(kids), 5), f"children left: {_alive(kids)}"
    run_dir = (tmp_path / "latest").resolve()
    info = run_json(run_dir)
    assert info["status"] == "interrupted" and info["reason"] == "stopped by SIGHUP"
    assert (run_dir / "report.html").is_file()
    rows = read_csv(run_dir / "requests.csv")
    created = {r["conversation_id"] for r in rows if r["endpoint"] == "create" and r["ok"] == "1"}
    assert created and created == {r["conversation_id"] for r in rows if r["endpoint"] == "close"}


@pytest.mark.slow
@pytest.mark.parametrize("processes", [0, 2])
def test_sigkill_of_a_run_leaves_no_child_and_frees_the_mock_port(tmp_path, processes):
    proc = subprocess.Popen(
        [
            *LOADTEST,
            "run",
            "--duration",
            "60s",
            "--users",
            "4",
            "--regions",
            "uk,eu",
            *FAST,
            "--mock-latency-scale",
            "0.2",
            "--processes",
            str(processes),
            "--out",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_for_rows(tmp_path / "latest" / "requests.csv", 10), "the run never wrote rows"
        kids = psutil.Process(proc.pid).children(recursive=True)
        assert len(kids) >= 2 + processes  # the mock, Locust (and the workers it forked)
        run_dir = (tmp_path / "latest").resolve()
        mock_urls = run_json(run_dir)["base_urls"]
        assert not any(_port_free(u) for u in mock_urls.values())
        proc.kill()  # what a CI job timeout does
        proc.wait()
        killed = time.monotonic()
        assert _until(lambda: not _alive(kids), 5), f"children left after 5 s: {_alive(kids)}"
        assert time.monotonic() - killed < 5
    finally:
        _kill_everything(proc)
    assert all(_port_free(u) for u in mock_urls.values())
    info = run_json(run_dir)  # the run folder says what happened, written by Locust itself
    assert info["status"] == "interrupted"
    assert f"loadtest process (pid {proc.pid}) ended" in info["reason"]
    report = loadtest("report", str(run_dir))  # and what was recorded is intact
    assert report.returncode == 0, report.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "command,children",
    [
        # a capacity search holding its first step
        (["capacity", "--regions", "uk", "--start", "4", "--step", "4", "--max", "8", "--hold", "30s", *FAST, "--mock-latency-scale", "0.2"], 2),
        # a preflight check waiting on a create the mock never answers
        (["check", "--regions", "uk", "--fault", "create:timeout:1", "--request-timeout", "60s"], 1),
    ],
)
def test_sigkill_of_capacity_and_check_leaves_no_child(tmp_path, command, children):
    proc = subprocess.Popen([*LOADTEST, *command, "--out", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    try:
        _children_once_running(proc.pid, children)
        time.sleep(3)  # under way
        _kill_and_check_children(proc, children)
    finally:
        _kill_everything(proc)


@pytest.mark.slow
def test_sigkill_of_the_ui_during_a_test_leaves_no_child(tmp_path):
    ready = tmp_path / "ready.json"
    proc = subprocess.Popen(
        [*LOADTEST, "ui", "--regions", "uk", "--ready-file", str(ready), "--out", str(tmp_path / "reports"), *FAST, "--mock-latency-scale", "0.2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    try:
        assert _until(ready.exists, 60), "loadtest ui did not come up"
        info = json.loads(ready.read_text())
        started = httpx.post(info["url"] + "/swarm", data={"user_count": 4, "spawn_rate": 50}, timeout=10)
        assert started.status_code == 200, started.text
        assert _until(lambda: any(p.stat().st_size > 2000 for p in (tmp_path / "reports").glob("*/requests.csv")), 40), "the test wrote no rows"
        _kill_and_check_children(proc, 2)
    finally:
        _kill_everything(proc)
    assert all(_port_free(u) for u in info["mock"].values())
    run_dir = next((tmp_path / "reports").glob("*/run.json")).parent
    assert run_json(run_dir)["status"] == "interrupted"


@pytest.mark.slow
def test_loadtest_mock_stops_cleanly_on_a_hangup(tmp_path):
    ready = tmp_path / "ready.json"
    proc = subprocess.Popen(
        [*LOADTEST, "mock", "--port", "0", "--region", "uk", "--ready-file", str(ready)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert _until(ready.exists, 30), "the mock did not start"
        url = json.loads(ready.read_text())["regions"]["uk"]
        assert httpx.get(url + "/_mock/stats", timeout=5).status_code == 200
        proc.send_signal(signal.SIGHUP)  # its terminal closed
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "uk: 1 requests, 0 created, 0 closed, 0 left open" in out  # its clean-stop summary
    assert not ready.exists() and _port_free(url)


# ----------------------------------------------------------------------------- a full disk


def _can_mount_tmpfs() -> str:
    if not shutil.which("unshare"):
        return "unshare not found"
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"], capture_output=True, text=True)
    return "" if probe.returncode == 0 else f"cannot mount a tmpfs in a mount namespace: {probe.stderr.strip()}"


@pytest.mark.slow
@pytest.mark.parametrize("processes", [0, 2])
def test_a_full_disk_stops_the_load_at_once_exits_3_and_keeps_whole_rows(tmp_path, processes):
    _run_on_a_full_disk_and_check(tmp_path, processes)


@pytest.mark.slow
def test_a_stop_signal_landing_mid_message_does_not_keep_a_worker_running(tmp_path):
    """The full disk again, with `loadtest`'s SIGINT (sent when locust.log fails on the line where
    Locust reports its own failure) landing between the two frames of the master's message to a
    worker. Raised there as a KeyboardInterrupt, it left half a message on the socket: the next
    one was garbage to that worker, whose receive loop died, and it ran its users until Locust's
    60 s heartbeat timeout; the run went on to its end (1 run in 4-5 of the test above)."""
    _run_on_a_full_disk_and_check(tmp_path, 2, locust_args=["-f", str(Path(__file__).parent / "locustfile_stop_mid_message.py")])


@pytest.mark.slow
@pytest.mark.parametrize("processes", [0, 2])
def test_locust_log_failing_first_stops_the_load_at_once(tmp_path, processes):
    """locust.log, which `loadtest` writes from Locust's output, is the only file that cannot be
    written: a file size limit (RLIMIT_FSIZE, 256 KiB) that Locust's output passes at once (one
    512 KiB line, 3 s into the test) and its own files only after half a minute. `loadtest`
    asks Locust to stop; the load ends within seconds, exit 3, one line naming locust.log."""
    limit = 256 * 1024

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "BIG_OUTPUT_BYTES": str(2 * limit)}
    with MockServer(MockConfig(latency_scale=0.2)) as mock:
        cmd = [*LOADTEST, "run", "--duration", "60s", "--users", "4", "--regions", "uk", "--base-urls", f"uk={mock.base_urls['uk']}", *FAST]
        cmd += ["--processes", str(processes), "--out", str(tmp_path), "--", "-f", str(Path(__file__).parent / "locustfile_big_output.py")]
        started = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=150, env=env, preexec_fn=limit_file_size)
        ended = time.time()
        time.sleep(1)
        total = sum(mock.stats("uk")["requests"].values())
    run_dir = (tmp_path / "latest").resolve()
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.startswith(f"loadtest: cannot write locust.log in {run_dir}: File too large;"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stdout
    assert ended - started < 30, "the run went on"
    info = run_json(run_dir)
    assert info["status"] == "failed" and "cannot write locust.log" in info["reason"]
    rows = [row for path in run_dir.glob("requests*.csv") for row in read_csv(path)]
    stamps = sorted(float(r["timestamp"]) for r in rows)
    assert len(rows) > 20 and stamps[-1] - stamps[0] < 12, (len(rows), stamps[-1] - stamps[0])  # the line came at 3 s
    assert total - len(rows) <= 20, (total, len(rows))  # open conversations closed, the last rows flushed


def _run_on_a_full_disk_and_check(tmp_path: Path, processes: int, locust_args: list[str] | tuple = ()) -> None:
    """`loadtest run` (60 s) with its run folder on a 64 KiB tmpfs: it must stop within seconds
    of the first failed write, exit 3 with one line, and keep whole rows."""
    why_not = _can_mount_tmpfs()
    if why_not:
        pytest.skip(why_not)
    out, copy = tmp_path / "small", tmp_path / "copy"
    out.mkdir()
    extra = f" -- {' '.join(locust_args)}" if locust_args else ""
    with MockServer(MockConfig(latency_scale=0.2)) as mock:  # outside: its counters tell the traffic
        script = (
            f"mount -t tmpfs -o size=64k tmpfs {out} && {sys.executable} -m loadtest run "
            f"--duration 60s --users 4 --regions uk --base-urls uk={mock.base_urls['uk']} "
            f"{' '.join(FAST)} --processes {processes} --out {out}{extra}; rc=$?; cp -a {out} {copy}; exit $rc"
        )
        proc = subprocess.Popen(["unshare", "-m", "sh", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        sent = []  # (time, requests the mock has counted)
        while proc.poll() is None:
            sent.append((time.time(), sum(mock.stats("uk")["requests"].values())))
            time.sleep(0.2)
        stdout, stderr = proc.communicate()
        exited = time.time()
        time.sleep(2)
        total = sum(mock.stats("uk")["requests"].values())
    assert proc.returncode == 3, stderr
    assert total == sent[-1][1]  # nothing kept sending after loadtest exited
    assert exited - sent[0][0] < 50, "the run went on to its end"
    # One line about the disk, naming the folder, the file and what to do; no traceback.
    assert "Traceback" not in stderr + stdout
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    run_dir = next(p for p in copy.iterdir() if p.name != "latest")
    assert lines[0].startswith("loadtest: cannot write ") and str(out / run_dir.name) in lines[0]
    assert "No space left on device" in lines[0] and f"loadtest report {out / run_dir.name}" in lines[0]
    assert not list(copy.rglob("*.tmp"))
    info = run_json(run_dir)
    assert info["status"] == "failed" and "No space left on device" in info["reason"]
    # Whole rows only, and they load.
    files = [run_dir / "requests.csv", run_dir / "conversations.csv"]  # workers ship to the master
    for path in files:
        data = path.read_bytes()
        assert data.endswith(b"\n")
        rows = list(csv.reader(data.decode().splitlines()))
        assert len({len(r) for r in rows}) == 1, f"{path.name} holds a partial row"
    rows = [row for path in run_dir.glob("requests*.csv") for row in read_csv(path)]
    assert len(rows) > 50
    from analysis.load import load_run

    assert len(load_run(run_dir, use_cache=False).requests) == len(rows)
    # The traffic stopped within a few seconds of the first failed write (when the file was
    # cut back to its whole rows), and little went unrecorded: at most the rows of the flush
    # that failed (about a second's) and the requests then in flight.
    failed_at = min(p.stat().st_mtime for p in run_dir.glob("requests*.csv"))
    last_rise = max(t for (t, n), (_, before) in zip(sent[1:], sent) if n != before)
    assert last_rise < failed_at + 3, f"traffic went on {last_rise - failed_at:.1f} s after the failure"
    stamps = sorted(float(r["timestamp"]) for r in rows)
    rate = len(rows) / (stamps[-1] - stamps[0])
    assert total - len(rows) <= 2 * rate + 4 * max(processes, 1), (total, len(rows), rate)


def test_a_row_file_keeps_whole_rows_when_a_write_fails_part_way(tmp_path, monkeypatch):
    f = RowFile(tmp_path / "rows.csv")
    f.write("a,b\n")
    f.write("1,2\n")
    f.flush()
    real_write = os.write
    calls = []

    def disk_fills(fd, data):  # the first write gets in part-way, the next finds no space
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[:9]))  # '3,4\n5,"6' : one whole row and a half
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("loadtest.rowfile.os.write", disk_fills)
    f.write("3,4\n")
    f.write('5,"6\n7"\n')
    f.write("8,9\n")
    with pytest.raises(runfolder.WriteFailed) as failed:
        f.flush()
    assert "cannot write rows.csv in" in str(failed.value) and "No space left" in str(failed.value)
    assert "loadtest report" in failed.value.advice
    assert (tmp_path / "rows.csv").read_bytes() == b"a,b\n1,2\n3,4\n"
    assert f.closed
    f.write("9,9\n")  # takes nothing more
    f.close()
    assert (tmp_path / "rows.csv").read_bytes() == b"a,b\n1,2\n3,4\n"


def test_locust_csvs_stop_writing_after_a_failed_write(tmp_path, monkeypatch):
    """Locust's CSVs fail in their own writing greenlet: it cuts the files to whole lines, reports
    once, and ends (it went on and died on its closed files with a ValueError traceback)."""
    monkeypatch.setattr("loadtest.inlocust.locust_csv.CSV_STATS_INTERVAL_SEC", 0.05)
    failures = []
    csvs = LocustCsv(Environment(), tmp_path, on_failure=failures.append)

    def no_space(*_args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(csvs, "_stats_history_data_rows", no_space)
    gevent.sleep(0.5)  # ten ticks of its writer
    assert [str(f) for f in failures] == [f"cannot write locust_*.csv in {tmp_path}: No space left on device"]
    assert csvs._greenlet.dead and csvs._greenlet.exception is None
    assert (tmp_path / "locust_stats.csv").read_text().startswith("Type,Name,")  # the header, whole
    csvs.close()  # the plugin's close at quit: nothing more
    assert len(failures) == 1


def test_run_json_says_failed_on_a_full_disk_without_a_temporary_file(tmp_path, monkeypatch):
    runfolder.update_run_json(tmp_path, status="running", started=1.0)

    def no_space(self, data):
        Path.open(self, "wb").write(data[:10])  # the temporary file gets a part, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", no_space)
    runfolder.update_run_json(tmp_path, status="failed", reason="disk full")
    assert json.loads((tmp_path / "run.json").read_text()) == {"status": "failed", "started": 1.0, "run_id": tmp_path.name, "reason": "disk full"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]
    # Not even in place (the new text is larger than the blocks the file holds): WriteFailed.
    with pytest.raises(runfolder.WriteFailed):
        runfolder.update_run_json(tmp_path, notes="x" * 100_000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "failed"


# ----------------------------------------------------------------------------- a run that vanished


@pytest.mark.slow
def test_report_says_a_run_whose_process_vanished_did_not_finish(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    gone = subprocess.Popen(["true"])
    gone.wait()
    with MockServer(MockConfig(latency_scale=0)) as mock:
        done = loadtest(
            "run", "--duration", "3s", "--users", "2", "--regions", "uk", *FAST, "--base-urls", f"uk={mock.base_urls['uk']}", "--out", str(tmp_path / "out")
        )
    assert done.returncode == 0, done.stderr
    src = (tmp_path / "out" / "latest").resolve()
    for p in src.glob("*.csv"):
        shutil.copy(p, run_dir / p.name)
    info = run_json(src)
    info.update(status="running", pid=gone.pid, host=socket.gethostname())
    (run_dir / "run.json").write_text(json.dumps(info))
    report = loadtest("report", str(run_dir))
    assert report.returncode == 0, report.stderr
    assert f"its process (pid {gone.pid}) is gone: the run did not finish" in report.stderr
    html = (run_dir / "report.html").read_text()
    assert "Run did not finish" in html and "Run still in progress" not in html
    # A live loadtest process, or one on another host, is left alone; a recycled pid is not.
    from analysis.load import did_not_finish

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "loadtest"])
    try:
        assert _until(lambda: "loadtest" in psutil.Process(live.pid).cmdline(), 10)  # exec'd
        assert did_not_finish({**info, "pid": live.pid}) is None
    finally:
        live.kill()
    assert did_not_finish({**info, "host": "elsewhere"}) is None
    other = subprocess.Popen(["sleep", "60"])  # a recycled pid: alive, but not a run
    try:
        assert _until(lambda: psutil.Process(other.pid).name() == "sleep", 10)
        assert did_not_finish({**info, "pid": other.pid})
    finally:
        other.kill()
    assert did_not_finish({**info, "status": "completed"}) is None
