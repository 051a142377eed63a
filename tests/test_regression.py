"""The regression gate (analysis.regression) and coherent verdicts (analysis.compare):
threshold grammar, false-alarm rate, a real regression named in junit.xml and slo.md, every
verdict agreeing with its own interval, baselines of another scenario refused."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from html.parser import HTMLParser

import numpy as np
import pytest
from synthetic import make_run

from analysis.compare import (
    against_baseline,
    compare_baseline,
    compare_groups,
    compare_runs,
)
from analysis.load import load_run
from analysis.regression import (
    ThresholdError,
    gate,
    parse_threshold,
    parse_thresholds,
    resolve,
)
from analysis.report import build_report
from analysis.stats import compute_stats
from loadtest import cli, config, runfolder
from loadtest.commands import arguments

REGIONS = {"uk": (5.0, 0.4), "us": (5.2, 0.45)}


def stats_of(path):
    return compute_stats(load_run(path, use_cache=False))


# --------------------------------------------------------------------------- grammar


def test_threshold_grammar_and_most_specific_wins():
    t = parse_threshold("uk.respond.p99:+20%")
    assert (t.region, t.variant, t.endpoint, t.metric, t.limit, t.unit) == ("uk", None, "respond", "p99", 0.2, "%")
    assert parse_threshold("b.create.p95:+50ms").limit == 50 and parse_threshold("p95:+0.2s").limit == 200
    assert parse_threshold("error_rate:+1pt").limit == pytest.approx(0.01)
    assert parse_threshold("p99.9:+30%").q == 99.9
    assert parse_threshold("close.p99:off").unit == "off"
    assert [t.expr for t in parse_thresholds(None)] == ["p95:+10%", "p99:+15%", "error_rate:+1pt"]
    ts = parse_thresholds(["p95:+10%", "uk.respond.p95:+25%", "respond.p95:+15%", "close.p95:off"])
    assert [t.limit for t in resolve(ts, "uk", "a", "respond")] == [0.25]
    assert [t.limit for t in resolve(ts, "us", "a", "respond")] == [0.15]
    assert [t.limit for t in resolve(ts, "us", "a", "create")] == [0.10]
    assert resolve(ts, "us", "a", "close") == []


@pytest.mark.parametrize(
    "spec,problem",
    [
        ("error_rate:+1%", "percentage points"),
        ("p95:10", "relative (+10%) or a time"),
        ("p95:-5%", "non-negative"),
        ("latency:+10%", "unknown metric 'latency'"),
        ("p95+10%", "one ':'"),
        ("uk.uk.p95:+10%", "two regions"),
        ("c.p95:+10%", "unknown scope 'c'"),
    ],
)
def test_bad_thresholds_say_what_is_wrong(spec, problem):
    with pytest.raises(ThresholdError, match=re.escape(problem)):
        parse_threshold(spec, variants=["a", "b"])


# --------------------------------------------------------------------------- the gate's statistics


@pytest.mark.slow
def test_false_alarm_rate_over_100_seed_pairs_is_at_most_5_percent(tmp_path):
    """Baseline and current from the same distributions, different seeds. Each of 100
    variants is one independent pair of runs (its own 2 regions × 3 endpoints, ~4,000 rows
    per run), so one pair of synthetic runs holds 100 seed pairs; the gate (default
    thresholds) must pass at least 95 of them."""
    variants = [f"v{i}" for i in range(100)]
    make_run(tmp_path / "base", rows=400_000, regions=REGIONS, variants=variants, seed=101, error_rate=0.01, stats_history=False)
    make_run(tmp_path / "cur", rows=400_000, regions=REGIONS, variants=variants, seed=202, error_rate=0.01, stats_history=False)
    checks = against_baseline(stats_of(tmp_path / "cur"), stats_of(tmp_path / "base")).checks
    by_pair = defaultdict(list)
    for c in checks:
        by_pair[c["variant"]].append(c)
    assert len(by_pair) == 100
    judged = [c for c in checks if c["passed"] is not None]
    assert len(judged) >= 0.75 * len(checks)  # the gate judged (create and close p99: too few rows)
    assert {c["metric"] for c in judged} == {"p95", "p99", "error_rate"}
    passed = sum(all(c["passed"] is not False for c in pair) for pair in by_pair.values())
    assert passed >= 95, f"the gate failed {100 - passed} of 100 pairs of runs from the same distributions"


@pytest.fixture(scope="module")
def regressed(tmp_path_factory):
    """A baseline and a run where only uk respond is 25% slower (every percentile)."""
    base = tmp_path_factory.mktemp("gate")
    make_run(base / "main", rows=60_000, regions=REGIONS, variants=["a", "b"], seed=11)
    make_run(base / "pr", rows=60_000, regions=REGIONS, variants=["a", "b"], seed=12, endpoint_factor={("uk", "respond"): 1.25})
    return base


@pytest.mark.slow
def test_uk_respond_plus_25_percent_fails_uk_respond_only(regressed):
    g = against_baseline(stats_of(regressed / "pr"), stats_of(regressed / "main"), ["p95:+10%", "error_rate:+1pt"], "main")
    failed = {(c["region"], c["variant"], c["endpoint"], c["metric"]) for c in g.checks if c["passed"] is False}
    assert failed == {("uk", "a", "respond", "p95"), ("uk", "b", "respond", "p95")}
    for c in g.checks:
        if c["passed"] is False:
            assert c["lo"] > 0.10 and c["observed"] == pytest.approx(0.25, abs=0.08)
    assert all(c["passed"] is True for c in g.checks if c["endpoint"] != "respond" or c["region"] != "uk")
    t = g.table.set_index(["region", "variant", "endpoint"])
    assert list(t[t.regression].index) == [("uk", "a", "respond"), ("uk", "b", "respond")]
    # a limit above the regression passes it: the gate compares the interval with the limit
    loose = against_baseline(stats_of(regressed / "pr"), stats_of(regressed / "main"), ["uk.respond.p95:+40%"])
    assert all(c["passed"] is not False for c in loose.checks)


@pytest.mark.slow
def test_compare_command_gates_exit_1_and_junit_names_uk_respond(regressed, tmp_path, monkeypatch):
    summary = tmp_path / "step-summary.md"
    env = {**__import__("os").environ, "GITHUB_STEP_SUMMARY": str(summary)}
    out = tmp_path / "cmp.html"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "loadtest",
            "compare",
            str(regressed / "main"),
            str(regressed / "pr"),
            "--fail-on-regression",
            "--regression",
            "p95:+10%",
            "--regression",
            "error_rate:+1pt",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    suites = {s.get("name"): s for s in ET.parse(tmp_path / "cmp-junit.xml").getroot().iter("testsuite")}
    cases = suites["regression"].findall("testcase")
    assert len(cases) == 2 * 2 * 3 * 2  # regions × variants × endpoints × gated metrics
    failed = sorted(c.get("name") for c in cases if c.find("failure") is not None)
    assert failed == ["uk.a.respond.p95 +10% vs baseline", "uk.b.respond.p95 +10% vs baseline"]
    assert suites["regression"].get("failures") == "2"
    md = (tmp_path / "cmp.md").read_text()
    assert "Regression against `main`" in md and "`uk.a.respond.p95`" in md and "`us.a.respond.p95`" not in md
    assert md in summary.read_text()
    html = out.read_text()
    assert "Regression against main" in html and "uk · a · respond p95 +" in html
    # the same runs gated with a limit the regression stays under: exit 0
    assert (
        cli.main(
            ["compare", str(regressed / "main"), str(regressed / "pr"), "--fail-on-regression", "--regression", "p95:+40%", "-o", str(tmp_path / "ok.html")]
        )
        == 0
    )


@pytest.mark.slow
def test_report_banner_says_regression_against_the_baseline(regressed, tmp_path):
    path = build_report(regressed / "pr", baseline=regressed / "main", output=tmp_path / "r.html")
    html = path.read_text()
    banner = html[html.index('id="regression-verdict"') :]
    banner = banner[: banner.index("</section>")]
    assert "Regression against main" in banner and "REGRESSED" in banner
    assert "uk · a · respond p95 +" in banner and "us · " not in banner
    md = (tmp_path / "summary.md").read_text()
    assert "Against the baseline main: 2 regressions" in md or "Against the baseline main: 4 regressions" in md


# --------------------------------------------------------------------------- coherent verdicts


def _assert_coherent(table, qs=(50, 95, 99)):
    """Every verdict of the table agrees with its own interval (ms and % alike)."""
    seen = set()
    for r in table.to_dict("records"):
        for q in qs:
            v, lo, hi = r[f"d_p{q}_verdict"], r[f"d_p{q}_lo"], r[f"d_p{q}_hi"]
            plo, phi = r[f"d_p{q}_pct_lo"], r[f"d_p{q}_pct_hi"]
            if v == "reference":
                continue
            if math.isnan(lo):
                assert v == "too few"
                continue
            excludes_zero = lo > 0 or hi < 0
            assert v == ("significant" if excludes_zero else "noise"), (r, q)
            assert (plo > 0 or phi < 0) == excludes_zero  # the % interval tells the same story
            seen.add(v)
        if r["d_error_verdict"] != "reference":
            lo, hi = r["d_error_lo"], r["d_error_hi"]
            assert r["d_error_verdict"] == ("significant" if lo > 0 or hi < 0 else "noise")
    return seen


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """Variants from clearly different to identical, and few rows: both verdicts occur."""
    base = tmp_path_factory.mktemp("mixed")
    factors = {"b": 1.02, "c": 1.05, "d": 1.1, "e": 1.3, "f": 0.9}
    make_run(
        base / "one",
        rows=12_000,
        regions={"uk": (5.0, 0.4), "eu": (5.03, 0.4), "us": (5.3, 0.4)},
        variants=list("abcdef"),
        variant_factor=factors,
        seed=5,
        error_rate=0.02,
        error_rates={("us", "respond"): 0.06},
    )
    make_run(
        base / "two",
        rows=12_000,
        regions={"uk": (5.0, 0.4), "eu": (5.03, 0.4), "us": (5.3, 0.4)},
        variants=list("abcdef"),
        variant_factor={**factors, "a": 1.08},
        seed=6,
        error_rate=0.02,
    )
    return base


@pytest.mark.slow
def test_no_table_calls_a_difference_real_unless_its_interval_excludes_zero(mixed):
    one, two = stats_of(mixed / "one"), stats_of(mixed / "two")
    seen = _assert_coherent(compare_groups(one, "region")) | _assert_coherent(compare_groups(one, "variant"))
    seen |= _assert_coherent(compare_runs([one, two]))
    seen |= _assert_coherent(compare_baseline(two, one))
    assert seen == {"significant", "noise"}  # both verdicts were exercised


class _Cells(HTMLParser):
    """(interval text, verdict tag) of every Δ cell (td.delta) of a page."""

    def __init__(self):
        super().__init__()
        self.cells, self._cell, self._span = [], None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "td" and "delta" in (a.get("class") or "").split():
            self._cell = {"ci": "", "tag": "", "cls": ""}
        elif tag == "span" and self._cell is not None:
            self._span = (a.get("class") or "").split()

    def handle_data(self, data):
        if self._cell is not None and self._span:
            if "ci" in self._span:
                self._cell["ci"] += data
            elif "tag" in self._span:
                self._cell["tag"] += data
            elif self._span[0] in ("worse", "better", "same"):
                self._cell["cls"] = self._span[0]

    def handle_endtag(self, tag):
        if tag == "span":
            self._span = None
        elif tag == "td" and self._cell is not None:
            self.cells.append(self._cell)
            self._cell = None


def _signed(text):
    t = text.strip().replace("−", "-").replace("±", "").replace(",", "")
    num = float(re.match(r"[+-]?[\d.]+", t).group())
    return num


@pytest.mark.slow
def test_report_cells_show_the_verdict_of_the_interval_beside_them(mixed, tmp_path):
    path = build_report(mixed / "two", baseline=mixed / "one", output=tmp_path / "r.html")
    html = path.read_text()
    p = _Cells()
    p.feed(html)
    assert len(p.cells) > 50
    kinds = set()
    for c in p.cells:
        m = re.match(r"\[(.+?), (.+?)\]$", c["ci"].strip())
        if not m:
            assert c["tag"] in ("too few", "")
            continue
        lo, hi = _signed(m.group(1)), _signed(m.group(2))
        if lo > 0 or hi < 0:
            assert c["tag"] == "significant", c
            assert c["cls"] in ("worse", "better")
        elif lo < 0 < hi:
            assert c["tag"] == "noise", c  # never red or green, never called real
            assert c["cls"] == "same"
        kinds.add(c["tag"])
    assert kinds >= {"significant", "noise"}
    assert "Real difference?" not in html and "Distribution shift" in html
    # the summary sentence says "real" only with an interval that excludes zero
    for m in re.finditer(r"\((a real difference|within noise): 95% CI ([^ ]+ ms) to ([^ ]+ ms)\)", html):
        lo, hi = _signed(m.group(2)), _signed(m.group(3))
        assert (m.group(1) == "a real difference") == (lo > 0 or hi < 0)


# --------------------------------------------------------------------------- comparable baselines


def test_a_baseline_of_another_scenario_is_refused_with_the_settings_that_differ(tmp_path):
    make_run(tmp_path / "base", rows=2_000, seed=1, config={"users": 16, "duration": 45.0, "out": "reports"})
    meta = json.loads((tmp_path / "base" / "run.json").read_text())
    meta["config_hash"] = runfolder.config_hash(meta["config"])
    (tmp_path / "base" / "run.json").write_text(json.dumps(meta))
    same = {"config": {"users": 16, "duration": 45.0, "out": "elsewhere", "slos": ["rps > 1"]}}
    same["config_hash"] = runfolder.config_hash(same["config"])
    assert runfolder.baseline_problem(tmp_path / "base", same) is None  # out and slos are not the scenario
    other = {"config": {"users": 32, "duration": 45.0}}
    other["config_hash"] = runfolder.config_hash(other["config"])
    problem = runfolder.baseline_problem(tmp_path / "base", other)
    assert "different scenario" in problem and "users 16 → 32" in problem and "--baseline-any-config" in problem
    assert runfolder.baseline_problem(tmp_path / "base", other, any_config=True) is None
    assert "not a folder" in runfolder.baseline_problem(tmp_path / "nope", other, any_config=True)


@pytest.mark.slow
def test_compare_refuses_a_gate_across_scenarios_with_exit_2(tmp_path, capsys):
    make_run(tmp_path / "a", rows=2_000, seed=1, config={"users": 16})
    make_run(tmp_path / "b", rows=2_000, seed=2, config={"users": 32})
    meta = json.loads((tmp_path / "b" / "run.json").read_text())
    meta["config_hash"] = "sha256:other"
    (tmp_path / "b" / "run.json").write_text(json.dumps(meta))
    argv = ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--fail-on-regression", "-o", str(tmp_path / "c.html")]
    assert cli.main(argv) == 2
    assert "users 16 → 32" in capsys.readouterr().err and not (tmp_path / "c.html").exists()
    assert cli.main(argv + ["--regression", "p95:10"]) == 2 and "p95:10" in capsys.readouterr().err
    assert cli.main(argv + ["--baseline-any-config"]) in (0, 1) and (tmp_path / "c-junit.xml").exists()
    # without the gate, runs of different scenarios are compared side by side as before
    assert cli.main(argv[:3] + ["-o", str(tmp_path / "d.html")]) == 0 and not (tmp_path / "d-junit.xml").exists()
    capsys.readouterr()
    # a report against such a baseline is built, with a note saying so
    assert cli.main(["report", str(tmp_path / "b"), "--baseline", str(tmp_path / "a"), "-o", str(tmp_path / "r.html")]) == 0
    assert "note: baseline" in capsys.readouterr().out


def test_scenario_file_keys_and_their_validation(tmp_path):
    s = config.resolve(
        {"baseline": "reports/main", "fail_on_regression": True, "regressions": ["p95:+10%", "uk.respond.p99:+20%"], "baseline_any_config": False}, environ={}
    )
    assert s.baseline == "reports/main" and s.fail_on_regression is True
    assert s.regressions == ["p95:+10%", "uk.respond.p99:+20%"]
    with pytest.raises(config.ConfigError, match="--fail-on-regression needs --baseline"):
        config.resolve({"fail_on_regression": True}, environ={})
    # gate settings are not part of the scenario: a gated run hashes like its baseline
    plain = config.resolve({}, environ={})
    assert runfolder.config_hash(s.raw()) == runfolder.config_hash(plain.raw())
    assert runfolder.config_hash(config.resolve({"users": 17}, environ={}).raw()) != runfolder.config_hash(plain.raw())


def test_gate_checks_have_the_slo_result_shape(regressed):
    g = against_baseline(stats_of(regressed / "pr"), stats_of(regressed / "main"), None, "main")
    for c in gate(g.table, g.thresholds, "main"):
        assert set(c) >= {
            "expr",
            "scope",
            "metric",
            "threshold",
            "unit",
            "observed",
            "passed",
            "detail",
            "observed_text",
            "threshold_text",
            "state",
            "baseline",
        }
    assert np.isfinite([c["lo"] for c in g.checks if c["passed"] is not None]).all()


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_loadtest_run_gates_against_a_baseline_run(tmp_path):
    """A real baseline run, then a run 3× slower: refused while the scenarios differ (exit 2,
    nothing sent), gated with --baseline-any-config (exit 1, junit/slo.md/report name it)."""
    from runs import FAST, loadtest

    common = ["--duration", "5s", "--users", "6", "--regions", "uk,eu", "--variants", "", *FAST]
    base = loadtest("run", *common, "--mock-latency-scale", "0.2", "--out", str(tmp_path / "main"))
    assert base.returncode == 0, base.stderr
    base_dir = (tmp_path / "main" / "latest").resolve()
    scenario = tmp_path / "gate.toml"
    scenario.write_text(f'baseline = "{base_dir}"\nfail_on_regression = true\nregressions = ["p50:+10%"]\n')
    out = tmp_path / "pr"
    refused = loadtest("run", "--config", str(scenario), *common, "--mock-latency-scale", "0.6", "--out", str(out))
    assert refused.returncode == 2, refused.stderr
    assert "different scenario" in refused.stderr and "mock_latency_scale 0.2 → 0.6" in refused.stderr
    assert not out.exists()  # refused before any traffic: no run folder

    gated = loadtest("run", "--config", str(scenario), *common, "--mock-latency-scale", "0.6", "--baseline-any-config", "--out", str(out))
    assert gated.returncode == 1, gated.stderr
    run_dir = (out / "latest").resolve()
    suite = [s for s in ET.parse(run_dir / "junit.xml").getroot().iter("testsuite") if s.get("name") == "regression"][0]
    failed = {c.get("name") for c in suite.findall("testcase") if c.find("failure") is not None}
    assert {"uk.respond.p50 +10% vs baseline", "eu.respond.p50 +10% vs baseline"} <= failed
    assert f"Regression against `{base_dir.name}`" in (run_dir / "slo.md").read_text()
    assert json.loads((run_dir / "regression.json").read_text())[0]["baseline"] == base_dir.name
    html = (run_dir / "report.html").read_text()
    assert f"Regression against {base_dir.name}" in html and "REGRESSED" in html


def test_the_github_workflow_example_gates_pull_requests_on_mains_run(monkeypatch):
    """examples/github/regression-gate.yml: main keeps its run folder as an artifact, pull
    requests download it and run with --baseline … --fail-on-regression; its commands parse."""
    import shlex
    from pathlib import Path

    yaml = pytest.importorskip("yaml")
    path = Path(__file__).resolve().parent.parent / "examples" / "github" / "regression-gate.yml"
    flow = yaml.safe_load(path.read_text())
    steps = flow["jobs"]["loadtest"]["steps"]
    uploads = [s for s in steps if s.get("uses", "").startswith("actions/upload-artifact")]
    assert any(s["with"]["name"] == "loadtest-baseline" and "push" in s["if"] for s in uploads)
    download = [s for s in steps if s.get("uses", "").startswith("actions/download-artifact")][0]
    assert download["with"]["name"] == "loadtest-baseline" and download["with"]["path"] == "baseline"
    script = [s for s in steps if "loadtest run" in s.get("run", "")][0]["run"]
    commands = [shlex.split(line.strip()) for line in script.splitlines() if line.strip().startswith("loadtest run")]
    gated = [c for c in commands if "--fail-on-regression" in c]
    assert gated and gated[0][gated[0].index("--baseline") + 1] == "baseline"
    parser = cli.build_parser()
    monkeypatch.chdir(path.parent.parent.parent)  # the workflow runs at the repository's root
    for c in commands:
        args = parser.parse_args(c[1:])
        s = arguments.scenario_from_args(args)  # the scenario file exists and the flags resolve
        assert s.regions


@pytest.mark.slow
def test_runner_finish_gates_only_with_fail_on_regression(regressed, tmp_path, capsys):
    """The end of `loadtest run` on recorded data: a bare --baseline compares (exit 0, no
    junit.xml); --fail-on-regression gates (exit 1, junit.xml, slo.md, regression.json)."""
    import shutil

    from loadtest.commands import run as runner

    for gate_on, expect in ((False, 0), (True, 1)):
        run_dir = tmp_path / f"pr-{gate_on}"
        shutil.copytree(regressed / "pr", run_dir)
        scenario = config.resolve({"baseline": str(regressed / "main"), "fail_on_regression": gate_on, "regressions": ["p95:+10%"]}, environ={})
        assert runner.finish(run_dir, scenario, runner.EXIT_OK) == expect
        out = capsys.readouterr().out
        assert "Regression against `main`" in out and "uk.a.respond.p95" in out
        assert ("not gating" in out) is not gate_on
        assert (run_dir / "junit.xml").exists() is gate_on and (run_dir / "regression.json").exists() is gate_on
        assert "Regression against main" in (run_dir / "report.html").read_text()
