"""Benchmark: the mock Chat API's maximum requests/s on one core.

The mock (one region, latency scale 0, no faults) runs pinned to one CPU with ``taskset``;
``wrk`` drives it from another CPU with keep-alive connections, once POSTing respond to a
pre-created conversation and once POSTing create. The goal is ≥ 2× what one Locust
FastHttpUser generator can send (~11.7k req/s measured bare), so the mock is never the
bottleneck of a run.

    python benchmarks/bench_mock.py              # 10 s per scenario, fast engine, uvloop
    python benchmarks/bench_mock.py --quick      # 3 s per scenario
    python benchmarks/bench_mock.py --engine aiohttp --engine fast --repeat 3
    python benchmarks/bench_mock.py --loop uvloop --loop asyncio --repeat 5   # which event loop

Several configurations (``--engine`` × ``--loop``) are measured side by side: each
repetition runs every configuration once, in turn, so a change in the machine's load hits
them alike; the table shows the best and the median and, per CPU-second, the ratio to the
first configuration.

Needs ``wrk`` (Debian package ``wrk``) and ``taskset`` (util-linux); needs ≥ 2 CPUs for
meaningful pinning (with one CPU both share it, and the numbers say so). Besides req/s it
prints requests per CPU-second of the mock: what it does on a core of its own, a number
that stays meaningful when other work shares the CPUs during the run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loadtest import api  # noqa: E402

GOAL = 2 * 11_700

LUA = """
wrk.method = "{method}"
wrk.body = [[{body}]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["{key_header}"] = "{key}"
wrk.headers["{token_header}"] = "{token}"
"""


def lua_script(method: str, body: dict) -> str:
    return LUA.format(
        method=method, body=json.dumps(body), key_header=api.API_KEY_HEADER, token_header=api.TOKEN_HEADER, key=api.DUMMY_API_KEY, token=api.DUMMY_TOKEN
    )


# The mock's command line runs on uvloop when it is installed; "asyncio" forces the
# standard loop to compare the two.
ASYNCIO_MOCK = "import asyncio, sys; import loadtest.mock.cli as cli; cli.new_event_loop = asyncio.new_event_loop; sys.exit(cli.main())"


def start_mock(engine: str, loop: str, cpu: str | None, workdir: Path) -> tuple[subprocess.Popen, str]:
    ready = workdir / f"ready-{engine}-{loop}.json"
    ready.unlink(missing_ok=True)
    cmd = [
        sys.executable,
        *(["-c", ASYNCIO_MOCK] if loop == "asyncio" else ["-m", "loadtest.mock.cli"]),
        "--region",
        "uk",
        "--port",
        "0",
        "--latency-scale",
        "0",
        "--end-after",
        "0",
        "--end-probability",
        "0",
        "--engine",
        engine,
        "--ready-file",
        str(ready),
        "--quiet",
    ]
    if cpu is not None:
        cmd = ["taskset", "-c", cpu, *cmd]
    env = {**os.environ, "PYTHONPATH": str(ROOT), api.API_KEY_ENV: api.DUMMY_API_KEY, api.TOKEN_ENV: api.DUMMY_TOKEN}
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT)
    deadline = time.monotonic() + 20
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"mock did not start (exit {proc.returncode})")
        time.sleep(0.05)
    return proc, json.loads(ready.read_text())["regions"]["uk"]


def post(url: str, method: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method=method, headers=api.headers(api.DUMMY_API_KEY, api.DUMMY_TOKEN))
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(url: str, script: Path, seconds: int, connections: int, cpu: str | None, pid: int) -> dict:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url]
    if cpu is not None:
        cmd = ["taskset", "-c", cpu, *cmd]
    cpu_before = cpu_seconds(pid)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    cpu_used = cpu_seconds(pid) - cpu_before
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:(.*)", out)
    latency = re.search(r"Latency\s+(\S+)\s+(\S+)\s+(\S+)", out)
    # Requests per CPU-second of the mock: its rate on a core of its own, even when other
    # work shares the CPUs during the run (then req/s is low but this stays put).
    per_cpu = int(total.group(1)) / cpu_used if total and cpu_used > 0 else float("nan")
    return {
        "rps": rps,
        "per_cpu_s": per_cpu,
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1).strip() if errors else "",
        "latency_avg": latency.group(1) if latency else "?",
    }


def bench(engine: str, loop: str, seconds: int, connections: int, cpus: tuple[str | None, str | None], workdir: Path) -> list[dict]:
    """One run of each scenario against a fresh mock: a row per scenario."""
    proc, base = start_mock(engine, loop, cpus[0], workdir)
    rows = []
    try:
        conversation = post(base + api.path("create"), "POST", api.create_body("a"))["conversation_id"]
        scenarios = {
            "respond": ("POST", api.path("respond"), api.respond_body(conversation, "I'd like to change my booking please")),
            "create": ("POST", api.path("create"), api.create_body("a")),
        }
        for name, (method, path, body) in scenarios.items():
            script = workdir / f"{name}.lua"
            script.write_text(lua_script(method, body))
            rows.append({"engine": engine, "loop": loop, "scenario": name, **run_wrk(base + path, script, seconds, connections, cpus[1], proc.pid)})
        stats = json.loads(urllib.request.urlopen(base + "/_mock/stats", timeout=5).read())
        assert set(stats["statuses"]) == {"200"}, stats["statuses"]  # every request answered 200
    finally:
        proc.terminate()
        proc.wait(10)
    return rows


def summarise(runs: list[dict]) -> list[dict]:
    """Per configuration and scenario: best and median req/s, median req per CPU-second."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["engine"], r["loop"], r["scenario"]), []).append(r)
    rows = []
    for group in groups.values():
        rates = sorted(r["rps"] for r in group)
        per_cpu = sorted(r["per_cpu_s"] for r in group)
        best = max(group, key=lambda r: r["rps"])
        rows.append(
            {
                **best,
                "median_rps": statistics.median(rates),
                "per_cpu_s": statistics.median(per_cpu),
                "best_per_cpu_s": per_cpu[-1],
                "non2xx": sum(r["non2xx"] for r in group),
                "runs": len(group),
            }
        )
    first = {r["scenario"]: r["per_cpu_s"] for r in rows if (r["engine"], r["loop"]) == (rows[0]["engine"], rows[0]["loop"])}
    for r in rows:
        r["ratio"] = r["per_cpu_s"] / first[r["scenario"]]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 s per scenario instead of 10 s")
    parser.add_argument("--duration", type=int, help="seconds per scenario")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="repetitions, each running every configuration once in turn; the best and the median are shown (default 1)"
    )
    parser.add_argument("--engine", action="append", choices=("fast", "aiohttp"), help="front end(s) to measure (default fast)")
    parser.add_argument(
        "--loop", action="append", choices=("uvloop", "asyncio"), help="the mock's event loop(s) to measure (default uvloop, as `loadtest mock` runs)"
    )
    parser.add_argument("--server-cpu", default="0", help="CPU for the mock (default 0)")
    parser.add_argument("--client-cpu", default="1", help="CPU for wrk (default 1)")
    args = parser.parse_args(argv)
    if not shutil.which("wrk"):
        print("wrk not found: apt-get install wrk", file=sys.stderr)
        return 2
    seconds = args.duration or (3 if args.quick else 10)
    pin = shutil.which("taskset") and (os.cpu_count() or 1) >= 2
    cpus = (args.server_cpu, args.client_cpu) if pin else (None, None)
    if not pin:
        print("note: fewer than 2 CPUs or no taskset: mock and wrk share the machine", file=sys.stderr)

    load_before = os.getloadavg()[0]
    configs = [(engine, loop) for engine in args.engine or ["fast"] for loop in args.loop or ["uvloop"]]
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-mock-") as tmp:
        for _ in range(max(1, args.repeat)):  # interleaved: every configuration once per repetition
            for engine, loop in configs:
                runs += bench(engine, loop, seconds, args.connections, cpus, Path(tmp))
    rows = summarise(runs)

    print(
        f"\nmock on CPU {cpus[0]}, wrk on CPU {cpus[1]}, {args.connections} connections, {seconds} s × "
        f"{max(1, args.repeat)} per scenario; goal >= {GOAL} req/s (2x one Locust FastHttpUser process)"
    )
    if load_before > 0.5:
        print(f"warning: load average was {load_before:.1f} before the run: other work shares these CPUs, so these numbers are low")
    print(
        f"{'engine':<8} {'loop':<8} {'scenario':<8} {'best req/s':>10} {'median':>8} {'vs goal':>8} "
        f"{'req/CPU-s':>10} {'best':>8} {'ratio':>6} {'avg lat':>8} {'non-2xx':>8}  socket errors"
    )
    for r in rows:
        print(
            f"{r['engine']:<8} {r['loop']:<8} {r['scenario']:<8} {r['rps']:>10.0f} {r['median_rps']:>8.0f} "
            f"{r['rps'] / GOAL:>7.2f}x {r['per_cpu_s']:>10.0f} {r['best_per_cpu_s']:>8.0f} {r['ratio']:>6.2f} "
            f"{r['latency_avg']:>8} {r['non2xx']:>8}  {r['socket_errors'] or '-'}"
        )
    print("req/CPU-s: median requests per CPU-second the mock used, i.e. its rate on a core of its own; ratio: that median over the first configuration's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
