"""Benchmark: the measurement floor — the latency our tool records when the server adds none.

At about 50 requests/s against the mock (one region, latency scale 0, pinned to CPU 1), the
p50 and p99 of respond that our tool writes to requests.csv are compared with what `wrk`
measures at the same rate against the same endpoint, both clients pinned to CPU 0:

  ours 5u   locustfiles/chat.py as `loadtest run` starts it (children.locust_command): 5 users,
            think time 0.12 s, 4 turns: a conversation is 6 requests and 5 pauses (before
            each respond and between conversations) → ~50 req/s, 2/3 of them respond.
            p50/p99 of the respond rows of requests.csv with analysis.stats.percentiles
            (linear interpolation).
  ours 1u   the same with 1 user and think time 24 ms: one request at a time on one
            connection, like wrk below.
  bare 5u   benchmarks/bare_locustfile.py, a bare FastHttpUser with the same users, think time
            and turns, its respond response times as Locust measures them: the floor of
            Locust's FastHttpUser itself, without our tool.
  wrk       wrk -t1 -c1 with a Lua delay() of 20 ms before every request (wrk2 is not
            available), POSTing respond to one open conversation; p50/p99 from its done() hook,
            latency:percentile(p) (µs histogram, nearest rank).

Runs alternate (order rotated each repetition); each figure is the median over repetitions.
Target: ours within 0.5 ms of wrk at p50 and within 1 ms at p99.

    python benchmarks/bench_floor.py            # 2 repetitions × 15 s per client (~2.5 min)
    python benchmarks/bench_floor.py --quick    # 1 × 8 s
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from common import (
    ROOT,
    WRK_HEADERS_LUA,
    child_env,
    create_conversation,
    lua_string,  # noqa: E402
    machine_info,
    median,
    mock,
    pinned,
)
from analysis.stats import percentiles  # noqa: E402
from loadtest import api, config  # noqa: E402
from loadtest import children  # noqa: E402

P50_LIMIT_MS, P99_LIMIT_MS = 0.5, 1.0
MESSAGE = "I'd like to change my booking please"

WRK_LUA = """
wrk.method = "POST"
wrk.body = {body}
{headers}
function delay()
  return {delay_ms}
