"""The process layer: `loadtest.processes` (stopping a child and its session) and
`loadtest.children` (Locust's command line from the settings table, draining its output)."""

import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from loadtest import children, config, processes, runfolder
from loadtest.progress import PROGRESS_PREFIX, WRITE_FAILED_PREFIX

psutil = pytest.importorskip("psutil")

# A child that shrugs off SIGTERM and leaves a grandchild in its session (as Locust's
# --processes workers are), printing the grandchild's pid once both are set.
STUBBORN = (
    "import signal, subprocess, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "g = subprocess.Popen([sys.executable, '-c', 'import signal, time; "
    "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)'])\n"
    "print(g.pid, flush=True)\n"
    "time.sleep(120)\n"
)


def test_stop_kills_after_the_grace_and_ends_the_childs_session():
    proc = processes.spawn([sys.executable, "-c", STUBBORN], stdout=subprocess.PIPE, text=True)
    try:
        grandchild = psutil.Process(int(proc.stdout.readline()))
        started = time.monotonic()
        code = processes.stop(proc, grace_s=0.3)  # short: both the child and its session wait it out
        assert code == -signal.SIGKILL  # SIGTERM was ignored: killed after the grace
        assert time.monotonic() - started >= 0.3
        # the session's leftovers (ignoring SIGTERM too) are killed by end_process_group
        assert not grandchild.is_running() or grandchild.status() == psutil.STATUS_ZOMBIE
    finally:
        proc.kill()
        for k in psutil.Process().children(recursive=True):
            k.kill()


def test_stop_of_a_child_that_obeys_returns_its_exit_code_at_once():
    proc = processes.spawn([sys.executable, "-c", "import time; time.sleep(60)"])
    started = time.monotonic()
    assert processes.stop(proc, grace_s=30) == -signal.SIGTERM
    assert time.monotonic() - started < 10
    assert processes.stop(proc) == -signal.SIGTERM  # already ended: nothing sent, same code


def _options(cmd: list[str]) -> dict[str, str]:
    return {a: b for a, b in zip(cmd, cmd[1:]) if a.startswith("--")}


@pytest.mark.parametrize(
    "flags",
    [
        {},
        {
            "regions": "us:3,uk:1",
            "variants": "control:9,new:1",
            "turns": "3",
            "think_time": "500ms-2s",
            "request_timeout": "2.5s",
            "integration_attributes": '{"tier": "gold"}',
            "retry_429": "2",
            "connections": "per-user",
            "insecure": "true",
        },
        {"arrival_rate": "2.5", "arrival_steps": "step=1,every=10s,max=5", "variants": ""},
    ],
)
def test_every_locust_option_parses_back_to_the_scenarios_value(flags):
    """Headless and web UI command lines carry every Locust setting in a form its parser reads
    back to the very value the scenario holds."""
    scenario = config.resolve(flags=flags, environ={})
    base_urls = {"us": "http://127.0.0.1:4001", "uk": "http://127.0.0.1:4002"}
    for cmd in (children.locust_command(scenario, base_urls, run_dir="/tmp/run"), children.locust_command(scenario, base_urls, web_port=8089)):
        options = _options(cmd)
        locust_settings = [s for s in config.SETTINGS if s.locust]
        assert locust_settings and all(s.flag in options for s in locust_settings)
        for s in locust_settings:
            if s.name == "base_urls":
                assert options[s.flag] == "us=http://127.0.0.1:4001,uk=http://127.0.0.1:4002"
                continue
            assert s.parse(options[s.flag]) == scenario.values[s.name], (s.name, options[s.flag])
        assert ("--headless" in cmd) == ("--web-port" not in options)


def test_headless_and_web_command_lines_differ_only_where_they_must():
    scenario = config.resolve(flags={"duration": "30s", "users": "5", "spawn_rate": "2"}, environ={})
    headless = _options(children.locust_command(scenario, {}, run_dir="/tmp/run"))
    web = _options(children.locust_command(scenario, {}, web_port=8089, stop_timeout_s=21))
    assert headless["--run-time"] == web["--run-time"] == "30s"
    assert headless["--users"] == web["--users"] == "5" and headless["--spawn-rate"] == web["--spawn-rate"] == "2"
    assert headless["--run-dir"] == "/tmp/run" and "--progress-lines" in headless and "--web-port" not in headless
    assert web["--web-host"] == "127.0.0.1" and web["--web-port"] == "8089" and "--run-dir" not in web
    assert headless["--stop-timeout"] == "10" and web["--stop-timeout"] == "21"


class _FakeLocust:
    """What LocustOutput reads: a `stdout` of lines and `poll()`/`send_signal()`."""

    def __init__(self, lines: list[str]):
        self.stdout = io.StringIO("".join(lines))
        self.signals: list[int] = []

    def poll(self):
        return None

    def send_signal(self, sig):
        self.signals.append(sig)


def test_locust_output_routes_each_line(tmp_path, capsys):
    lines = [
        PROGRESS_PREFIX + json.dumps({"users": 3}) + "\n",
        "[2024-05-01 10:00:00,000] INFO/locust.runners: Shape test updating to 4 users\n",
        "loadtest: something to say\n",
        PROGRESS_PREFIX + json.dumps({"users": 4}) + "\n",
        "Traceback (most recent call last):\n",
    ]
    progress, seen = [], []
    out = children.LocustOutput(_FakeLocust(lines), tmp_path / "locust.log", on_line=seen.append, on_progress=progress.append, echo_prefix="[uk] ")
    out.drain()
    assert progress == [{"users": 3}, {"users": 4}]
    assert seen == [lines[1], lines[2], lines[4]]
    assert (tmp_path / "locust.log").read_text() == lines[1] + lines[2] + lines[4]  # no progress lines
    assert capsys.readouterr().err == "[uk] loadtest: something to say\n[uk] Traceback (most recent call last):\n"
    assert out.failure is None


def test_locust_output_keeps_quiet_once_asked_to_stop_and_reports_a_write_failure(tmp_path, capsys):
    failed = runfolder.WriteFailed(tmp_path / "requests.csv", OSError(28, "No space left on device"))
    fake = _FakeLocust([WRITE_FAILED_PREFIX + failed.to_json() + "\n", "Traceback (most recent call last):\n"])
    out = children.LocustOutput(fake, tmp_path / "locust.log")
    out.drain()
    assert str(out.failure) == str(failed) and capsys.readouterr().err == ""
    quiet = children.LocustOutput(_FakeLocust(["loadtest: late\n"]), tmp_path / "q.log", quiet=lambda: True)
    quiet.drain()
    assert capsys.readouterr().err == ""
    stopped = _FakeLocust(["loadtest: late\n"])
    asked = children.LocustOutput(stopped, tmp_path / "s.log")
    asked.stop()
    asked.drain()
    assert stopped.signals == [signal.SIGINT] and capsys.readouterr().err == ""  # SIGINT: Locust's graceful path


def test_locust_output_stops_locust_when_its_log_cannot_be_written(tmp_path):
    fake = _FakeLocust(["a line\n"])
    out = children.LocustOutput(fake, tmp_path / "missing" / "locust.log")
    out.drain()
    assert isinstance(out.failure, runfolder.WriteFailed) and out.failure.path.name == "locust.log"
    assert fake.signals == [signal.SIGINT]


def test_locust_output_does_not_signal_a_locust_that_reported_its_own_write_failure(tmp_path):
    """On a full disk locust.log fails on the very line where Locust says it cannot write: Locust
    is stopping its load already, and a signal then would only land in the middle of that stop.
    When locust.log fails first (Locust has noticed nothing), Locust is asked to stop, once."""
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full (every write fails with ENOSPC)")
    failed = runfolder.WriteFailed(tmp_path / "requests.csv", OSError(28, "No space left on device"))
    (tmp_path / "locust.log").symlink_to("/dev/full")
    reported = _FakeLocust([WRITE_FAILED_PREFIX + failed.to_json() + "\n", "[...] ERROR/loadtest: loadtest: cannot write requests.csv\n", "more\n"])
    out = children.LocustOutput(reported, tmp_path / "locust.log")
    out.drain()
    assert str(out.failure) == str(failed) and reported.signals == []
    (tmp_path / "first.log").symlink_to("/dev/full")
    silent = _FakeLocust(["[...] WARNING/locust.runners: a warning\n", "another line\n"])
    first = children.LocustOutput(silent, tmp_path / "first.log")
    first.drain()
    assert first.failure is not None and first.failure.path.name == "first.log" and first.failure.error.errno == 28
    assert silent.signals == [signal.SIGINT]
