"""The record is true: what a run writes matches what happened (issue 9).

Hidden retries, the configuration in run.json, conversation success, exit codes of
interrupted runs, the open model's schedule, and input refused before anything starts.
"""

import argparse
import io
import json
import os
import socket
import time
import warnings
from collections import Counter

import gevent
import pandas as pd
import pytest
from runs import FAST, loadtest, read_csv, read_rows, run_json
from synthetic import make_run

from analysis.load import RunDataError, load_run
from analysis.report import build_report, regions_sentence
from analysis.stats import compute_stats
from loadtest import api, config, runfolder, slo
from loadtest.inlocust import arrivals, plugin
from loadtest.commands import check
from analysis import records
from loadtest.mock import MockConfig, MockServer
from loadtest.progress import ProgressDisplay
from loadtest.inlocust.recorder import open_csv


@pytest.mark.slow
@pytest.mark.parametrize("endpoint", ["close", "respond"])
def test_a_reset_is_one_connection_row_per_request_the_server_received(tmp_path, endpoint):
    """geventhttpclient resends a PUT (close) on a reset connection below Locust: each try
    must be a row, so the rows equal the requests the mock counted, resets included."""
    config = MockConfig(latency_scale=0.1, faults=(f"{endpoint}:reset:0.5",))
    with MockServer(config, regions=["uk"]) as mock:
        proc = loadtest(
            "run",
            "--regions",
            "uk",
            "--base-urls",
            f"uk={mock.base_urls['uk']}",
            "--variants",
            "",
            "--duration",
            "5s",
            "--users",
            "6",
            *FAST,
            "--turns",
            "1-2",
            "--out",
            str(tmp_path),
        )
        stats = mock.stats("uk")
    assert proc.returncode == 0, proc.stderr
    rows = [r for r in read_rows((tmp_path / "latest").resolve()) if r["endpoint"] == endpoint]
    assert len(rows) == stats["requests"][endpoint]
    kinds = Counter((r["ok"], r["error_kind"]) for r in rows)
    assert kinds[("0", "connection")] == stats["faults"][endpoint]["reset"] > 0
    assert kinds[("1", "")] == len(rows) - kinds[("0", "connection")]


@pytest.mark.slow
def test_run_json_config_is_the_effective_scenario_from_flags_file_and_environment(tmp_path):
    scenario_file = tmp_path / "scenario.toml"
    scenario_file.write_text('users = 3\nwarmup = "1s"\nregions = ["uk", "eu"]\nturns = "1-2"\nslos = ["error_rate < 50%", "respond.p95 < 5s", "rps > 0"]\n')
    env = {**os.environ, "LOADTEST_DURATION": "3s", "LOADTEST_MOCK_LATENCY_SCALE": "0.1"}
    faults = ["respond:503:0.01", "create:503:0.01", "close:503:0.01", "uk.respond:spike:0.01:5ms", "eu.create:429:0.01"]
    flags = ["--spawn-rate", "20", "--think-time", "0.05-0.1", "--variants", "a:3,b:1", "--out", str(tmp_path / "out")]
    proc = loadtest("run", "--config", str(scenario_file), *flags, *[a for f in faults for a in ("--fault", f)], env=env)
    assert proc.returncode == 0, proc.stderr
    recorded = run_json((tmp_path / "out" / "latest").resolve())
    expected = config.resolve(
        config.load_file(scenario_file),
        {"spawn_rate": "20", "think_time": "0.05-0.1", "variants": "a:3,b:1", "out": str(tmp_path / "out"), "faults": faults},
        env,
    )
    assert recorded["config"] == json.loads(json.dumps(expected.raw()))
    for name, value in {"users": 3, "duration": 3.0, "warmup": 1.0, "faults": faults, "out": str(tmp_path / "out"), "mock_latency_scale": 0.1}.items():
        assert recorded["config"][name] == value, name
    assert len(recorded["config"]["slos"]) == 3
    assert recorded["config_hash"] == runfolder.config_hash(expected.raw())


