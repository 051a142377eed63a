"""SLOs: grammar, evaluation on DataFrames with known values, and the verdict writers."""

import json
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest

from analysis.records import CONVERSATION_COLUMNS, REQUEST_COLUMNS
from loadtest.slo import GRAMMAR, SLO, SLOError, evaluate, exit_code, junit_xml, markdown, parse_slo, parse_slos, write_reports

T0 = 1_700_000_000.0


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    "expr,scope,metric,op,threshold,unit",
    [
        ("respond.p95 < 800ms", (None, None, "respond"), "p95", "<", 800, "ms"),
        ("uk.create.p99 < 1.5s", ("uk", None, "create"), "p99", "<", 1500, "ms"),
        ("error_rate < 1%", (None, None, None), "error_rate", "<", 0.01, "fraction"),
        ("conversation.duration.p95 < 20s", (None, None, None), "conversation.duration.p95", "<", 20, "s"),
        ("uk.a.respond.p99<=2s", ("uk", "a", "respond"), "p99", "<=", 2000, "ms"),
        ("b.error_rate < 0.5%", (None, "b", None), "error_rate", "<", 0.005, "fraction"),
        ("rps > 10", (None, None, None), "rps", ">", 10, "req/s"),
        ("self-serve.p99.9 < 3s", ("self-serve", None, None), "p99.9", "<", 3000, "ms"),
        ("respond.uk.p50 >= 1m", ("uk", None, "respond"), "p50", ">=", 60_000, "ms"),
        ("mean < 250", (None, None, None), "mean", "<", 250, "ms"),
        ("close.max == 1e3ms", (None, None, "close"), "max", "==", 1000, "ms"),
        ("error_rate <= 0.02", (None, None, None), "error_rate", "<=", 0.02, "fraction"),
        ("count >= 100", (None, None, None), "count", ">=", 100, "count"),
        ("p97.5 < 900ms", (None, None, None), "p97.5", "<", 900, "ms"),
        ("conversation.duration.mean < 1500ms", (None, None, None), "conversation.duration.mean", "<", 1.5, "s"),
        ("conversation.duration.p99 < 2m", (None, None, None), "conversation.duration.p99", "<", 120, "s"),
        ("conversation.turns.mean > 3", (None, None, None), "conversation.turns.mean", ">", 3, "turns"),
        ("uk.conversation.success_rate >= 99%", ("uk", None, None), "conversation.success_rate", ">=", 0.99, "fraction"),
        ("conversation.error_rate < 2%", (None, None, None), "conversation.error_rate", "<", 0.02, "fraction"),
        ("conversation.orphaned == 0", (None, None, None), "conversation.orphaned", "==", 0, "count"),
    ],
)
def test_parse_valid(expr, scope, metric, op, threshold, unit):
    slo = parse_slo(expr)
    assert (slo.region, slo.variant, slo.endpoint) == scope
    assert slo.metric == metric and slo.op == op and slo.unit == unit
    assert slo.threshold == pytest.approx(threshold)
    assert slo.expr == expr


def test_scope_text_is_normalised():
    assert parse_slo("respond.a.uk.p95 < 1s").scope == "uk.a.respond"
    assert parse_slo("error_rate < 1%").scope == "all"


@pytest.mark.parametrize(
    "expr,fragments",
    [
        ("respond.p95 < fast", ["value 'fast' is not a number with a unit (ms, s, %)"]),
        ("respond.p95 <", ["is not a number with a unit"]),
        ("respond.latency < 800ms", ["unknown metric 'latency'", "p95", "error_rate", "rps"]),
        ("respond.p95 < 5%", ["p95 is a latency", "not a percentage"]),
        ("conversation.duration.p95 < 5%", ["duration", "not a percentage"]),
        ("error_rate < 200ms", ["error_rate is a rate", "'ms'"]),
        ("error_rate < 5", ["not a fraction 0..1", "5%"]),
        ("rps > 10s", ["rps", "drop the unit 's'"]),
        ("respond.p95 800ms", ["no comparison operator"]),
        ("respond.p95 = 800ms", ["operator '='", "=="]),
        ("respond.p95 != 800ms", ["operator '!='"]),
        ("uk.us.p95 < 1s", ["two regions", "'uk'", "'us'"]),
        ("create.respond.p95 < 1s", ["two endpoints"]),
        ("uk.respond < 1s", ["'respond' is a scope, not a metric"]),
        ("conversation.length.p95 < 1s", ["unknown conversation metric 'conversation.length.p95'", "conversation.duration"]),
        ("respond.conversation.duration.p95 < 1s", ["endpoint 'respond' cannot scope a conversation"]),
        ("p101 < 1s", ["unknown metric 'p101'"]),
        ("uk..p95 < 1s", ["empty name"]),
        ("bad!name.p95 < 1s", ["operator"]),
        ("", ["empty expression"]),
    ],
)
def test_parse_invalid(expr, fragments):
    with pytest.raises(SLOError) as e:
        parse_slo(expr)
    message = str(e.value)
    for fragment in fragments:
        assert fragment in message
    assert GRAMMAR in message  # every error shows the grammar
    assert isinstance(e.value, ValueError)


