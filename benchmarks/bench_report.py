"""Benchmark: report build time and peak memory on large synthetic runs.

    python benchmarks/bench_report.py --rows 1000000
    python benchmarks/bench_report.py --rows 10000000 --workdir /tmp/bench
    python benchmarks/bench_report.py --rows 1000000 10000000 30000000 100000000 \
        --workdir /work/bench-data --old /path/to/main-checkout         # the sweep

Each measurement runs in a fresh Python process, so its peak RSS (/proc/self/status VmHWM)
is its own. Measured, on the same synthetic run folder:

  baseline C       pandas.read_csv (C engine, explicit dtypes, categoricals) +
                   groupby(region, variant, endpoint).quantile(PERCENTILES)
  baseline arrow   the same with engine="pyarrow"
  ours cold        analysis.load.load_run (no Arrow cache) + analysis.stats.compute_stats
  ours cached      the same, reading the Arrow cache the second report wrote
  report cold      analysis.report.build_report end to end, no cache yet (the real first run)
  report 2nd       build_report again: a CSV read a second time gets its Arrow cache written
  report cached    build_report a third time (cache present)
  breakdown        CPU seconds per phase: imports / load (no cache) / stats / render
                   (build_report's own call: comparisons, charts, template), then comparisons
                   (bootstrap + Mann-Whitney) and charts again on their own (warm: a split of
                   render); `--breakdown N [--old CHECKOUT]` runs only this, N times,
                   alternating with the other checkout, and prints the medians

The sweep (several --rows) builds the full report cold per size, with this checkout's
analysis and optionally another's (--old), and prints seconds and peak RSS per million rows
and the marginal memory per million rows (targets: 100M rows ≤ 120 s and ≤ 4 GiB, 10M
≤ 12 s, ≤ 30 MiB per extra million rows), plus the Arrow cache's size per million rows.
Runs above 10M rows are generated piece by piece (see `generate`).

Wall times on a shared machine vary with its load; CPU times (user + system) are printed
beside them. Results are printed and written to benchmarks/out/bench-<rows>.json
(bench-sweep.json for a sweep).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"

PRELUDE = textwrap.dedent("""
    import json, resource, sys, time
    sys.path[:0] = [CODE_ROOT, TESTS_ROOT]
    t0 = time.perf_counter()
    def done(**extra):
        # VmHWM: this process's own peak RSS (ru_maxrss would carry the parent's peak over exec)
        rss = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:"))
        ru = resource.getrusage(resource.RUSAGE_SELF)
        print("RESULT " + json.dumps(dict(seconds=time.perf_counter() - t0, cpu=ru.ru_utime + ru.ru_stime,
                                          peak_rss=rss, **extra)))
