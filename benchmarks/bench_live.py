"""Benchmark: the cost of the live statistics path (progress line, web UI Regions tab).

    python benchmarks/bench_live.py                     # this checkout
    python benchmarks/bench_live.py --old /path/to/main  # and another checkout, side by side

Per request: `LiveStats.add_request` as on a worker (forwarding on) and as on a single
process. Per snapshot: `snapshot()` + `webui.region_rows()` with 10k, 100k and 1M requests
in the 10 s window (1k to 100k requests/s), 4 regions × 2 variants × 3 endpoints. Each
measurement runs in a fresh process; numbers are the best of 3 repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CODE = textwrap.dedent("""
    import json, sys, time
    sys.path[:0] = [CODE_ROOT]
    import numpy as np
    from loadtest.inlocust.live import LiveStats
    from loadtest.inlocust.webui import region_rows
    rng = np.random.default_rng(1)
    keys = [(r, v, e) for r in ("us", "uk", "eu", "self-serve") for v in ("a", "b") for e in ("create", "respond", "close")]
    vals = np.round(rng.lognormal(5, 0.6, N), 3).tolist()
    now = time.time()
    best_add = {}
    for forward in (False, True):
        best = float("inf")
        for _ in range(3):
            live = LiveStats()
            t = time.perf_counter()
            for i, v in enumerate(vals):
                r, va, e = keys[i % 24]
                live.add_request(r, va, e, v, True, now - 9 + 9 * i / N, forward=forward)
            best = min(best, (time.perf_counter() - t) / N)
            if forward:
                live.drain()
        best_add[forward] = best
    snap_best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        snap = live.snapshot(now)
        region_rows(live, snap)
        snap_best = min(snap_best, time.perf_counter() - t)
    print("RESULT " + json.dumps({"add_us": best_add[False] * 1e6, "add_forward_us": best_add[True] * 1e6,
                                  "snapshot_ms": snap_best * 1e3}))
""")


def run(root: Path, n: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", f"CODE_ROOT = {str(root)!r}\nN = {n}\n" + CODE], capture_output=True, text=True, env=env)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.split("RESULT ", 1)[1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", type=Path, help="another checkout to measure side by side")
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    args = ap.parse_args(argv)
    print(f"{'in window':>10} {'code':<5} {'add µs':>7} {'add+fwd µs':>10} {'snapshot+rows ms':>17}")
    for n in args.sizes:
        for name, root in (("new", ROOT), ("old", args.old)):
            if root is None:
                continue
            r = run(root, n)
            print(f"{n:>10,} {name:<5} {r['add_us']:>7.2f} {r['add_forward_us']:>10.2f} {r['snapshot_ms']:>17.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
