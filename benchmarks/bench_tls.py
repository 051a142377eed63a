"""Benchmark: HTTPS against plain HTTP, and the two connection policies over TLS.

Against the mock for one region at latency scale 0 (so what a request costs is the client,
the loopback stack and, over TLS, the handshake and encryption), Locust pinned to CPU 0 and
the mock to CPU 1, as in bench_generator.py:

1. **Create latency by connection policy** over the TLS mock, at light load (4 users, 20 ms
   think time): `--connections per-conversation` (a new TLS connection per conversation) vs
   `per-user`. Create p50/p95 come from requests.csv, handshake p50/p95 from connections.csv.
2. **Generator req/s over TLS vs plain HTTP**, 50 users, no think time, per-user connections
   (like bench_generator), interleaved pairs; the verdict is the median per-pair ratio.

    python benchmarks/bench_tls.py            # 3 rounds of part 1, 4 pairs of part 2, 8 s each
    python benchmarks/bench_tls.py --quick    # 1 round, 2 pairs, 5 s
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_generator import run_once  # noqa: E402
from common import machine_info, median, mock  # noqa: E402


def column(path: Path, name: str, where: tuple[str, str] | None = None) -> np.ndarray:
    with open(path, newline="") as f:
        return np.array([float(r[name]) for r in csv.DictReader(f) if where is None or r[where[0]] == where[1]], dtype=float)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--duration", type=int, help="seconds per run (default 8; quick 5)")
    parser.add_argument("--rounds", type=int, help="rounds of part 1 (default 3; quick 1)")
    parser.add_argument("--pairs", type=int, help="pairs of part 2 (default 4; quick 2)")
    parser.add_argument("--locust-cpu", default="0")
    parser.add_argument("--mock-cpu", default="1")
    args = parser.parse_args(argv)
    seconds = args.duration or (5 if args.quick else 8)
    rounds = args.rounds or (1 if args.quick else 3)
    pairs = args.pairs or (2 if args.quick else 4)
    print(machine_info())
    with tempfile.TemporaryDirectory(prefix="bench-tls-") as tmp:
        work = Path(tmp)
        with mock(work, args.mock_cpu, "--tls", name="tls") as (_p1, tls_base), mock(work, args.mock_cpu, name="plain") as (_p2, plain_base):
            ca = json.loads((work / "ready-tls.json").read_text())["ca_bundle"]

            print(f"\n1. create latency by connection policy over TLS (4 users, think 20 ms, {seconds} s, {rounds} rounds)")
            print(f"{'round':>5} {'policy':<17} {'conv':>6} {'create p50':>10} {'create p95':>10} {'handshakes':>10} {'hs p50':>8} {'hs p95':>8}")
            by_policy: dict[str, list[float]] = {}
            for i in range(rounds):
                for policy in ("per-conversation", "per-user"):
                    run_dir = work / f"lat-{i}-{policy}"
                    run_once(policy, tls_base, run_dir, 4, seconds, 3, args.locust_cpu, {"ca_bundle": ca, "connections": policy, "think_time": "0.02"})
                    create = column(run_dir / "requests.csv", "response_time_ms", ("endpoint", "create"))
                    hs = column(run_dir / "connections.csv", "tls_handshake_ms")
                    p50, p95 = np.percentile(create, [50, 95])
                    h50, h95 = np.percentile(hs, [50, 95])
                    by_policy.setdefault(policy, []).append(p50)
                    print(f"{i:>5} {policy:<17} {len(create):>6} {p50:>8.2f}ms {p95:>8.2f}ms {len(hs):>10} {h50:>6.2f}ms {h95:>6.2f}ms", flush=True)
            pc, pu = median(by_policy["per-conversation"]), median(by_policy["per-user"])
            print(f"median create p50: per-conversation {pc:.2f} ms, per-user {pu:.2f} ms (+{pc - pu:.2f} ms, the handshake that a new customer pays)")

            print(f"\n2. generator req/s, TLS vs plain HTTP (50 users, think 0, per-user, {seconds} s, {pairs} pairs)")
            rows = []
            for i in range(pairs):
                order = ("plain", "tls") if i % 2 == 0 else ("tls", "plain")
                for kind in order:
                    base, extra = (tls_base, {"ca_bundle": ca}) if kind == "tls" else (plain_base, {})
                    row = run_once(kind, base, work / f"gen-{i}-{kind}", 50, seconds, 3, args.locust_cpu, extra)
                    row["rep"] = i
                    rows.append(row)
                    print(f"  pair {i} {kind:<5} {row['rps']:>6.0f} req/s, failures {row['failures']}", flush=True)
    ratios = [t["rps"] / p["rps"] for t, p in zip((r for r in rows if r["kind"] == "tls"), (r for r in rows if r["kind"] == "plain"))]
    tls_rps = median([r["rps"] for r in rows if r["kind"] == "tls"])
    plain_rps = median([r["rps"] for r in rows if r["kind"] == "plain"])
    print(f"median req/s: TLS {tls_rps:.0f}, plain {plain_rps:.0f}; per-pair TLS/plain {', '.join(f'{x:.2f}' for x in ratios)} → median {median(ratios):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