def test_variants_validated_when_given():
    assert parse_slo("a.respond.p95 < 1s", variants=["a", "b"]).variant == "a"
    with pytest.raises(SLOError, match=r"unknown scope 'c'.*variant of this run \(a, b\)"):
        parse_slo("c.respond.p95 < 1s", variants=["a", "b"])
    with pytest.raises(SLOError, match=r"\(none\)"):
        parse_slo("c.p95 < 1s", variants=[])
    assert parse_slo("c.p95 < 1s").variant == "c"  # no list: any name is a variant


def test_parse_slos_string_and_list():
    slos = parse_slos("respond.p95 < 800ms; error_rate < 1%\n# comment\n\nrps > 1")
    assert [s.metric for s in slos] == ["p95", "error_rate", "rps"]
    assert parse_slos([slos[0], "count > 0"])[0] is slos[0]


# --------------------------------------------------------------------------- evaluation


def _requests(rows):
    df = pd.DataFrame(rows)
    for col in REQUEST_COLUMNS:
        if col not in df.columns:
            df[col] = ""
    return df[list(REQUEST_COLUMNS)]


@pytest.fixture
def run():
    """Requests in two regions and two variants with known latencies; 10% failures in uk."""
    rng = np.random.default_rng(7)
    rows = []
    conv = 0
    for region, scale in (("uk", 300.0), ("us", 600.0)):
        for variant in ("a", "b"):
            for i in range(50):
                conv += 1
                cid = f"c{conv}"
                t = T0 + i * 2.0 + (0.5 if region == "us" else 0)
                for turn, endpoint in enumerate(("create", "respond", "respond", "close")):
                    failed = region == "uk" and endpoint == "respond" and i % 5 == 0 and turn == 1
                    rows.append(
                        {
                            "timestamp": t + turn * 0.2,
                            "region": region,
                            "variant": variant,
                            "endpoint": endpoint,
                            "name": f"{region} · {variant} · {endpoint}",
                            "response_time_ms": float(rng.gamma(4.0, scale / 4.0)),
                            "status": 500 if failed else 200,
                            "ok": 0 if failed else 1,
                            "error_kind": "http" if failed else "",
                            "conversation_id": cid,
                            "turn": turn,
                        }
                    )
    requests = _requests(rows)
    conversations = pd.DataFrame(
        {
            "conversation_id": [f"c{i}" for i in range(1, conv + 1)],
            "region": ["uk"] * 100 + ["us"] * 100,
            "variant": (["a"] * 50 + ["b"] * 50) * 2,
            "started": [T0 + (i % 50) * 2.0 for i in range(conv)],
            "ended": [T0 + (i % 50) * 2.0 + 5 for i in range(conv)],
            "duration_s": np.linspace(1.0, 20.0, conv),
            "turns": [2] * conv,
            "ended_by": ["end_conversation"] * conv,
            "ok": [0 if i < 10 else 1 for i in range(conv)],
        }
    )[list(CONVERSATION_COLUMNS)]
    return requests, conversations


def _one(expr, run, **kw):
    (result,) = evaluate([expr], *run, **kw)
    return result


