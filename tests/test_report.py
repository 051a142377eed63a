"""analysis.report / loadtest.commands.report: report.html, summary.csv, summary.md, exit codes."""

from __future__ import annotations

import argparse
import csv
import io
import json
import re

import numpy as np
import pandas as pd
import pytest

from loadtest.commands.report import add_compare_arguments, add_report_arguments, parse_duration, compare_command, report_command
from analysis.report import build_report, format_summary_table, redact
from analysis.stats import PERCENTILES, SUMMARY_COLUMNS
from pages import external_refs
from synthetic import make_run

SLOS = [
    {"expr": "respond.p95 < 800ms", "scope": "all regions", "observed": 512.3, "threshold": 800.0, "unit": "ms", "passed": True},
    {"expr": "errors < 0.5%", "scope": "uk", "observed": 1.2, "threshold": 0.5, "unit": "%", "passed": False},
]


def args_for(parser_fn, argv):
    p = argparse.ArgumentParser()
    parser_fn(p)
    return p.parse_args([str(a) for a in argv])


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    base = tmp_path_factory.mktemp("report")
    regions = {"uk": (4.9, 0.35), "us": (5.3, 0.45), "eu": (5.0, 0.4), "self-serve": (5.5, 0.5)}
    make_run(base / "baseline", rows=30_000, regions=regions, variants=["control", "new-prompt"], seed=3)
    make_run(
        base / "run",
        rows=30_000,
        regions={**regions, "us": (5.6, 0.45)},
        variants=["control", "new-prompt"],
        variant_factor={"new-prompt": 1.25},
        seed=4,
        slo=SLOS,
        status="interrupted",
        config={"users": 50, "api_key": "sk-live-SECRET1", "nested": {"X-TOKEN": "tok-SECRET2", "password": "pw-SECRET3", "account": "acme-uk"}},
    )
    path = build_report(base / "run", baseline=base / "baseline")
    return base, path


def test_one_self_contained_file(report):
    base, path = report
    assert path == base / "run" / "report.html"
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert external_refs(text) == []
    assert not re.search(r"<(script|link|iframe)\b", text, re.I)  # nothing to fetch or run
    assert "data:image/svg+xml;base64," in text
    # no leftovers of an atomic write
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_names_every_region_and_variant_and_sections(report):
    _, path = report
    text = path.read_text(encoding="utf-8")
    for name in ("uk", "us", "eu", "self-serve", "control", "new-prompt"):
        assert re.search(rf">\s*(<span[^>]*></span>)?{re.escape(name)}\s*<", text), name
    for heading in (
        "What this shows",
        "Service-level objectives",
        "Regions compared",
        "Variants compared",
        "Against the baseline",
        "Conversations",
        "Most frequent errors",
        "Configuration used",
        "How these numbers were computed",
    ):
        assert heading in text
    assert "FAIL" in text and "1 of 2 service-level objectives not met" in text
    assert "Interrupted run" in text
    config_hash = json.loads((path.parent / "run.json").read_text())["config_hash"]
    assert re.fullmatch(r"[0-9a-f]{12}", config_hash) and config_hash in text


def test_every_chart_still_builds_with_variants(report):
    """All six charts, in reading order, rendered into the page (a run with variants and errors)."""
    _, path = report
    ids = re.findall(r'<figure id="chart-([\w-]+)">\s*<h3>[^<]+</h3>\s*<img src="data:image/svg\+xml;base64,', path.read_text(encoding="utf-8"))
    assert ids == ["percentiles", "ecdf", "timeseries", "turns", "variants", "errors"]


def _baseline_rows(text: str) -> dict[tuple[str, str, str], list[str]]:
    """The 'Against the baseline' table: (region, variant, endpoint) → its cells' text."""
    start = text.index('<h2 id="baseline">')
    section = text[start : text.index("<h2", start + 1)]
    rows = {}
    for tr in re.findall(r"<tr>(.*?)</tr>", section, re.S):
        cells = [re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", c)).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", tr, re.S)]
        if cells:
            rows[tuple(cells[:3])] = cells
    return rows