def test_conversations_cut_by_the_end_are_neither_success_nor_failure(tmp_path):
    truth = make_run(tmp_path, rows=3_000, error_rate=0.0, seed=3)
    assert truth.stopped > 0  # the last conversations, running at the end
    path = tmp_path / "conversations.csv"
    conv = pd.read_csv(path, keep_default_na=False)
    conv.loc[conv.index[:40], ["ended_by", "ok"]] = ["stopped", 0]  # 40 more cut (the earliest: none were)
    conv.loc[conv.index[40:50], ["ended_by", "ok"]] = ["error", 0]
    conv.to_csv(path, index=False)
    stopped = 40 + truth.stopped
    finished = conv[conv.ended_by != "stopped"]
    expected = finished.ok.sum() / len(finished)
    assert expected == (len(conv) - stopped - 10) / (len(conv) - stopped)

    run = load_run(tmp_path, use_cache=False)
    overall = compute_stats(run).conversations.query("level == 'overall'").iloc[0]
    assert overall["stopped"] == stopped
    assert overall["success_rate"] == pytest.approx(expected)
    results = {r["expr"]: r for r in slo.evaluate_loaded(run, ["conversation.success_rate > 95%", "conversation.error_rate < 5%"])}
    assert results["conversation.success_rate > 95%"]["observed"] == pytest.approx(expected)
    assert results["conversation.error_rate < 5%"]["observed"] == pytest.approx(1 - expected)
    assert f"{stopped} cut by the end" in results["conversation.success_rate > 95%"]["detail"]


def test_arrivals_plan_nothing_after_the_end_say_why_they_drop_and_stop_sends_users_home(tmp_path, monkeypatch):
    monkeypatch.setattr(arrivals, "POOL_READY_TIMEOUT_S", 0.05)
    end = time.time() + 0.5
    out = open_csv(tmp_path / "arrivals.csv", records.ARRIVAL_COLUMNS)
    plan = arrivals.Arrivals({"uk": 40.0}, {}, poisson=False, out=out, end=end)
    plan.join()  # one user of a pool of two has started, and is busy (never takes)
    plan.start(pool=2)
    gevent.sleep(0.8)
    waiting = gevent.spawn(plan.take)
    gevent.sleep(0.05)
    plan.stop()
    with pytest.raises(arrivals.Stopped):
        waiting.get(timeout=2)
    with pytest.raises(arrivals.Stopped):
        plan.take()
    plan.close()
    rows = read_csv(tmp_path / "arrivals.csv")
    assert 10 <= len(rows) <= 21  # 40/s for the 0.45 s between start and end
    assert max(float(r["planned"]) for r in rows) < end
    assert {r["dropped"] for r in rows} == {"1"}
    assert {r["reason"] for r in rows} == {"pool not ready: 1 of 2 users spawned, all busy"}