def test_percentile_matches_numpy(run):
    requests, _ = run
    sel = requests[(requests.region == "uk") & (requests.endpoint == "respond") & (requests.ok == 1)]
    expected = float(np.percentile(sel.response_time_ms, 95))
    r = _one("uk.respond.p95 < 10s", run)
    assert r["observed"] == pytest.approx(expected, rel=1e-12)
    assert r["passed"] is True
    assert r["metric"] == "p95" and r["scope"] == "uk.respond" and r["unit"] == "ms"
    assert set(r) >= {"expr", "scope", "metric", "op", "threshold", "unit", "observed", "passed", "detail"}
    # Threshold just below the observed value fails.
    assert _one(f"uk.respond.p95 < {expected - 0.001}ms", run)["passed"] is False

    sel = requests[(requests.region == "us") & (requests.variant == "a") & (requests.ok == 1)]
    for q in (50, 99, 99.9):
        r = _one(f"us.a.p{q:g} < 1m", run)
        assert r["observed"] == pytest.approx(float(np.percentile(sel.response_time_ms, q)), rel=1e-12)


def test_mean_min_max_over_successes(run):
    requests, _ = run
    ok = requests[(requests.endpoint == "respond") & (requests.ok == 1)].response_time_ms
    assert _one("respond.mean < 1m", run)["observed"] == pytest.approx(ok.mean())
    assert _one("respond.min < 1m", run)["observed"] == pytest.approx(ok.min())
    assert _one("respond.max < 1m", run)["observed"] == pytest.approx(ok.max())


def test_error_rate_count_and_rps(run):
    requests, _ = run
    # uk: 20 failures (i % 5 == 0 for 50 convs × 2 variants) of 400 requests.
    r = _one("uk.error_rate < 1%", run)
    assert r["observed"] == pytest.approx(20 / 400) and r["passed"] is False
    assert "20 failed of 400" in r["detail"]
    assert _one("us.error_rate == 0%", run)["passed"] is True
    assert _one("uk.respond.error_rate <= 10%", run)["observed"] == pytest.approx(20 / 200)
    assert _one("count == 800", run)["passed"] is True
    r = _one("uk.a.count > 0", run)
    assert r["observed"] == 200
    r = _one("rps > 1", run, duration_s=100.0)
    assert r["observed"] == pytest.approx(8.0)
    # Default duration: first request start to last request end.
    span = float((requests.timestamp + requests.response_time_ms / 1000).max() - requests.timestamp.min())
    assert _one("rps > 1", run)["observed"] == pytest.approx(800 / span)


def test_conversation_metrics(run):
    requests, conversations = run
    r = _one("conversation.duration.p95 < 20s", run)
    assert r["observed"] == pytest.approx(float(np.percentile(conversations.duration_s, 95)))
    assert r["unit"] == "s" and r["passed"] is True
    r = _one("uk.conversation.success_rate >= 99%", run)
    assert r["observed"] == pytest.approx(90 / 100) and r["passed"] is False
    assert _one("conversation.error_rate < 10%", run)["observed"] == pytest.approx(10 / 200)
    assert _one("conversation.turns.mean == 2", run)["passed"] is True
    assert _one("us.b.conversation.count == 50", run)["passed"] is True


def test_orphaned_conversations(run):
    requests, conversations = run
    assert _one("conversation.orphaned == 0", run)["observed"] == 0
    # Drop two close rows and fail a third: three conversations were never closed.
    closes = requests.index[requests.endpoint == "close"]
    requests = requests.drop(closes[:2]).copy()
    requests.loc[closes[2], "ok"] = 0
    r = _one("conversation.orphaned == 0", (requests, conversations))
    assert r["observed"] == 3 and r["passed"] is False
    assert "3 of 200" in r["detail"]


def test_no_data_fails_and_says_so(run):
    results = evaluate(["eu.respond.p95 < 1s", "zz.error_rate < 1%", "eu.conversation.duration.p95 < 1s", "eu.rps > 0"], *run)
    for r in results:
        assert r["passed"] is False and r["observed"] is None
        assert r["detail"].startswith("no data")
        assert r["observed_text"] == "no data"
    assert "eu.respond" in results[0]["detail"]
    # Empty frames and a missing conversations frame do not crash either.
    empty = _requests([])
    (r,) = evaluate(["p95 < 1s"], empty, None)
    assert r["observed"] is None and r["passed"] is False
    (r,) = evaluate(["conversation.success_rate > 90%"], *run[:1])
    assert r["observed"] is None