def test_baseline_flags_what_changed_and_only_that(report):
    """us is 35% slower than in the baseline (log-shift 0.3), new-prompt 25% (its own factor);
    nothing else changed. Columns: … 7 Δ p95, 12 result."""
    _, path = report
    rows = _baseline_rows(path.read_text(encoding="utf-8"))
    assert len(rows) == 4 * 2 * 3
    us = rows[("us", "control", "respond")]
    assert us[12].startswith("regression p95 +") and us[7].endswith("significant")
    low, high = (float(x.replace("−", "-")) for x in re.search(r"\[([−+][\d.]+)%, ([−+][\d.]+)%\]", us[7]).groups())
    assert low < 100 * (np.exp(0.3) - 1) < high  # the true change inside its interval
    assert rows[("uk", "new-prompt", "respond")][12].startswith("regression")
    for (region, variant, _endpoint), cells in rows.items():
        if region != "us" and variant == "control":  # unchanged: never a regression
            assert cells[12] == "ok", cells


def test_secrets_are_redacted(report):
    _, path = report
    text = path.read_text(encoding="utf-8")
    for secret in ("SECRET1", "SECRET2", "SECRET3", "should-never-appear", "nor-this"):
        assert secret not in text
    assert "acme-uk" in text and "redacted" in text
    assert redact({"Authorization": "Bearer x", "a": [{"client_secret": "y"}], "n": 1}) == {
        "Authorization": "••• (redacted)",
        "a": [{"client_secret": "••• (redacted)"}],
        "n": 1,
    }


def test_headline_sentence(report):
    _, path = report
    text = path.read_text(encoding="utf-8")
    m = re.search(
        r"<li>(\w[\w-]*) was fastest by median: respond p50 [\d,.]+ ms.*?; ([\w-]+) had the highest "
        r"p95, [\d,.]+ ms, \+\d+% against uk \(a real difference: 95% CI \+[\d,.]+ ms to \+[\d,.]+ ms\)",
        text,
    )
    assert m and m.group(1) == "uk" and m.group(2) in ("us", "self-serve")
    assert "Variant new-prompt vs control: respond p95 +" in text


def test_summary_csv(report):
    base, path = report
    df = pd.read_csv(path.parent / "summary.csv", keep_default_na=False)
    assert tuple(df.columns) == SUMMARY_COLUMNS
    assert len(df) == 4 * 2 * 3
    raw = pd.read_csv(base / "run" / "requests.csv", keep_default_na=False)
    for (r, v, e), g in raw.groupby(["region", "variant", "endpoint"]):
        row = df[(df.region == r) & (df.variant == v) & (df.endpoint == e)].iloc[0]
        ok = g[g.ok == 1].response_time_ms
        assert row["count"] == len(g) and row["errors"] == int((g.ok == 0).sum())
        assert row["error_rate"] == pytest.approx((g.ok == 0).mean(), abs=1e-6)
        expect = np.percentile(ok, PERCENTILES)
        got = row[["p50_ms", "p75_ms", "p90_ms", "p95_ms", "p99_ms", "p999_ms"]].astype(float).to_numpy()
        np.testing.assert_allclose(got, expect, atol=5e-4)
        assert row["max_ms"] == pytest.approx(ok.max(), abs=5e-4)


@pytest.mark.slow
def test_summary_csv_variant_empty_when_none(tmp_path):
    make_run(tmp_path / "r", rows=3_000, seed=2)
    build_report(tmp_path / "r")
    rows = list(csv.DictReader(io.StringIO((tmp_path / "r" / "summary.csv").read_text())))
    assert rows and all(r["variant"] == "" for r in rows)
    assert {r["endpoint"] for r in rows} == {"create", "respond", "close"}


def test_summary_md(report):
    _, path = report
    md = (path.parent / "summary.md").read_text(encoding="utf-8")
    assert md.startswith("### Load test `run`: ❌ FAIL")
    assert "| region | variant | endpoint | requests | failed | req/s | p50 | p95 | p99 | max |" in md
    assert md.count("\n| uk | control |") == 3
    assert "regression" in md


def test_format_summary_table(report):
    base, _ = report
    text = format_summary_table(base / "run")
    lines = text.splitlines()
    assert lines[0].split() == ["region", "endpoint", "requests", "failed", "p50", "p95", "p99"]
    assert len(lines) == 2 + 4 * 3
    assert any(line.startswith("self-serve  respond") for line in lines)


