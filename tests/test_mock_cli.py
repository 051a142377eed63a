"""``loadtest mock`` (run as ``python -m loadtest.mock.cli``) and the TOML configuration."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from loadtest import api
from loadtest.mock import config_from_dict, load_config
from loadtest.mock.cli import add_arguments, config_from_args
from loadtest.mock.cli import main as mock_main
from runs import free_port_block

ROOT = Path(__file__).resolve().parent.parent


def start(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(api.API_KEY_ENV, None)
    env.pop(api.TOKEN_ENV, None)
    return subprocess.Popen([sys.executable, "-m", "loadtest.mock.cli", *args], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_ready(proc: subprocess.Popen, path: Path, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"mock exited {proc.returncode}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("no ready file")
        time.sleep(0.05)
    return json.loads(path.read_text())


def stop(proc: subprocess.Popen) -> tuple[int, str, str]:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)
    return proc.returncode, out, err


def test_all_regions_on_free_ports_ready_file_and_table(tmp_path):
    ready = tmp_path / "ready.json"
    proc = start("--port", "0", "--ready-file", str(ready), "--latency-scale", "0")
    try:
        data = wait_ready(proc, ready)
        assert list(data["regions"]) == list(api.REGIONS)
        for region, url in data["regions"].items():
            assert url.startswith("http://127.0.0.1:")
            assert httpx.get(url + "/_mock/stats").json()["region"] == region
        r = httpx.post(data["regions"]["uk"] + api.path("create"), json={}, headers=api.headers(api.DUMMY_API_KEY, api.DUMMY_TOKEN))
        assert r.status_code == 200
    finally:
        code, out, err = stop(proc)
    assert code == 0, err
    assert not ready.exists()  # removed on exit
    table = {line.split()[0]: line.split()[1] for line in out.splitlines() if line.split() and line.split()[0] in api.REGIONS and "://" in line}
    assert table == data["regions"]
    assert "uk: " in out and "1 created" in out  # the summary on exit


def test_consecutive_ports_in_region_order(tmp_path):
    base = free_port_block(4)
    ready = tmp_path / "r.json"
    proc = start("--port", str(base), "--ready-file", str(ready), "--quiet")
    try:
        urls = wait_ready(proc, ready)["regions"]
    finally:
        code, out, _ = stop(proc)
    assert code == 0 and out == ""
    assert urls == {region: f"http://127.0.0.1:{base + i}" for i, region in enumerate(api.REGIONS)}


def test_one_region_with_config_file_and_flags(tmp_path):
    port = free_port_block(1)
    config = tmp_path / "mock.toml"
    config.write_text('[mock]\nseed = 3\nfaults = ["create:503:1"]\n[mock.regions.uk]\nslots = 5\n')
    ready = tmp_path / "r.json"
    proc = start(
        "--region",
        "uk",
        "--port",
        str(port),
        "--ready-file",
        str(ready),
        "--config",
        str(config),
        "--fault",
        "respond:502:1",
        "--latency-scale",
        "0",
        "--idle-timeout",
        "60",
    )
    try:
        urls = wait_ready(proc, ready)["regions"]
        assert urls == {"uk": f"http://127.0.0.1:{port}"}
        stats = httpx.get(urls["uk"] + "/_mock/stats").json()
        assert stats["slots"] == 5 and stats["queue_limit"] == 10
        r = httpx.post(urls["uk"] + api.path("create"), json={}, headers=api.headers(api.DUMMY_API_KEY, api.DUMMY_TOKEN))
        assert r.status_code == 503
    finally:
        code, _, err = stop(proc)
    assert code == 0, err


def exit_code_and_stderr(capsys, *args: str) -> tuple[int, str]:
    """`loadtest mock ARGS` in this process, for the paths that end before serving (a child
    process per case would spend its second importing the server to print one line)."""
    try:
        code = mock_main(list(args))
    except SystemExit as e:  # argparse's own errors
        code = e.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--fault", "respond:504:0.1"], "unknown kind '504'"),
        (["--region", "mars"], "invalid choice"),
    ],
)
def test_bad_flags_exit_2_with_a_clear_message(capsys, args, message):
    code, err = exit_code_and_stderr(capsys, "--port", "0", *args)
    assert code == 2 and message in err


def test_bad_config_file_exits_2(tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text("latency_scal = 0\n")
    code, err = exit_code_and_stderr(capsys, "--port", "0", "--config", str(config))
    assert code == 2
    assert "'latency_scal'" in err and "latency_scale" in err


def test_busy_port_exits_1(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        code, err = exit_code_and_stderr(capsys, "--region", "eu", "--port", str(port))
    assert code == 1 and "cannot listen" in err


# ------------------------------------------------------------------ configuration


def test_flags_override_config_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('latency_scale = 2.0\nend_after = 4\nfaults = ["close:reset:0.5"]\n')
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--config", str(path), "--latency-scale", "0", "--fault", "create:503:0.1"])
    config = config_from_args(args)
    assert config.latency_scale == 0 and config.end_after == 4
    assert [f.spec for f in config.faults] == ["close:reset:0.5", "create:503:0.1"]


def test_config_from_dict_merges_partial_tables():
    config = config_from_dict(
        {
            "regions": {"eu": {"respond": {"median_ms": 10, "p99_ms": 20}, "queue_limit": 3}},
            "variants": {"b": {"latency_factor": 2.0}, "c": {"brand": "Acme Cars", "handoff_factor": 0.5}},
        }
    )
    eu = config.regions["eu"]
    assert (eu.respond.median_ms, eu.respond.p99_ms, eu.queue_limit, eu.slots) == (10, 20, 3, 32)
    assert eu.create.median_ms == 100  # untouched
    assert config.variants["b"].latency_factor == 2.0 and config.variants["b"].brand == "Acme Rentals"
    assert config.variants["c"].brand == "Acme Cars"


@pytest.mark.parametrize(
    "data, message",
    [
        ({"regions": {"mars": {}}}, "unknown region 'mars'"),
        ({"regions": {"uk": {"speed": 1}}}, "'speed'"),
        ({"regions": {"uk": {"create": {"mean_ms": 1}}}}, "'mean_ms'"),
        ({"variants": {"a": {"colour": "red"}}}, "'colour'"),
        ({"variants": {"z": {"latency_factor": 1}}}, "needs a brand"),
        ({"faults": ["respond:oops:1"]}, "unknown kind"),
        ({"latency_scale": -1}, "latency_scale"),
        ({"regions": {"uk": {"create": {"median_ms": 10, "p99_ms": 5}}}}, "p99_ms"),
    ],
)
def test_config_errors_are_clear(data, message):
    with pytest.raises(ValueError, match=message):
        config_from_dict(data)


def test_load_config_reports_bad_toml(tmp_path):
    path = tmp_path / "x.toml"
    path.write_text("seed = = 1")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_config(path)