end
function done(summary, latency, requests)
  local p = {{}}
  for _, q in ipairs({{50, 90, 99, 99.9}}) do p[#p + 1] = string.format('"%s": %d', q, latency:percentile(q)) end
  io.write(string.format('WRKRESULT {{"requests": %d, "status_errors": %d, "min": %d, "max": %d, "mean": %f, %s}}\\n',
    summary.requests, summary.errors.status, latency.min, latency.max, latency.mean, table.concat(p, ", ")))
end
"""

OURS = {  # name → (users, think time)
    "ours 5u": (5, "0.12"),
    "ours 1u": (1, "0.024"),
}
BARE = Path(__file__).resolve().parent / "bare_locustfile.py"


def run_ours(name: str, base: str, run_dir: Path, seconds: int, turns: int, cpu: str) -> dict:
    users, think = OURS[name]
    run_dir.mkdir(parents=True)
    scenario = config.resolve(
        flags={
            "regions": "uk",
            "base_urls": f"uk={base}",
            "variants": "",
            "turns": str(turns),
            "think_time": think,
            "users": str(users),
            "spawn_rate": str(users),
            "duration": str(seconds),
            "stop_timeout": "5s",
        },
        environ={},
    )
    cmd = children.locust_command(scenario, {"uk": base}, run_dir=run_dir)
    with open(run_dir / "stdout.log", "w") as log:
        rc = subprocess.run(
            pinned(cpu, cmd), env=child_env(), cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, timeout=seconds + 60
        ).returncode
    if rc != 0:
        raise SystemExit(f"{name} run failed (exit {rc}); see {run_dir / 'stdout.log'}")
    df = pd.read_csv(run_dir / "requests.csv")
    span = df["timestamp"].max() - df["timestamp"].min()
    respond = df[(df["endpoint"] == "respond") & (df["ok"] == 1)]["response_time_ms"].to_numpy(float)
    p50, p90, p99, p999 = percentiles(respond, (50, 90, 99, 99.9))
    return {
        "client": name,
        "rate": len(df) / span if span > 0 else float("nan"),
        "n": len(respond),
        "errors": int((df["ok"] == 0).sum()),
        "p50": p50,
        "p90": p90,
        "p99": p99,
        "p99.9": p999,
        "max": float(respond.max()) if respond.size else float("nan"),
        "samples": respond,
    }


def run_bare(base: str, run_dir: Path, seconds: int, turns: int, cpu: str) -> dict:
    users, think = OURS["ours 5u"]
    run_dir.mkdir(parents=True)
    latencies = run_dir / "respond_ms.txt"
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(BARE),
        "--headless",
        "-H",
        base,
        "--users",
        str(users),
        "--spawn-rate",
        str(users),
        "--run-time",
        f"{seconds}s",
        "--stop-timeout",
        "5",
        "--only-summary",
        "--exit-code-on-error",
        "0",
        "--loglevel",
        "WARNING",
    ]
    env = {**child_env(), "BARE_TURNS": str(turns), "BARE_THINK": think, "BARE_LATENCY_FILE": str(latencies)}
    with open(run_dir / "stdout.log", "w") as log:
        rc = subprocess.run(
            pinned(cpu, cmd), env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, timeout=seconds + 60
        ).returncode
    if rc != 0 or not latencies.exists():
        raise SystemExit(f"bare run failed (exit {rc}); see {run_dir / 'stdout.log'}")
    respond = np.loadtxt(latencies, ndmin=1)
    p50, p90, p99, p999 = percentiles(respond, (50, 90, 99, 99.9))
    rate = len(respond) * (turns + 2) / turns / seconds  # approximate: all requests over the run time
    return {
        "client": "bare 5u",
        "rate": rate,
        "n": len(respond),
        "errors": 0,
        "p50": p50,
        "p90": p90,
        "p99": p99,
        "p99.9": p999,
        "max": float(respond.max()),
        "samples": respond,
    }


def run_wrk(base: str, script: Path, seconds: int, cpu: str) -> dict:
    cmd = ["wrk", "-t1", "-c1", f"-d{seconds}s", "--timeout", "5s", "-s", str(script), base + api.path("respond")]
    out = subprocess.run(pinned(cpu, cmd), capture_output=True, text=True, check=True, timeout=seconds + 30).stdout
    match = re.search(r"WRKRESULT (\{.*\})", out)
    if not match:
        raise SystemExit(f"wrk printed no result:\n{out}")
    r = json.loads(match.group(1))
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    us = 1000.0
    return {
        "client": "wrk",
        "rate": rate,
        "n": r["requests"],
        "errors": r["status_errors"],
        "p50": r["50"] / us,
        "p90": r["90"] / us,
        "p99": r["99"] / us,
        "p99.9": r["99.9"] / us,
        "max": r["max"] / us,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 repetition of 8 s per client")
    parser.add_argument("--duration", type=int, help="seconds per run (default 15; quick 8)")
    parser.add_argument("--reps", type=int, help="repetitions (default 2; quick 1)")
    parser.add_argument("--turns", type=int, default=4, help="respond turns per conversation (default 4)")
    parser.add_argument("--client-cpu", default="0")
    parser.add_argument("--mock-cpu", default="1")
    parser.add_argument("--keep", metavar="DIR", help="keep run folders here instead of a temp dir")
    args = parser.parse_args(argv)
    if not shutil.which("wrk"):
        print("wrk not found: apt-get install wrk", file=sys.stderr)
        return 2
    seconds = args.duration or (8 if args.quick else 15)
    reps = args.reps or (1 if args.quick else 2)
    clients = ["ours 5u", "wrk", "ours 1u", "bare 5u"]

    print(machine_info())
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        with mock(work, args.mock_cpu) as (_proc, base):
            conversation = create_conversation(base)  # never ends: --end-after 0
            script = work / "respond.lua"
            script.write_text(WRK_LUA.format(body=lua_string(json.dumps(api.respond_body(conversation, MESSAGE))), headers=WRK_HEADERS_LUA, delay_ms=20))
            for i in range(reps):
                order = clients[i % len(clients) :] + clients[: i % len(clients)]
                for name in order:
                    if name == "wrk":
                        row = run_wrk(base, script, seconds, args.client_cpu)
                    elif name == "bare 5u":
                        row = run_bare(base, work / f"{i}-bare5u", seconds, args.turns, args.client_cpu)
                    else:
                        row = run_ours(name, base, work / f"{i}-{name.replace(' ', '')}", seconds, args.turns, args.client_cpu)
                    row["rep"] = i
                    rows.append(row)
                    print(f"  rep {i} {name:<8} {row['rate']:>5.1f} req/s  p50 {row['p50']:.3f} ms  p99 {row['p99']:.3f} ms  (n={row['n']})", flush=True)

    print(
        f"\nclients on CPU {args.client_cpu}, mock on CPU {args.mock_cpu} (latency scale 0); {seconds} s per run, {reps} repetition(s); respond latency in ms"
    )
    print(f"{'rep':>3} {'client':<8} {'req/s':>6} {'n':>6} {'err':>4} {'p50':>7} {'p90':>7} {'p99':>7} {'p99.9':>7} {'max':>7}")
    for r in rows:
        print(
            f"{r['rep']:>3} {r['client']:<8} {r['rate']:>6.1f} {r['n']:>6} {r['errors']:>4} {r['p50']:>7.3f}"
            f" {r['p90']:>7.3f} {r['p99']:>7.3f} {r['p99.9']:>7.3f} {r['max']:>7.3f}"
        )
    med = {c: {q: median(r[q] for r in rows if r["client"] == c) for q in ("p50", "p99", "rate")} for c in clients}
    print("\nmedian over repetitions:")
    for c in clients:
        d50, d99 = med[c]["p50"] - med["wrk"]["p50"], med[c]["p99"] - med["wrk"]["p99"]
        extra = "" if c == "wrk" else f"   Δ vs wrk: p50 {d50:+.3f} ms, p99 {d99:+.3f} ms"
        print(f"  {c:<8} {med[c]['rate']:>5.1f} req/s  p50 {med[c]['p50']:.3f} ms  p99 {med[c]['p99']:.3f} ms{extra}")
    for c in ("ours 5u", "ours 1u", "bare 5u"):
        pooled = np.concatenate([r["samples"] for r in rows if r["client"] == c])
        p50, p99 = percentiles(pooled, (50, 99))
        print(f"  {c} pooled over repetitions: p50 {p50:.3f} ms, p99 {p99:.3f} ms (n={pooled.size})")
    d50 = med["ours 5u"]["p50"] - med["wrk"]["p50"]
    d99 = med["ours 5u"]["p99"] - med["wrk"]["p99"]
    ok = abs(d50) <= P50_LIMIT_MS and abs(d99) <= P99_LIMIT_MS
    b50 = med["ours 5u"]["p50"] - med["bare 5u"]["p50"]
    b99 = med["ours 5u"]["p99"] - med["bare 5u"]["p99"]
    print(
        f"verdict: {'PASS' if ok else 'FAIL'} — at ~50 req/s our recorded respond latency is "
        f"{d50:+.3f} ms (p50) and {d99:+.3f} ms (p99) off wrk's (limits ±{P50_LIMIT_MS} / ±{P99_LIMIT_MS} ms);"
        f" vs a bare Locust FastHttpUser {b50:+.3f} ms (p50), {b99:+.3f} ms (p99)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