@pytest.mark.slow
def test_report_size_bounded_with_200k_errors(tmp_path):
    """200k failures, each with a unique message: still a small report."""
    regions = {"uk": (4.9, 0.35), "us": (5.2, 0.45), "eu": (5.0, 0.4)}
    make_run(
        tmp_path / "errs",
        rows=275_000,
        regions=regions,
        error_rate=0.97,
        unique_error_messages=True,
        seed=8,
        error_rates={(r, "create"): 0.05 for r in regions},
        stats_history=False,
    )
    path = build_report(tmp_path / "errs")
    size = path.stat().st_size
    assert size <= 10 * 1024 * 1024
    assert size < 3 * 1024 * 1024  # in practice far below the bound
    text = path.read_text(encoding="utf-8")
    n_errors = int(pd.read_csv(path.parent / "summary.csv")["errors"].sum())
    assert n_errors >= 200_000
    assert "at row &lt;n&gt;" in text  # ids/numbers masked so messages group
    assert text.count("<tr>") < 2_000


@pytest.mark.slow
def test_warmup_flag(report, tmp_path):
    base, _ = report
    out = tmp_path / "w" / "r.html"
    out.parent.mkdir()
    rc = report_command(args_for(add_report_arguments, [base / "run", "--warmup", "30s", "-o", out]))
    assert rc == 0 and out.exists()
    assert (out.parent / "summary.csv").exists() and (out.parent / "summary.md").exists()
    assert "first 30 s of the run (warm-up) are excluded" in out.read_text(encoding="utf-8")
    full = pd.read_csv(base / "run" / "summary.csv")
    warm = pd.read_csv(out.parent / "summary.csv")
    assert warm["count"].sum() < full["count"].sum()
    assert parse_duration("2m") == 120 and parse_duration("500ms") == 0.5 and parse_duration("15") == 15


@pytest.mark.parametrize("breakage", ["missing column", "non-numeric latency", "empty file"])
def test_bad_csv_exit_2_and_nothing_written(tmp_path, capsys, breakage):
    make_run(tmp_path / "bad", rows=2_000, seed=1)
    f = tmp_path / "bad" / "requests.csv"
    lines = f.read_text().splitlines()
    if breakage == "missing column":
        lines[0] = ",".join("okay" if c == "ok" else c for c in next(csv.reader([lines[0]])))
    elif breakage == "non-numeric latency":
        parts = lines[10].split(",")
        parts[5] = "n/a"
        lines[10] = ",".join(parts)
    else:
        lines = []
    f.write_text("\n".join(lines) + ("\n" if lines else ""))
    before = sorted(p.name for p in (tmp_path / "bad").iterdir())
    rc = report_command(args_for(add_report_arguments, [tmp_path / "bad"]))
    err = capsys.readouterr().err
    assert rc == 2
    assert "requests.csv" in err
    if breakage == "missing column":
        assert "column 'ok'" in err and "line 1" in err
    elif breakage == "non-numeric latency":
        assert "line 11" in err and "response_time_ms" in err and "'n/a'" in err
    else:
        assert "empty" in err
    assert sorted(p.name for p in (tmp_path / "bad").iterdir()) == before  # nothing (half-)written


@pytest.mark.slow
def test_report_keeps_previous_outputs_on_failure(tmp_path, monkeypatch):
    """A failure while writing leaves the previous report untouched and no temp files."""
    import analysis.report as rep

    make_run(tmp_path / "r", rows=2_000, seed=1)
    path = build_report(tmp_path / "r")
    old = path.read_bytes()
    monkeypatch.setattr(rep, "summary_md_text", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        build_report(tmp_path / "r")
    assert path.read_bytes() == old
    assert not [p for p in (tmp_path / "r").iterdir() if p.name.endswith(".tmp")]


def test_bad_baseline_and_output_folder(report, tmp_path, capsys):
    base, _ = report
    assert report_command(args_for(add_report_arguments, [base / "run", "--baseline", tmp_path / "missing"])) == 2
    assert "baseline" in capsys.readouterr().err
    assert report_command(args_for(add_report_arguments, [base / "run", "-o", tmp_path / "no" / "such" / "r.html"])) == 2
    assert "does not exist" in capsys.readouterr().err


def test_compare_runs_cli(report, tmp_path, capsys):
    base, _ = report
    out = tmp_path / "cmp.html"
    rc = compare_command(args_for(add_compare_arguments, [base / "baseline", base / "run", "-o", out]))
    assert rc == 0
    printed = capsys.readouterr().out
    assert "baseline p95" in printed and "run p95" in printed
    us = [line for line in printed.splitlines() if line.startswith("us ") and "respond" in line]
    assert len(us) == 2 and all("significant" in line for line in us)
    text = out.read_text(encoding="utf-8")
    assert external_refs(text) == [] and "Runs compared" in text
    assert compare_command(args_for(add_compare_arguments, [base / "run"])) == 2