""")

BASELINE = textwrap.dedent("""
    import pandas as pd
    from analysis.load import ANALYSIS_COLUMNS
    from analysis.stats import PERCENTILES
    cat = "category"
    dtype = {"timestamp": "float64", "region": cat, "variant": cat, "endpoint": cat, "response_time_ms": "float64",
             "status": "int32", "ok": "int8", "error_kind": cat, "error": cat, "conversation_id": "str", "turn": "int32"}
    kw = dict(usecols=list(ANALYSIS_COLUMNS), dtype=dtype)
    if ENGINE == "c":
        kw.update(keep_default_na=False, na_values={"response_time_ms": [""]})
    import glob
    files = sorted(glob.glob(RUN + "/requests*.csv"))
    df = pd.concat([pd.read_csv(f, engine=ENGINE, **kw) for f in files], ignore_index=True)
    t_read = time.perf_counter() - t0
    ok = df[df["ok"] == 1]
    q = ok.groupby(["region", "variant", "endpoint"], observed=True)["response_time_ms"].quantile([p / 100 for p in PERCENTILES])
    done(read=t_read, groups=len(q) // len(PERCENTILES), rows=len(df))
""")

OURS = textwrap.dedent("""
    from analysis.load import load_run
    from analysis.stats import compute_stats
    run = load_run(RUN, use_cache=CACHE)
    t_load = time.perf_counter() - t0
    st = compute_stats(run)
    done(load=t_load, stats=time.perf_counter() - t0 - t_load, rows=st.total_requests)
""")

REPORT = textwrap.dedent("""
    from analysis.report import build_report
    p = build_report(RUN)
    done(size=p.stat().st_size)
""")

BREAKDOWN = textwrap.dedent("""
    # CPU seconds per phase (time.process_time: every thread of this process, so pyarrow's
    # parsing threads count), imports included: the report's fixed cost is most of 1M rows'.
    c = time.process_time()
    marks = {}
    def mark(name):
        global c
        marks[name] = time.process_time() - c; c = time.process_time()
    from analysis.load import load_run
    from analysis.stats import compute_stats
    from analysis.compare import compare_groups
    from analysis.charts import build_charts
    from analysis.report import render_report, summary_csv_text
    mark("imports")
    run = load_run(RUN, use_cache=False); mark("load")
    st = compute_stats(run); mark("stats")
    html, _, _ = render_report(run, st); summary_csv_text(st)
    mark("render")  # build_report's own call: comparisons, charts (the first, cold), template
    regions = compare_groups(st, "region"); variants = compare_groups(st, "variant") if st.has_variants else None
    mark("compare (again, within render)")
    charts = build_charts(st, variants, run.stats_history); mark("charts (again, within render)")
    done(marks=marks)
""")


def child(code: str, root: Path = ROOT, **params) -> dict:
    """Run `code` in a fresh Python process on the analysis code at `root` (this checkout, or
    another one such as the main branch, for side-by-side ratios)."""
    params = {"CODE_ROOT": str(root), "TESTS_ROOT": str(ROOT / "tests"), **params}
    head = "".join(f"{k} = {v!r}\n" for k, v in params.items())
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", head + PRELUDE + code], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def clear_cache(run: Path) -> None:
    for p in run.glob(".*.cache.*"):
        p.unlink()


PIECE = 10_000_000  # rows generated in one piece (make_run holds a piece in memory)
REGIONS = {"uk": (4.9, 0.35), "us": (5.2, 0.45), "eu": (5.0, 0.4), "self-serve": (5.4, 0.5)}


def generate(run: Path, rows: int, workers: int = 1) -> None:
    """A synthetic run folder of `rows` requests. Above PIECE rows it is written piece by
    piece (distinct seeds, same time window: a fleet of generators), appended to one
    requests.csv and conversations.csv, so generating 100M rows needs no more memory than 10M."""
    from synthetic import make_run

    kw = dict(variants=["a", "b"], variant_factor={"b": 1.1}, regions=REGIONS)
    if rows <= PIECE:
        make_run(run, rows=rows, workers=workers, split_files=workers > 1, duration_s=max(120.0, rows / 2000), seed=1, **kw)
        return
    pieces = -(-rows // PIECE)
    tmp = run.with_name(run.name + ".piece")
    ended = 0.0
    for i in range(pieces):
        n = min(PIECE, rows - i * PIECE)
        make_run(tmp, rows=n, duration_s=PIECE / 2000, seed=1 + i, **kw)
        run.mkdir(parents=True, exist_ok=True)
        for name in ("requests.csv", "conversations.csv"):
            with open(tmp / name, "rb") as src, open(run / name, "ab") as dst:
                if i:
                    src.readline()  # one header
                while block := src.read(64 << 20):
                    dst.write(block)
        meta = json.loads((tmp / "run.json").read_text())
        ended = max(ended, meta["ended"])
        print(f"  piece {i + 1}/{pieces}", flush=True)
    for f in tmp.iterdir():
        if f.name == "locust_stats_history.csv":
            f.replace(run / f.name)
        elif f.is_file():
            f.unlink()
    tmp.rmdir()
    meta.update(run_id=run.name, ended=ended)
    (run / "run.json").write_text(json.dumps(meta, indent=2))  # last: marks the folder complete


def sweep(rows: list[int], workdir: Path, old: Path | None, old_max_rows: int) -> int:
    """Full report, cold, per run size: seconds and peak RSS, per million rows, and the
    marginal memory per million rows between consecutive sizes; with `old`, the same report
    built by another checkout's analysis code (e.g. the main branch) in the same run."""
    print(f"{'rows':>12} {'CSV GB':>7} {'code':<6} {'wall s':>7} {'cpu s':>7} {'peak GiB':>9} {'s/M rows':>8} {'MiB/M marginal':>14}", flush=True)
    res: dict = {"cpus": os.cpu_count(), "sweep": []}
    prev: dict = {}
    for n in rows:
        run = workdir / f"run-{n}"
        if not (run / "run.json").exists():
            print(f"generating {n:,} rows in {run} …", flush=True)
            generate(run, n)
        size = sum(p.stat().st_size for p in run.glob("requests*.csv"))
        for name, root in (("new", ROOT), ("old", old)):
            if root is None or (name == "old" and n > old_max_rows):
                continue
            clear_cache(run)
            r = child(REPORT, root=root, RUN=str(run))
            clear_cache(run)
            cache = child(CACHE_SIZE, root=root, RUN=str(run)) if name == "new" else None
            marginal = (r["peak_rss"] - prev[name][1]["peak_rss"]) / 2**20 / ((n - prev[name][0]) / 1e6) if name in prev else float("nan")
            prev[name] = (n, r)
            row = {"rows": n, "csv_bytes": size, "code": name, **r, "marginal_mib_per_m": marginal, "cache_bytes": cache["cache_bytes"] if cache else None}
            res["sweep"].append(row)
            print(
                f"{n:>12,} {size / 1e9:>7.2f} {name:<6} {r['seconds']:>7.1f} {r['cpu']:>7.1f} "
                f"{r['peak_rss'] / 2**30:>9.2f} {r['seconds'] / (n / 1e6):>8.2f} {marginal:>14.1f}"
                + (f"   cache {cache['cache_bytes'] / (n / 1e6) / 2**20:.1f} MiB/M rows" if cache else ""),
                flush=True,
            )
            clear_cache(run)
    OUT.mkdir(parents=True, exist_ok=True)
    out = OUT / "bench-sweep.json"
    out.write_text(json.dumps(res, indent=2))
    print(f"\nwritten {out}")
    return 0


CACHE_SIZE = textwrap.dedent("""
    import glob, os
    from analysis.load import load_run
    load_run(RUN)  # a first read only marks each CSV as read
    load_run(RUN)  # the second writes the Arrow cache beside it
    done(cache_bytes=sum(os.path.getsize(p) for p in glob.glob(RUN + "/.*.cache.*")))
""")


def breakdowns(run: Path, repeats: int, old: Path | None, res: dict) -> int:
    """The CPU breakdown `repeats` times per checkout (this one, and `old` if given, alternating),
    printed per run and as medians per phase."""
    codes = [("new", ROOT)] + ([("old", old)] if old else [])
    runs: dict = {name: [] for name, _ in codes}
    for i in range(repeats):
        for name, root in codes:
            m = child(BREAKDOWN, root=root, RUN=str(run))["marks"]
            m["report (imports + load + stats + render)"] = m["imports"] + m["load"] + m["stats"] + m["render"]
            runs[name].append(m)
            print(f"{name} #{i + 1}: " + ", ".join(f"{k.split(' ')[0]} {v:.2f}" for k, v in m.items()), flush=True)
    print("\nmedian CPU seconds per phase:")
    for k in runs["new"][0]:
        cells = "  ".join(f"{name} {statistics.median(r[k] for r in runs[name]):6.2f}" for name, _ in codes)
        print(f"  {k:<48} {cells}")
    res["breakdowns"] = runs
    OUT.mkdir(parents=True, exist_ok=True)
    out = OUT / f"bench-breakdown-{res['rows']}.json"
    out.write_text(json.dumps(res, indent=2))
    print(f"\nwritten {out}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--rows",
        type=int,
        nargs="+",
        default=[1_000_000],
        help="request rows in the synthetic run (default 1M); several values: a sweep of full reports, e.g. --rows 1000000 10000000 30000000 100000000",
    )
    ap.add_argument(
        "--old", type=Path, help="sweep and --breakdown: also run the analysis code of this checkout (e.g. the main branch) for side-by-side ratios"
    )
    ap.add_argument("--old-max-rows", type=int, default=30_000_000, help="sweep: largest run for --old (the old code needs ~0.15 GiB per million rows)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/loadtest-bench"), help="where the synthetic run lives")
    ap.add_argument("--workers", type=int, default=1, help="split requests into this many worker files")
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument(
        "--breakdown",
        type=int,
        metavar="N",
        help="only the CPU breakdown per phase, N times (with --old: alternating with that checkout's, one process at a time), and the medians",
    )
    args = ap.parse_args(argv)

    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    if len(args.rows) > 1:
        return sweep(args.rows, args.workdir, args.old, args.old_max_rows)
    args.rows = args.rows[0]
    run = args.workdir / f"run-{args.rows}"
    if not (run / "run.json").exists():
        t = time.perf_counter()
        print(f"generating {args.rows:,} rows in {run} …", flush=True)
        generate(run, args.rows, args.workers)
        print(f"  generated in {time.perf_counter() - t:.1f} s", flush=True)
    size = sum(p.stat().st_size for p in run.glob("requests*.csv"))
    print(f"run folder: {run} ({size / 1e9:.2f} GB of requests CSV)\n", flush=True)

    res: dict = {"rows": args.rows, "csv_bytes": size, "cpus": os.cpu_count()}
    if args.breakdown:
        return breakdowns(run, args.breakdown, args.old, res)

    def show(name, r):
        extra = ", ".join(f"{k} {v:.2f} s" for k, v in r.items() if k in ("read", "load", "stats"))
        print(f"{name:<16} {r['seconds']:7.2f} s wall  {r['cpu']:6.2f} s cpu   peak {r['peak_rss'] / 2**30:5.2f} GiB   {extra}", flush=True)
        res[name] = r

    if not args.skip_baseline:
        show("baseline C", child(BASELINE, RUN=str(run), ENGINE="c"))
        show("baseline arrow", child(BASELINE, RUN=str(run), ENGINE="pyarrow"))
    clear_cache(run)
    show("ours cold", child(OURS, RUN=str(run), CACHE=False))
    clear_cache(run)
    show("report cold", child(REPORT, RUN=str(run)))
    show("report 2nd", child(REPORT, RUN=str(run)))  # parses again and writes the Arrow cache
    show("ours cached", child(OURS, RUN=str(run), CACHE=True))
    show("report cached", child(REPORT, RUN=str(run)))
    b = child(BREAKDOWN, RUN=str(run))
    res["breakdown"] = b
    print("\nbreakdown (CPU s): " + ", ".join(f"{k} {v:.2f} s" for k, v in b["marks"].items()))

    print()
    if not args.skip_baseline:
        base = min(res["baseline C"]["seconds"], res["baseline arrow"]["seconds"])
        ours = res["ours cold"]["seconds"]
        res["ratio_cold_vs_baseline"] = ours / base
        print(f"load + stats vs faster baseline: {ours:.2f} s / {base:.2f} s = {ours / base:.2f}× (target ≤ 2×)")
    rep = res["report cold"]
    print(
        f"full report, cold: {rep['seconds']:.2f} s, peak {rep['peak_rss'] / 2**30:.2f} GiB, "
        f"report.html {rep['size'] / 1e6:.2f} MB (targets, issue 13: 10 M rows ≤ 12 s; 100 M rows ≤ 120 s and ≤ 4 GiB; "
        "the page ≤ 10 MB)"
    )
    OUT.mkdir(parents=True, exist_ok=True)
    out = OUT / f"bench-{args.rows}.json"
    out.write_text(json.dumps(res, indent=2))
    print(f"\nwritten {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
