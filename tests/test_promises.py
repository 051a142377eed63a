"""What the README promises and no other test proved: secrets on error paths and in process
arguments, the request-rate caps, the example scenario files, run.json's provenance, exit 3."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from importlib import metadata
from pathlib import Path

import pytest

from loadtest import config, runfolder, safety
from loadtest.mock import MockConfig, MockServer
from loadtest.mock.config import load_config
from runs import FAST, loadtest, read_csv, run_json

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-live-4c0ffee-0123456789"
TOKEN = "tok-live-feedface-98765"


def test_redactor_scrubs_each_secret_everywhere_in_a_text():
    redact = safety.redactor(KEY, TOKEN)
    text = f"401 for {KEY}: header X-TOKEN={TOKEN}; again {KEY}{KEY}"
    scrubbed = redact(text)
    assert KEY not in scrubbed and TOKEN not in scrubbed
    assert scrubbed == "401 for ***: header X-TOKEN=***; again ******"
    # The documented dummy pair and too-short values are not secrets worth masking.
    assert safety.redactor("mock-api-key", "abc")("mock-api-key abc") == "mock-api-key abc"


def _all_cmdlines() -> list[str]:
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                out.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                pass
    return out


@pytest.mark.slow
def test_secrets_never_in_outputs_on_error_paths_nor_in_process_arguments(tmp_path):
    """Every failure kind with real-looking credentials: no output, file or process argument
    of the run holds them."""
    env = {**os.environ, "POLYAI_API_KEY": KEY, "POLYAI_TOKEN": TOKEN}
    args = [
        sys.executable,
        "-m",
        "loadtest",
        "run",
        "--duration",
        "5s",
        "--users",
        "6",
        *FAST,
        "--regions",
        "uk,eu",
        "--request-timeout",
        "0.5s",
        "--mock-latency-scale",
        "0.1",
        "--out",
        str(tmp_path),
    ]
    for fault in ("uk.respond:503:0.3", "uk.create:429:0.2", "eu.respond:reset:0.3", "eu.close:malformed:0.3", "uk.close:timeout:0.2", "eu.create:shape:0.2"):
        args += ["--fault", fault]
    seen: list[str] = []
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    stop = threading.Event()

    def watch():  # every process on this machine, while the run is going
        while not stop.wait(0.3):
            seen.extend(c for c in _all_cmdlines() if "loadtest" in c or "locust" in c)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    stdout, stderr = proc.communicate(timeout=150)
    stop.set()
    watcher.join()
    assert proc.returncode == 0, stderr
    assert any("locust" in c and "--run-dir" in c for c in seen), "never saw the Locust child"
    assert any("loadtest.mock.cli" in c for c in seen), "never saw the mock child"
    for cmdline in seen:
        assert KEY not in cmdline and TOKEN not in cmdline
    run_dir = (tmp_path / "latest").resolve()
    rows = read_csv(run_dir / "requests.csv")
    assert {r["error_kind"] for r in rows if r["ok"] == "0"} >= {"http", "rate_limited", "connection", "schema", "timeout"}
    for text in (stdout, stderr, *(p.read_text(errors="replace") for p in run_dir.iterdir() if p.is_file())):
        assert KEY not in text and TOKEN not in text


@pytest.mark.slow
def test_check_with_rejected_credentials_prints_no_secret():
    with MockServer(MockConfig(latency_scale=0, api_key="other-key-1234", token="other-token-1234"), regions=["uk"]) as mock:
        env = {**os.environ, "POLYAI_API_KEY": KEY, "POLYAI_TOKEN": TOKEN}
        proc = loadtest("check", "--regions", "uk", "--base-urls", f"uk={mock.base_urls['uk']}", env=env)
    assert proc.returncode == 3
    assert "HTTP 401" in proc.stdout and "credentials rejected" in proc.stdout
    assert KEY not in proc.stdout + proc.stderr and TOKEN not in proc.stdout + proc.stderr


def _rate_run(tmp_path, mock, *extra, env=None, seconds=5):
    proc = loadtest(
        "run",
        "--regions",
        "uk",
        "--base-urls",
        f"uk={mock.base_urls['uk']}",
        "--variants",
        "",
        "--users",
        "8",
        "--spawn-rate",
        "50",
        "--think-time",
        "0",
        "--duration",
        f"{seconds}s",
        "--out",
        str(tmp_path),
        *extra,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    rows = read_csv((tmp_path / "latest").resolve() / "requests.csv")
    start = min(float(r["timestamp"]) for r in rows)
    return rows, start


@pytest.mark.slow
def test_max_rps_caps_the_request_rate(tmp_path):
    with MockServer(MockConfig(latency_scale=0), regions=["uk"]) as mock:
        rows, start = _rate_run(tmp_path, mock, "--max-rps", "10")
        sent = sum(mock.stats("uk")["requests"][e] for e in ("create", "respond", "close"))
    assert len(rows) == sent
    for window in (1.0, 2.0, 3.0):  # evenly spaced slots: at most rate × window + 1 in any window
        assert sum(start <= float(r["timestamp"]) < start + window for r in rows) <= 10 * window + 1
    assert len(rows) >= 20  # the cap slows the run down, it does not stop it


@pytest.mark.slow
def test_real_target_defaults_to_20_requests_per_second(tmp_path):
    """--target real (here: loopback, with credentials and --yes) without --max-rps: 20/s."""
    env = {**os.environ, "POLYAI_API_KEY": "mock-api-key", "POLYAI_TOKEN": "mock-token"}
    with MockServer(MockConfig(latency_scale=0), regions=["uk"]) as mock:
        rows, start = _rate_run(tmp_path, mock, "--target", "real", "--yes", env=env)
    for window in (1.0, 2.0, 3.0):
        assert sum(start <= float(r["timestamp"]) < start + window for r in rows) <= safety.REAL_TARGET_DEFAULT_MAX_RPS * window + 1
    assert len(rows) >= 40


def test_example_scenario_files_load():
    ci = config.resolve(config.load_file(ROOT / "examples" / "ci.toml"), environ={})
    assert ci.users == 24 and ci.duration == 40 and ci.warmup == 5
    assert set(ci.regions) == {"us", "uk", "eu", "self-serve"} and list(ci.variants) == ["a", "b"]
    assert len(ci.slos) == 4 and ci.integration_attributes == {"tier": "gold", "channel": "ci"}
    mock = load_config(ROOT / "examples" / "capacity-mock.toml")
    assert {r: mock.regions[r].slots for r in ("self-serve", "eu", "uk", "us")} == {"self-serve": 2, "eu": 4, "uk": 6, "us": 8}


def test_capacity_example_and_readme_agree_on_the_default_knees():
    readme = (ROOT / "README.md").read_text()
    example = (ROOT / "examples" / "capacity-mock.toml").read_text()
    assert "self-serve 80, eu 240, uk 368, us 368–448 users" in readme
    assert "80 / 240 / 368 / 368–448 users" in example


@pytest.mark.slow
def test_run_json_provenance_and_a_stable_config_hash(tmp_path):
    common = ["--regions", "uk", "--variants", "a", "--duration", "2s", "--users", "2", *FAST, "--mock-latency-scale", "0"]
    hashes = []
    for users in ("2", "2", "3"):
        proc = loadtest("run", *common, "--users", users, "--out", str(tmp_path / "out"))
        assert proc.returncode == 0, proc.stderr
        meta = run_json((tmp_path / "out" / "latest").resolve())
        hashes.append(meta["config_hash"])
    assert hashes[0] == hashes[1] != hashes[2]
    assert meta["tool_version"] == metadata.version("polyai-loadtest")
    assert meta["locust_version"] == metadata.version("locust")
    assert meta["python_version"] == ".".join(map(str, sys.version_info[:3]))
    assert meta["host"] == socket.gethostname()
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    if sha:
        assert meta["git_sha"] and sha.startswith(meta["git_sha"])
    assert runfolder.config_hash({"a": 1, "b": [1, 2]}) == runfolder.config_hash({"b": [1, 2], "a": 1})


@pytest.mark.slow
def test_run_that_cannot_start_locust_exits_3_and_says_why(tmp_path):
    proc = loadtest("run", "--regions", "uk", "--duration", "2s", "--out", str(tmp_path), "--", "--locustfile", str(tmp_path / "missing.py"))
    assert proc.returncode == 3, (proc.returncode, proc.stderr)
    assert "locust.log" in proc.stderr or "Locust exited" in proc.stderr
    run_dir = (tmp_path / "latest").resolve()
    assert run_json(run_dir)["status"] == "failed"
    assert time.time() - run_json(run_dir)["ended"] < 120
