"""Benchmark: the regression gate's false-alarm rate and power, measured on synthetic runs.

    python benchmarks/bench_gate.py                 # 3 × 100 pairs, power at +15…+30 %
    python benchmarks/bench_gate.py --sets 10
    python benchmarks/bench_gate.py --quick         # 1 × 100 pairs, power at +25 % only

A "pair" is a baseline run and a current run of one scenario (2 regions × 3 endpoints,
~4,000 requests per run: respond ~1,300, create and close ~700 each). One synthetic run
folder with 100 variants holds 100 such independent pairs, so each set costs two run folders.

  false alarms   baseline and current from the same distributions, different seeds, default
                 thresholds (p95:+10%, p99:+15%, error_rate:+1pt): pairs the gate fails, against
                 pairs failed by judging the point estimates against the same limits
  power          uk respond made 15/20/25/30 % slower in every percentile: pairs whose uk
                 respond the gate (p95:+10%) fails, and false alarms in the other groups

Results are printed (figures in benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

from common import machine_info  # noqa: E402
from analysis.compare import against_baseline  # noqa: E402
from analysis.load import load_run  # noqa: E402
from analysis.stats import compute_stats  # noqa: E402
from synthetic import make_run  # noqa: E402

REGIONS = {"uk": (5.0, 0.4), "us": (5.2, 0.45)}
VARIANTS = [f"v{i}" for i in range(100)]
ROWS = 4_000 * len(VARIANTS)


def stats(folder: Path, seed: int, **kw):
    make_run(folder, rows=ROWS, regions=REGIONS, variants=VARIANTS, seed=seed, error_rate=0.01, stats_history=False, **kw)
    return compute_stats(load_run(folder, use_cache=False))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", type=int, default=3, help="sets of 100 pairs for the false-alarm rate")
    ap.add_argument("--quick", action="store_true", help="one set, power at +25 %% only")
    args = ap.parse_args()
    print(machine_info())
    sets, factors = (1, (1.25,)) if args.quick else (args.sets, (1.15, 1.2, 1.25, 1.3))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        gate_fails = point_fails = pairs = judged = 0
        for k in range(sets):
            checks = against_baseline(stats(work / f"c{k}", 2 * k + 2), stats(work / f"b{k}", 2 * k + 1)).checks
            by_pair = defaultdict(list)
            for c in checks:
                by_pair[c["variant"]].append(c)
            pairs += len(by_pair)
            judged += sum(c["passed"] is not None for c in checks)
            gate_fails += sum(any(c["passed"] is False for c in p) for p in by_pair.values())
            point_fails += sum(any(c["passed"] is not None and c["observed"] > c["threshold"] for c in p) for p in by_pair.values())
        print(
            f"false alarms: the gate failed {gate_fails} of {pairs} pairs ({judged:,} metrics judged); "
            f"point estimates against the same limits failed {point_fails} of {pairs}"
        )
        base = stats(work / "base", 7)
        for factor in factors:
            cur = stats(work / f"slow{factor}", 8, endpoint_factor={("uk", "respond"): factor})
            checks = against_baseline(cur, base, ["p95:+10%"]).checks
            target = [c for c in checks if (c["region"], c["endpoint"]) == ("uk", "respond")]
            caught = sum(c["passed"] is False for c in target)
            elsewhere = sum(c["passed"] is False for c in checks if c not in target)
            print(f"power: uk respond +{factor - 1:.0%}: caught in {caught} of {len(target)} pairs; false alarms elsewhere: {elsewhere}")


if __name__ == "__main__":
    main()