def test_all_failed_scope_has_no_latency_data(run):
    requests, conversations = run
    requests = requests.copy()
    requests.loc[requests.endpoint == "close", "ok"] = 0
    r = _one("close.p95 < 1s", (requests, conversations))
    assert r["observed"] is None and "no successful requests" in r["detail"]
    assert _one("close.error_rate < 1%", (requests, conversations))["observed"] == 1.0


def test_warmup_drops_early_requests(run):
    requests, conversations = run
    after = requests[requests.timestamp >= T0 + 50]
    r = _one("count > 0", run, warmup_s=50)
    assert r["observed"] == len(after)
    ok = after[(after.endpoint == "respond") & (after.ok == 1)].response_time_ms
    assert _one("respond.p95 < 1m", run, warmup_s=50)["observed"] == pytest.approx(np.percentile(ok, 95))
    assert _one("conversation.count > 0", run, warmup_s=50)["observed"] == int((conversations.started >= T0 + 50).sum())


def test_string_columns_as_read_from_csv(run, tmp_path):
    """CSV round trip (ok/variant as strings or NaN) gives the same answers."""
    requests, conversations = run
    path = tmp_path / "requests.csv"
    requests.to_csv(path, index=False)
    loaded = pd.read_csv(path)
    for expr in ("uk.a.respond.p95 < 1s", "error_rate < 1%", "conversation.orphaned == 0"):
        assert _one(expr, (loaded, conversations))["observed"] == pytest.approx(_one(expr, run)["observed"])


def test_exit_code(run):
    assert exit_code(evaluate(["error_rate < 50%", "count > 0"], *run)) == 0
    assert exit_code(evaluate(["error_rate < 50%", "eu.count > 0"], *run)) == 1
    assert exit_code([]) == 0


def test_evaluate_accepts_parsed_slos(run):
    slo = parse_slo("respond.p95 < 10s")
    assert isinstance(slo, SLO)
    assert evaluate([slo], *run)[0]["expr"] == "respond.p95 < 10s"


def test_variants_checked_in_evaluate(run):
    with pytest.raises(SLOError, match="unknown scope 'c'"):
        evaluate(["c.p95 < 1s"], *run, variants=["a", "b"])


# --------------------------------------------------------------------------- writers

EXPRS = ["uk.respond.p95 < 10s", "uk.error_rate < 1%", "eu.p99 < 1s", "count == 800"]


@pytest.fixture
def results(run):
    return evaluate(EXPRS, *run)


def test_junit_xml(results, tmp_path):
    paths = write_reports(results, tmp_path)
    root = ET.parse(paths["junit"]).getroot()
    suites = root.findall("testsuite") if root.tag == "testsuites" else [root]
    assert len(suites) == 1 and suites[0].get("name") == "slo"
    cases = suites[0].findall("testcase")
    assert [c.get("name") for c in cases] == EXPRS
    failed = {c.get("name"): c.find("failure") for c in cases}
    assert failed["uk.respond.p95 < 10s"] is None and failed["count == 800"] is None
    msg = failed["uk.error_rate < 1%"].get("message")
    assert "observed 5%" in msg and "threshold < 1%" in msg
    assert "no data" in failed["eu.p99 < 1s"].get("message")
    assert suites[0].get("tests") == "4" and suites[0].get("failures") == "2"
    assert junit_xml(results).startswith("<?xml")


def test_slo_json(results, tmp_path):
    paths = write_reports(results, tmp_path)
    assert paths["json"] == tmp_path / "slo.json"
    data = json.loads((tmp_path / "slo.json").read_text())
    assert [d["expr"] for d in data] == EXPRS
    assert [d["passed"] for d in data] == [True, False, False, True]
    assert data[2]["observed"] is None


def test_slo_md(results, tmp_path, monkeypatch):
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    write_reports(results, tmp_path)
    text = (tmp_path / "slo.md").read_text()
    assert "❌ 2 of 4 SLOs failed" in text
    lines = [ln for ln in text.splitlines() if ln.startswith("| ")]
    assert len(lines) == 1 + len(EXPRS)  # header + one row per SLO
    assert lines[1].startswith("| ✅ | `uk.respond.p95 < 10s`")
    assert lines[2].startswith("| ❌ | `uk.error_rate < 1%` | 5% | < 1% |")
    assert "no data" in lines[3]
    assert "✅ All 1 SLOs passed" in markdown(results[:1])


