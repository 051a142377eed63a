"""Shared helpers of the benchmarks: machine info, the mock pinned to a CPU, Locust's stats CSV.

Not a benchmark itself. Imported as ``from common import ...`` by scripts in this folder
(each puts the folder and the repository root on ``sys.path``).
"""

from __future__ import annotations

import csv
import json
import os
import platform
import shutil
import ssl
import statistics
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from loadtest import api  # noqa: E402

MOCK_START_TIMEOUT_S = 20.0


# ---------------------------------------------------------------------------- machine


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def version_of(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "-"


def wrk_version() -> str:
    if not shutil.which("wrk"):
        return "-"
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    first = (out.stdout or out.stderr).strip().splitlines()
    return first[0] if first else "?"


def machine_info() -> str:
    """One line: CPUs, CPU model, Python, Locust, wrk, load average when measured."""
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"machine: nproc {os.cpu_count()} · CPU {cpu_model()} · Python {platform.python_version()}"
        f" · Locust {version_of('locust')} · {wrk_version()} · load average {load}"
    )


def can_pin() -> bool:
    return bool(shutil.which("taskset")) and (os.cpu_count() or 1) >= 2


def pinned(cpu: str | None, cmd: list[str]) -> list[str]:
    """`taskset -c CPU cmd` when pinning is possible, else cmd."""
    return ["taskset", "-c", cpu, *cmd] if cpu is not None and can_pin() else list(cmd)


def child_env() -> dict[str, str]:
    """The environment for the mock and Locust: repo importable, dummy credentials, no LOADTEST_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOADTEST_")}
    env.update({"PYTHONPATH": str(ROOT), api.API_KEY_ENV: api.DUMMY_API_KEY, api.TOKEN_ENV: api.DUMMY_TOKEN})
    return env


# ---------------------------------------------------------------------------- mock


@contextmanager
def mock(
    workdir: Path, cpu: str | None = "1", *extra: str, region: str = "uk", deterministic: bool = True, name: str = "mock"
) -> Iterator[tuple[subprocess.Popen, str]]:
    """The mock for one region, latency scale 0, pinned to `cpu`; yields (process, base URL).

    `deterministic`: the agent never ends or hands off a conversation (--end-after 0
    --end-probability 0 --handoff-rate 0), so a user's turns are exactly what it asks for.
    """
    ready = workdir / f"ready-{name}.json"
    cmd = [sys.executable, "-m", "loadtest.mock.cli", "--region", region, "--port", "0", "--latency-scale", "0", "--ready-file", str(ready), "--quiet"]
    if deterministic:
        cmd += ["--end-after", "0", "--end-probability", "0", "--handoff-rate", "0"]
    cmd += list(extra)
    proc = subprocess.Popen(pinned(cpu, cmd), env=child_env(), cwd=ROOT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + MOCK_START_TIMEOUT_S
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"mock did not start (exit {proc.poll()})")
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        base = info["regions"][region]
        if info.get("ca_bundle"):  # --tls: the mock's throwaway CA, for request() and --ca-bundle
            TLS_CONTEXTS[base] = ssl.create_default_context(cafile=info["ca_bundle"])
        yield proc, base
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# base URL → SSL context trusting that TLS mock's CA (set by mock(..., "--tls"))
TLS_CONTEXTS: dict[str, ssl.SSLContext] = {}


def request(base: str, method: str, path: str, body: dict | None = None, timeout: float = 5) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method, headers=api.headers(api.DUMMY_API_KEY, api.DUMMY_TOKEN))
    with urllib.request.urlopen(req, timeout=timeout, context=TLS_CONTEXTS.get(base)) as r:
        return json.loads(r.read())


def create_conversation(base: str, variant: str | None = None) -> str:
    return request(base, "POST", api.path("create"), api.create_body(variant))["conversation_id"]


def mock_stats(base: str) -> dict:
    return request(base, "GET", "/_mock/stats")


# ---------------------------------------------------------------------------- wrk

WRK_HEADERS_LUA = """
wrk.headers["Content-Type"] = "application/json"
wrk.headers["{key_header}"] = "{key}"
wrk.headers["{token_header}"] = "{token}"
""".format(key_header=api.API_KEY_HEADER, key=api.DUMMY_API_KEY, token_header=api.TOKEN_HEADER, token=api.DUMMY_TOKEN)


def lua_string(text: str) -> str:
    """A Lua long-bracket string literal holding `text` verbatim."""
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    eq = "=" * level
    return f"[{eq}[{text}]{eq}]"


# ---------------------------------------------------------------------------- Locust output


def locust_aggregated(csv_prefix: Path) -> dict[str, str]:
    """The 'Aggregated' row of Locust's <prefix>_stats.csv."""
    path = Path(f"{csv_prefix}_stats.csv")
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row.get("Name") == "Aggregated":
                return row
    raise SystemExit(f"no Aggregated row in {path}")


def median(xs) -> float:
    xs = list(xs)
    return statistics.median(xs) if xs else float("nan")


def fmt_bytes(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"
