"""Helpers for tests that run the real command line in a child process (loopback, bounded)."""

import csv
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

FAST = ["--think-time", "0.05-0.15", "--spawn-rate", "50"]


def loadtest(*args, env=None, timeout=150, **kw):
    """`loadtest ARGS` in a child process; its CompletedProcess (text stdout/stderr)."""
    return subprocess.run([sys.executable, "-m", "loadtest", *args], capture_output=True, text=True, env=env, timeout=timeout, stdin=subprocess.DEVNULL, **kw)


def free_port_block(n: int) -> int:
    """A first port P with P..P+n-1 all free right now (all bound at once, then released)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n >= 65535:
            continue
        socks = []
        try:
            for i in range(n):
                t = socket.socket()
                socks.append(t)
                t.bind(("127.0.0.1", base + i))
            return base
        except OSError:
            continue
        finally:
            for t in socks:
                t.close()
    raise RuntimeError("no free block of ports")


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_rows(run_dir: Path, pattern: str = "requests*.csv") -> list[dict]:
    rows = []
    for path in sorted(run_dir.glob(pattern)):
        rows += read_csv(path)
    return rows


def run_json(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())


def until(condition, timeout: float, interval: float = 0.1, what: str | None = None, ignore=()):
    """Poll `condition()` until it returns something truthy, and return that. Exceptions of the
    types in `ignore` count as not yet (e.g. a page re-rendering). On timeout: an AssertionError
    naming `what` when given, else the last (falsy) value, for the caller's own assertion."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except ignore as e:
            last_error = e
        time.sleep(interval)
    if what is None:
        return condition()
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}" + (f" (last error: {last_error!r})" if last_error else ""))


def wait_for_rows(path: Path, rows: int, timeout: float = 40) -> bool:
    """Wait until a CSV that a run is writing holds more than `rows` lines."""
    return bool(until(lambda: path.exists() and len(path.read_text().splitlines()) > rows, timeout, 0.2))