def test_step_summary_appended(results, tmp_path, monkeypatch):
    summary = tmp_path / "summary.md"
    summary.write_text("# earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    run_dir = tmp_path / "run"
    write_reports(results, run_dir)
    write_reports(results, run_dir)
    text = summary.read_text()
    assert text.startswith("# earlier step\n")
    assert text.count("## SLO verdict") == 2
    assert (run_dir / "slo.md").read_text().count("## SLO verdict") == 1


# --------------------------------------------------------------------------- run folders


def test_evaluate_run_and_verdict(tmp_path, monkeypatch):
    from synthetic import make_run

    from loadtest.slo import evaluate_run, verdict

    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    truth = make_run(tmp_path / "run", rows=3000, variants=("a", "b"), orphans=3, workers=2, stats_history=False)
    raw = pd.concat([pd.read_csv(f, keep_default_na=False) for f in sorted(truth.path.glob("requests*.csv"))])
    sel = raw[(raw.region == "uk") & (raw.variant == "a") & (raw.endpoint == "respond") & (raw.ok == 1)]
    results = evaluate_run(truth.path, ["uk.a.respond.p95 < 1m", "conversation.orphaned == 0", "rps > 0", "count > 0"])
    p95, orphaned, rps, count = results
    assert p95["observed"] == pytest.approx(float(np.percentile(sel.response_time_ms, 95)))
    assert orphaned["observed"] == truth.orphans and orphaned["passed"] is False
    assert count["observed"] == len(raw)
    assert rps["observed"] > 0
    # Warm-up: requests in the first 30 s of the run are not counted.
    (count_after,) = evaluate_run(truth.path, ["count > 0"], warmup_s=30)
    assert count_after["observed"] == int((raw.timestamp >= truth.start + 30).sum())
    # Unknown variant names are caught against the run's variants.
    with pytest.raises(SLOError, match="unknown scope 'c'"):
        evaluate_run(truth.path, ["c.p95 < 1s"])
    assert evaluate_run(truth.path, ["c.p95 < 1s"], check_variants=False)[0]["observed"] is None

    assert verdict(truth.path, ["uk.a.respond.p95 < 1m"]) == 0
    assert verdict(truth.path, "uk.a.respond.p95 < 1m; conversation.orphaned == 0") == 1
    for name in ("slo.json", "junit.xml", "slo.md"):
        assert (truth.path / name).exists()
    assert len(json.loads((truth.path / "slo.json").read_text())) == 2


# --------------------------------------------------------------------------- live abort


def _abort_rows(start: float, n: int, fail_every: int, latency_ms: float = 50.0):
    """n requests, one every 0.1 s from `start`, every `fail_every`-th failing (0: none)."""
    return pd.DataFrame(
        {
            "timestamp": [start + 0.1 * i for i in range(n)],
            "region": ["uk"] * n,
            "variant": ["a"] * n,
            "endpoint": ["respond"] * n,
            "response_time_ms": [latency_ms] * n,
            "status": [200] * n,
            "ok": [0 if fail_every and i % fail_every == 0 else 1 for i in range(n)],
            "error_kind": [""] * n,
            "conversation_id": [f"c{i}" for i in range(n)],
        }
    )


def test_abort_markers_parse_from_expressions_and_scenario_tables():
    from loadtest import abort, config

    s = parse_slo("uk.respond.p95 < 800ms abort-on-fail=1m")
    assert (s.expr, s.abort_on_fail, s.abort_grace_s) == ("uk.respond.p95 < 800ms", True, 60.0)
    assert parse_slo("error_rate < 1%").abort_on_fail is False
    with pytest.raises(SLOError, match="whole-run total"):
        parse_slo("count > 10 abort-on-fail")
    with pytest.raises(SLOError, match="not a duration"):
        parse_slo("error_rate < 1% abort-on-fail=soon")
    scenario = config.resolve({"slos": [{"expr": "error_rate < 1%", "abort_on_fail": True, "abort_grace": "10s"}, "respond.p95 < 2s", "count > 1"]}, environ={})
    assert [(s.expr, s.abort_grace_s) for s in abort.abortable(scenario)] == [("error_rate < 1%", 10.0)]
    everything = config.resolve({"slos": ["respond.p95 < 2s", "count > 1"]}, {"abort_on_fail": "true"}, environ={})
    assert [s.expr for s in abort.abortable(everything)] == ["respond.p95 < 2s"]  # never a total
    with pytest.raises(ValueError, match="abort_grace needs abort_on_fail"):
        config.resolve({"slos": [{"expr": "error_rate < 1%", "abort_grace": "10s"}]}, environ={})


def test_live_verdict_judges_only_the_trailing_window():
    from loadtest import abort

    slos = parse_slos(["error_rate < 10%", "eu.respond.p95 < 1ms"])
    # 0-10 s: every 4th request fails (25 %); 10-20 s: none fail.
    rows = pd.concat([_abort_rows(1000.0, 100, 4), _abort_rows(1010.0, 100, 0)], ignore_index=True)
    breach = abort.judge(slos, rows, None, 1000.0, 1010.0, started=1000.0)
    assert breach.expr == "error_rate < 10%" and breach.observed == pytest.approx(0.25)
    assert breach.after_s == 10.0 and breach.window_s == 10.0
    # The recent window is clean; eu has no data at all: no breach (nothing to judge there).
    assert abort.judge(slos, rows, None, 1010.5, 1020.0, started=1000.0) is None


@pytest.mark.slow
def test_watcher_waits_for_the_grace_then_stops_the_run(tmp_path):
    import time

    from loadtest import abort, runfolder
    from analysis import records

    start = time.time()
    runfolder.update_run_json(tmp_path, started=start)
    rows = _abort_rows(start, 20, 2, latency_ms=1.0)  # half fail, already written
    rows.reindex(columns=list(records.REQUEST_COLUMNS)).to_csv(tmp_path / records.REQUESTS_CSV, index=False)
    stopped = []
    watcher = abort.Watcher(tmp_path, parse_slos(["error_rate < 1%"]), grace_s=3.0, window_s=30.0, stop=lambda: stopped.append(time.time()), interval_s=0.2)
    watcher.start()
    deadline = time.monotonic() + 30
    while not stopped and time.monotonic() < deadline:
        time.sleep(0.1)
    watcher.close()
    assert stopped, "the watcher never stopped the run"
    assert stopped[0] - start >= 3.0  # not before the grace
    assert watcher.breach.expr == "error_rate < 1%" and watcher.breach.observed == pytest.approx(0.5)
    assert watcher.breach.after_s >= 3.0


@pytest.mark.slow
def test_watcher_survives_a_verdict_that_fails_once(tmp_path, monkeypatch, capsys):
    """A live verdict that raises (a read or parse error on a growing file) is said once and
    retried: the watcher still stops a failing run (it used to die silently with its thread)."""
    import time

    from loadtest import abort, runfolder, runtail
    from analysis import records

    start = time.time()
    runfolder.update_run_json(tmp_path, started=start)
    rows = _abort_rows(start, 20, 2, latency_ms=1.0)
    rows.reindex(columns=list(records.REQUEST_COLUMNS)).to_csv(tmp_path / records.REQUESTS_CSV, index=False)
    real_read, calls = runtail.RunTail.read, []

    def flaky_read(self):
        calls.append(1)
        if len(calls) <= 2:
            raise ValueError("Error tokenizing data")
        return real_read(self)

    monkeypatch.setattr(runtail.RunTail, "read", flaky_read)
    stopped = []
    watcher = abort.Watcher(tmp_path, parse_slos(["error_rate < 1%"]), grace_s=1.0, window_s=30.0, stop=lambda: stopped.append(time.time()), interval_s=0.2)
    watcher.start()
    deadline = time.monotonic() + 30
    while not stopped and time.monotonic() < deadline:
        time.sleep(0.1)
    watcher.close()
    assert stopped, "the watcher never stopped the run"
    assert len(calls) >= 3 and watcher.breach.observed == pytest.approx(0.5)
    err = capsys.readouterr().err
    assert err.count("live SLO verdict failed (ValueError: Error tokenizing data); retrying") == 1