@pytest.mark.slow
def test_open_model_pool_is_ready_before_the_first_arrival_and_nothing_runs_past_the_end(tmp_path):
    duration = 5
    proc = loadtest(
        "run",
        "--arrival-rate",
        "20",
        "--arrival",
        "constant",
        "--users",
        "200",
        "--spawn-rate",
        "8",
        "--duration",
        f"{duration}s",
        "--regions",
        "uk,eu",
        "--think-time",
        "0.05-0.1",
        "--turns",
        "1-2",
        "--mock-latency-scale",
        "0.1",
        "--out",
        str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    run_dir = (tmp_path / "latest").resolve()
    end = run_json(run_dir)["started"] + duration
    planned = read_csv(run_dir / "arrivals.csv")
    times = sorted(float(a["planned"]) for a in planned)
    assert len(times) >= 20 and times[-1] < end
    # Constant spacing, 10/s per region, over the whole schedule: the full rate was offered.
    assert abs(len(times) - 20 * (times[-1] - times[0])) <= 3, (len(times), times[-1] - times[0])
    # 200 users spawned at 8/s would leave the first seconds short of users: the pool is
    # spawned before the first arrival, so none is dropped.
    assert [a["reason"] for a in planned if a["dropped"] == "1"] == []
    creates = [float(r["timestamp"]) for r in read_rows(run_dir) if r["endpoint"] == "create"]
    assert len(creates) == len(planned)
    lags = [float(a["lag_ms"]) / 1000 for a in planned]
    assert max(creates) <= end + max(lags) + 0.01


def test_per_region_arrival_rates_choose_the_regions_or_are_refused():
    scenario = config.resolve(flags={"arrival_rate": "us:2,uk:3"}, environ={})
    assert list(scenario.regions) == ["us", "uk"]
    assert scenario.notes == ["open model: regions us, uk (those --arrival-rate names)"]
    with pytest.raises(config.ConfigError, match="no rate for region.s. eu of --regions"):
        config.resolve(flags={"arrival_rate": "us:2,uk:3", "regions": "us,uk,eu"}, environ={})
    with pytest.raises(config.ConfigError, match="not in --regions"):
        config.resolve(flags={"arrival_rate": "us:2,eu:3", "regions": "us,uk"}, environ={})
    assert list(config.resolve(flags={"arrival_rate": "5"}, environ={}).regions) == ["us", "uk", "eu", "self-serve"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "args,message",
    [
        (["--users", "0"], "--users 0: need at least 1 user"),
        (["--duration", "0"], "--duration 0s: a test needs time"),
        (["--spawn-rate", "0"], "--spawn-rate 0: users would never start"),
        (["--think-time", "-1"], "flag --think-time: '-1' is negative"),
        (["--request-timeout", "0"], "--request-timeout must be more than 0"),
        (["--warmup", "5s", "--duration", "5s"], "--warmup 5s is not shorter than --duration 5s"),
        (["--bogus"], "loadtest run: error: unrecognized arguments: --bogus"),
    ],
)
def test_values_that_cannot_make_a_test_exit_2_before_anything_starts(tmp_path, args, message):
    proc = loadtest("run", *args, "--out", str(tmp_path / "out"), timeout=60)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert message in proc.stderr
    assert not (tmp_path / "out").exists(), "nothing was started, nothing written"


def test_fault_flag_takes_comma_lists_and_the_faults_spelling():
    from loadtest.cli import build_parser
    from loadtest.commands.arguments import scenario_from_args

    args = build_parser().parse_args(["run", "--faults", "respond:503:0.05,create:429:0.1", "--fault", "close:503:0.1"])
    assert scenario_from_args(args).faults == ["respond:503:0.05", "create:429:0.1", "close:503:0.1"]


def test_a_real_target_gets_no_variant_unless_asked():
    assert config.resolve(flags={"target": "real"}, environ={}).variants == {}
    assert list(config.resolve(flags={"target": "real", "variants": "x"}, environ={}).variants) == ["x"]
    assert list(config.resolve(flags={}, environ={}).variants) == ["a", "b"]  # the mock's demo pair


def test_check_without_a_response_says_what_to_check(capsys):
    scenario = config.resolve(flags={"regions": "uk,eu", "request_timeout": "2s"}, environ={})
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{s.getsockname()[1]}"
    code = check.run_check(scenario, {"uk": "http://no-such-host.invalid", "eu": refused})
    out = capsys.readouterr().out
    assert code == 3
    assert "hint: the host name no-such-host.invalid did not resolve" in out
    assert f"hint: nothing accepts connections at {refused}" in out
    assert "see the hints above" in out


@pytest.mark.slow
def test_an_incomplete_last_line_is_skipped_and_named_damage_in_the_middle_is_refused(tmp_path):
    make_run(tmp_path, rows=2_000, error_rate=0.01, seed=5)
    requests_csv, conversations_csv = tmp_path / "requests.csv", tmp_path / "conversations.csv"
    whole = load_run(tmp_path, use_cache=False)
    for path in (requests_csv, conversations_csv):  # what a crash or a full disk leaves
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(lines) + lines[-1][: len(lines[-1]) // 2])
    run = load_run(tmp_path, use_cache=False)
    assert len(run.requests) == len(whole.requests)
    assert len(run.conversations) == len(whole.conversations)
    assert run.incomplete == ["conversations.csv", "requests.csv"]
    html = build_report(tmp_path).read_text()
    assert "Incomplete last line skipped" in html and "requests.csv" in html

    lines = requests_csv.read_text().splitlines(keepends=True)
    lines[40] = ",".join(lines[40].split(",")[:3]) + "\n"  # a short line in the middle: damage
    requests_csv.write_text("".join(lines))
    with pytest.raises(RunDataError, match="line 41"):
        load_run(tmp_path, use_cache=False)


def test_the_regions_sentence_never_calls_a_faster_tail_slowest():
    reg = pd.DataFrame(
        {
            "group": ["us", "uk", "eu"],
            "is_reference": [True, False, False],
            "p50_ms": [100.0, 110.0, 120.0],
            "p95_ms": [335.0, 125.0, 150.0],
            "d_p95_pct": [0.0, -0.63, -0.55],
            "d_p95_verdict": ["", "significant", "noise"],
            "d_p95_lo": [0.0, -230.0, -200.0],
            "d_p95_hi": [0.0, -190.0, 10.0],
        }
    )
    text = regions_sentence(reg, "respond")
    assert text.startswith("us had the lowest respond p50 (100 ms) but the highest p95 (335 ms)")
    assert "uk had the lowest p95, 125 ms, −63% against us (a real difference: 95% CI" in text
    reg["p95_ms"] = [120.0, 125.0, 150.0]
    reg["d_p95_pct"] = [0.0, 0.04, 0.25]
    text = regions_sentence(reg, "respond")
    assert text.startswith("us was fastest by median: respond p50 100 ms (p95 120 ms)")
    assert "eu had the highest p95, 150 ms, +25% against us (within noise: 95% CI" in text


@pytest.mark.slow
def test_a_group_whose_requests_all_failed_warns_nothing(tmp_path):
    make_run(tmp_path, rows=2_000, variants=("a", "b"), seed=2, error_rates={(r, "respond"): 1.0 for r in ("uk", "us", "eu")})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "All-NaN slice" RuntimeWarning went to stderr
        assert build_report(tmp_path).is_file()


def test_progress_shows_the_shapes_run_time_not_the_default_duration():
    snap = {"rows": [], "conversations": {"active": 0, "completed": 0}, "users": 3}
    display = ProgressDisplay(None, stream=io.StringIO())
    assert display.lines(snap)[0].startswith("[   0s] users 3")
    assert display.lines({**snap, "duration_s": 90})[0].startswith("[   0s/90s] users 3")
    assert ProgressDisplay(45, stream=io.StringIO()).lines(snap)[0].startswith("[   0s/45s]")


@pytest.mark.slow
def test_a_shape_run_prints_its_own_run_time(tmp_path):
    proc = loadtest("run", "--shape", "ramp:users=3,ramp=1s,hold=4s,down=1s", "--regions", "uk", *FAST, "--mock-latency-scale", "0.1", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    heads = [line for line in proc.stdout.splitlines() if line.startswith("[")]
    assert heads and all("/6s]" in line for line in heads), heads


@pytest.mark.parametrize("latency_scale", [0, 1])  # answered at once, or after a service time
def test_a_client_that_half_closes_after_a_whole_request_gets_its_answer(latency_scale):
    with MockServer(MockConfig(latency_scale=latency_scale), regions=["uk"]) as mock:
        body = b"{}"
        request = (
            f"POST {api.path('create')} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"{api.API_KEY_HEADER}: {api.DUMMY_API_KEY}\r\n{api.TOKEN_HEADER}: {api.DUMMY_TOKEN}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        with socket.create_connection(("127.0.0.1", mock.ports["uk"]), timeout=5) as s:
            s.sendall(request)
            s.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
        stats = mock.stats("uk")
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert b'"conversation_id"' in answer
    assert stats["created"] == 1


def test_a_test_started_from_locust_or_the_web_ui_records_what_it_was_given():
    scenario = config.resolve(flags={"regions": "uk", "variants": "x"}, environ={})
    options = argparse.Namespace(num_users=7, spawn_rate=2.5, run_time=30, out="elsewhere")
    environ = {"LOADTEST_FAULTS": "respond:503:0.1,close:reset:0.2", "LOADTEST_WARMUP": "3", "LOADTEST_SLOS": "error_rate < 1%", "LOADTEST_MOCK_SEED": "9"}
    recorded = plugin.recorded_config(scenario, options, environ)
    assert recorded["faults"] == ["respond:503:0.1", "close:reset:0.2"]
    assert (recorded["warmup"], recorded["slos"], recorded["mock_seed"]) == (3.0, ["error_rate < 1%"], 9)
    assert (recorded["users"], recorded["spawn_rate"], recorded["duration"], recorded["out"]) == (7, 2.5, 30.0, "elsewhere")
    assert recorded["regions"] == {"uk": 1.0} and recorded["variants"] == {"x": 1.0}
