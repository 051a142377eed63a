"""Benchmark: rows per second one master ingests from its workers; --processes 2 vs one process.

Part 1, the master's ingest. A Locust master with our plugin (its collector writes the workers'
rows into the run folder) is pinned to CPU 0; K workers running benchmarks/flood_locustfile.py
(no HTTP: they fire Locust's request event in a tight loop, so every row takes the real
worker path: recorder → outbox → shipper → Locust's message channel) share CPU 1. A sampler
reads the master's CPU time and the run folder's CSV sizes every 0.5 s; over the steady
window the figure is rows written per master CPU-second (what one master core ingests),
with the master's utilisation beside it. Rows per byte come from the files at the end, and
run.json's accounting says whether any worker dropped rows (it must not, for the figure to
mean anything: a master that falls behind makes its workers drop, not slow down).

Target: one master core keeps up with ≥ 8 workers at the generator's full single-core rate:
8 × (5,100 requests/s + 1,020 conversation rows/s) ≈ 49,000 rows per master CPU-second
(5,100 req/s: benchmarks/RESULTS.md, generator efficiency; a conversation row per 5 requests).

Part 2, `loadtest run --processes 2` vs one process, on this machine: the same scenario
(50 users, uk, no think time, three responds, mock latency scale 0, the mock unpinned as
`loadtest run` starts it), runs interleaved A/B; req/s = rows of requests.csv over the span
of their timestamps; the verdict is the median per-pair ratio.

    python benchmarks/bench_fleet.py            # ingest 2 × 15 s with 2 workers; 3 pairs of 10 s
    python benchmarks/bench_fleet.py --quick    # 1 × 8 s; 1 pair of 6 s
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import psutil  # noqa: E402

from common import ROOT, child_env, machine_info, median, pinned  # noqa: E402
from analysis import records  # noqa: E402

FLOOD = Path(__file__).resolve().parent / "flood_locustfile.py"
GENERATOR_REQ_S = 5_100  # RESULTS.md: our user on one core
ROWS_PER_WORKER = GENERATOR_REQ_S * 1.2  # + one conversation row per five requests
TARGET_WORKERS = 8


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scenario_flags() -> list[str]:
    return ["--regions", "uk", "--variants", "a", "--base-urls", "uk=http://127.0.0.1:1"]


def csv_bytes(run_dir: Path) -> int:
    total = 0
    for name in (records.REQUESTS_CSV, records.CONVERSATIONS_CSV):
        try:
            total += (run_dir / name).stat().st_size
        except OSError:
            pass
    return total


def csv_rows(run_dir: Path) -> tuple[int, int]:
    """(rows, bytes) of the data rows of requests.csv + conversations.csv."""
    rows = size = 0
    for name in (records.REQUESTS_CSV, records.CONVERSATIONS_CSV):
        with open(run_dir / name, "rb") as f:
            header = len(f.readline())
            data = f.read()
        rows += data.count(b"\n")
        size += len(data) + header
    return rows, size


def ingest_once(workdir: Path, workers: int, seconds: int, mode: str) -> dict:
    run_dir = workdir / f"ingest-{time.monotonic_ns()}"
    port = free_port()
    master_cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(FLOOD),
        "--master",
        "--expect-workers",
        str(workers),
        "--master-bind-host",
        "127.0.0.1",
        "--master-bind-port",
        str(port),
        "--headless",
        "--users",
        str(4 * workers),
        "--spawn-rate",
        str(4 * workers),
        "--run-time",
        f"{seconds}s",
        "--stop-timeout",
        "5",
        "--only-summary",
        "--loglevel",
        "WARNING",
        "--run-dir",
        str(run_dir),
        *scenario_flags(),
    ]
    worker_cmd = [sys.executable, "-m", "locust", "-f", str(FLOOD), "--worker", "--master-port", str(port), "--loglevel", "WARNING"]
    log = open(workdir / "ingest.log", "ab")
    master = subprocess.Popen(pinned("0", master_cmd), env=child_env(), cwd=ROOT, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    procs = [
        subprocess.Popen(pinned("1", worker_cmd), env={**child_env(), "FLOOD": mode}, cwd=ROOT, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        for _ in range(workers)
    ]
    samples: list[tuple[float, float, int]] = []
    ps = psutil.Process(master.pid)
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                cpu = ps.cpu_times()
                samples.append((time.monotonic(), cpu.user + cpu.system, csv_bytes(run_dir)))
            except psutil.Error:
                return
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        master.wait(timeout=seconds + 120)
    finally:
        stop.set()
        for p in [master, *procs]:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        log.close()
    sampler.join()
    rows, size = csv_rows(run_dir)
    accounts = json.loads((run_dir / records.RUN_JSON).read_text()).get("worker_rows", {})
    dropped = sum(sum((a.get("dropped") or {}).values()) for a in accounts.values())
    produced = sum(sum((a.get("produced") or {}).values()) for a in accounts.values())
    # The steady window: from 2 s after the first rows to 1 s before the last growth.
    growing = [s for s in samples if s[2] > 4096]
    if len(growing) < 6:
        raise SystemExit(f"too few samples with rows ({len(growing)}); see {workdir / 'ingest.log'}")
    t0 = growing[0][0] + 2.0
    last_growth = max(s[0] for s in samples if s[2] == samples[-1][2])
    window = [s for s in growing if t0 <= s[0] <= last_growth - 1.0] or growing
    (ta, ca, ba), (tb, cb, bb) = window[0], window[-1]
    per_byte = rows / size
    rows_window = (bb - ba) * per_byte
    shutil.rmtree(run_dir, ignore_errors=True)
    return {
        "rows": rows,
        "produced": produced,
        "dropped": dropped,
        "window_s": tb - ta,
        "rows_per_s": rows_window / (tb - ta),
        "rows_per_cpu_s": rows_window / max(cb - ca, 1e-9),
        "master_util": (cb - ca) / (tb - ta),
    }


def run_once(workdir: Path, processes: int, seconds: int) -> float:
    out = workdir / f"run-{processes}-{time.monotonic_ns()}"
    cmd = [
        sys.executable,
        "-m",
        "loadtest",
        "run",
        "--regions",
        "uk",
        "--variants",
        "",
        "--turns",
        "3",
        "--think-time",
        "0",
        "--users",
        "50",
        "--spawn-rate",
        "50",
        "--duration",
        f"{seconds}s",
        "--mock-latency-scale",
        "0",
        "--stop-timeout",
        "5s",
        "--processes",
        str(processes),
        "--out",
        str(out),
    ]
    done = subprocess.run(cmd, env=child_env(), cwd=ROOT, capture_output=True, text=True, timeout=seconds + 180)
    if done.returncode != 0:
        raise SystemExit(f"loadtest run failed ({done.returncode}): {done.stderr[-2000:]}")
    run_dir = (out / "latest").resolve()
    with open(run_dir / records.REQUESTS_CSV, newline="") as f:
        stamps = [float(r["timestamp"]) for r in csv.DictReader(f) if r["ok"] == "1"]
    shutil.rmtree(out, ignore_errors=True)
    return len(stamps) / max(max(stamps) - min(stamps), 1e-9)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--workers", type=int, default=2, help="flood workers of part 1 (all on CPU 1)")
    ap.add_argument("--skip-processes", action="store_true", help="only part 1")
    args = ap.parse_args()
    print(machine_info())
    workdir = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    reps, seconds = (1, 8) if args.quick else (2, 15)

    for mode, what in (
        ("lines", "ready-made CSV lines into the outbox: as many rows as the workers can offer"),
        ("events", "request events through recorder, outbox, shipper: the whole worker path"),
    ):
        print(f"\nPart 1 ({mode}): master ingest, {args.workers} flood workers on CPU 1, master on CPU 0, {seconds} s; {what}")
        results = []
        for i in range(reps):
            r = ingest_once(workdir, args.workers, seconds, mode)
            results.append(r)
            print(
                f"  run {i + 1}: {r['rows_per_cpu_s']:,.0f} rows per master CPU-second "
                f"({r['rows_per_s']:,.0f} rows/s at {r['master_util']:.0%} of a core; "
                f"{r['rows']:,} rows written, {r['produced']:,} produced, {r['dropped']:,} dropped)"
            )
        per_cpu = median(r["rows_per_cpu_s"] for r in results)
        per_s = median(r["rows_per_s"] for r in results)
        workers_equiv = per_cpu / ROWS_PER_WORKER
        print(
            f"  median {per_cpu:,.0f} rows per master CPU-second, {per_s:,.0f} rows/s ≈ {workers_equiv:.1f} "
            f"workers at the generator's full single-core rate ({ROWS_PER_WORKER:,.0f} rows/s each); "
            f"target ≥ {TARGET_WORKERS}: {'met' if workers_equiv >= TARGET_WORKERS else 'NOT met'}"
        )

    if not args.skip_processes:
        pairs, run_s = (1, 6) if args.quick else (3, 10)
        print(f"\nPart 2: loadtest run --processes 2 vs one process, {pairs} interleaved pairs × {run_s} s")
        ratios, ones, twos = [], [], []
        for i in range(pairs):
            order = (0, 2) if i % 2 == 0 else (2, 0)
            got = {p: run_once(workdir, p, run_s) for p in order}
            ones.append(got[0])
            twos.append(got[2])
            ratios.append(got[2] / got[0])
            print(f"  pair {i + 1}: one process {got[0]:,.0f} req/s, --processes 2 {got[2]:,.0f} req/s, ratio {ratios[-1]:.2f}")
        print(f"  median: one process {median(ones):,.0f}, --processes 2 {median(twos):,.0f} req/s; median ratio {median(ratios):.2f}")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
