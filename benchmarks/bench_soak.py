"""Benchmark: the mock survives 100k conversations with bounded memory.

The mock (one region, latency scale 0, pinned to CPU 1) is driven by `wrk` (CPU 0) with a
Lua script that mixes creates with responds and closes of conversations it has created
(~60 % create, ~25 % respond, ~15 % close), so about three conversations in four are never
closed and must be forgotten by the mock. Two phases, each on a fresh mock:

  expiry  --idle-timeout 5: 100k conversations paced at about 2k/s (~50 s); afterwards the
          benchmark waits for the idle timeout so the abandoned ones expire.
  cap     --idle-timeout 300 --max-conversations 15000: 60k conversations unpaced; only the
          cap (least recently used eviction) bounds the store.

Throughout, the mock's RSS (psutil) is sampled every 0.25 s and GET /_mock/stats every 1 s,
and an abuser thread sends, in turn: a create declaring a 10 MB Content-Length, a 100 KB
respond body, a 100 KB chunked body (all must be 413), garbage bytes (400), a 20 KB header
(431) and a request cut off mid-head. Bounded: RSS at the end of the drive at most 10 % (or
8 MiB, whichever is more) above RSS at its half-way point, open conversations within the bound, the mock alive and
answering after the abuse, every abusive request refused with its expected status.

    python benchmarks/bench_soak.py            # 100k + 60k conversations, ~1.5 min
    python benchmarks/bench_soak.py --quick    # 20k + 12k (cap 3000)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

import psutil  # noqa: E402

from common import (
    WRK_HEADERS_LUA,
    fmt_bytes,
    lua_string,
    machine_info,
    mock,
    mock_stats,  # noqa: E402
    pinned,
)
from loadtest import api  # noqa: E402

SOAK_LUA = """
{headers}
local create_path, respond_path, close_path = {create_path}, {respond_path}, {close_path}
local create_body = {create_body}
local p_respond, p_close, delay_ms = {p_respond}, {p_close}, {delay_ms}
local ring, ids, n = {ring}, {{}}, 0

if delay_ms > 0 then
  function delay()
    return delay_ms
  end
end

function request()
  local r = math.random()
  if n > 0 and r < p_respond then
    local id = ids[math.random(n)]
    return wrk.format("POST", respond_path, nil, '{{"conversation_id":"' .. id .. '","message":"Where is my order?"}}')
  elseif n > 0 and r < p_respond + p_close then
    local i = math.random(n)
    local id = ids[i]
    ids[i] = ids[n]
    ids[n] = nil
    n = n - 1
    return wrk.format("PUT", close_path, nil, '{{"conversation_id":"' .. id .. '"}}')
  end
  return wrk.format("POST", create_path, nil, create_body)
end

function response(status, headers, body)
  if status == 200 and not body:find("end_conversation", 1, true) then
    local id = body:match('"conversation_id":%s*"([^"]+)"')
    if id then
      if n < ring then
        n = n + 1
        ids[n] = id
      else
        ids[math.random(n)] = id   -- the one it replaces is never closed
      end
    end
  end
end
"""

PHASES = {
    # name: (mock flags, conversations, delay ms per request per connection, connections)
    "expiry": (["--idle-timeout", "5"], 100_000, 3, 10),
    "cap": (["--idle-timeout", "300", "--max-conversations", "{cap}"], 60_000, 0, 16),
}
IDLE_TIMEOUT_S = 5
CAP = 15_000
QUICK = 5  # --quick: a fifth of the conversations (and of the cap)


# ---------------------------------------------------------------------------- abuse


def _send(host: str, port: int, payload: bytes | list[bytes], pause: float = 0.0, read: bool = True) -> str:
    """Send raw bytes; the status code of the answer, or 'closed' / 'timeout'."""
    try:
        with socket.create_connection((host, port), timeout=3) as s:
            chunks = payload if isinstance(payload, list) else [payload]
            try:
                for chunk in chunks:
                    s.sendall(chunk)
                    if pause:
                        time.sleep(pause)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server may answer and close before reading it all
            if not read:
                return "sent"
            data = b""
            while b"\r\n" not in data:
                got = s.recv(4096)
                if not got:
                    break
                data += got
            if data.startswith(b"HTTP/1."):
                return data.split(b" ", 2)[1].decode()
            return "closed"
    except socket.timeout:
        return "timeout"
    except (ConnectionResetError, BrokenPipeError):
        return "reset"


def _head(method: str, path: str, extra: str = "", content_length: int | None = None) -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1",
        "Host: 127.0.0.1",
        f"Content-Type: {api.CONTENT_TYPE}",
        f"{api.API_KEY_HEADER}: {api.DUMMY_API_KEY}",
        f"{api.TOKEN_HEADER}: {api.DUMMY_TOKEN}",
    ]
    if content_length is not None:
        lines.append(f"Content-Length: {content_length}")
    if extra:
        lines.append(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def abuse_cases() -> dict[str, tuple[str, callable]]:
    """kind → (expected status, function(host, port) → observed)."""
    create, respond = api.path("create"), api.path("respond")
    big = b'{"conversation_id":"x","message":"' + b"a" * 100_000 + b'"}'
    chunk = b"a" * 8192

    def declared(h, p):  # declares 10 MB, sends 64 KiB of it, then waits for the answer
        return _send(h, p, [_head("POST", create, content_length=10_000_000), b"x" * 65536])

    def actual(h, p):
        return _send(h, p, _head("POST", respond, content_length=len(big)) + big)

    def chunked(h, p):
        body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(13)) + b"0\r\n\r\n"
        return _send(h, p, _head("POST", respond, "Transfer-Encoding: chunked") + body)

    def garbage(h, p):
        return _send(h, p, os.urandom(512).replace(b"\r\n", b"..") + b"\r\n\r\n")

    def header(h, p):
        return _send(h, p, _head("POST", create, "X-Pad: " + "p" * 20_000, content_length=2) + b"{}")

    def cut(h, p):
        return _send(h, p, _head("POST", create, content_length=2)[:40], read=False)

    return {
        "413 declared 10 MB": ("413", declared),
        "413 100 KB body": ("413", actual),
        "413 chunked 104 KB": ("413", chunked),
        "400 garbage bytes": ("400", garbage),
        "431 20 KB header": ("431", header),
        "cut mid-head": ("sent", cut),
    }


class Abuser(threading.Thread):
    def __init__(self, base: str, interval: float = 0.1):
        super().__init__(daemon=True)
        url = urlsplit(base)
        self.host, self.port = url.hostname, url.port
        self.interval = interval
        self.stop = threading.Event()
        self.results: dict[str, Counter] = {}

    def run(self) -> None:
        cases = list(abuse_cases().items())
        i = 0
        while not self.stop.is_set():
            kind, (_expected, fn) = cases[i % len(cases)]
            self.results.setdefault(kind, Counter())[fn(self.host, self.port)] += 1
            i += 1
            self.stop.wait(self.interval)


# ---------------------------------------------------------------------------- one phase


def run_phase(name: str, workdir: Path, quick: bool, mock_cpu: str, wrk_cpu: str) -> dict:
    flags, target, delay_ms, connections = PHASES[name]
    cap = CAP // QUICK if quick else CAP
    target = target // QUICK if quick else target
    flags = [f.format(cap=cap) for f in flags]
    with mock(workdir, mock_cpu, *flags, name=name) as (proc, base):
        mproc = psutil.Process(proc.pid)
        script = workdir / f"soak-{name}.lua"
        script.write_text(
            SOAK_LUA.format(
                headers=WRK_HEADERS_LUA,
                create_path=lua_string(api.path("create")),
                respond_path=lua_string(api.path("respond")),
                close_path=lua_string(api.path("close")),
                create_body=lua_string(json.dumps(api.create_body())),
                p_respond=0.25,
                p_close=0.15,
                delay_ms=delay_ms,
                ring=2000,
            )
        )
        time.sleep(0.5)
        samples: list[tuple[float, int]] = []
        stats: list[tuple[float, dict]] = []
        t0 = time.monotonic()

        def sample(with_stats: bool) -> dict | None:
            now = time.monotonic() - t0
            samples.append((now, mproc.memory_info().rss))
            if with_stats:
                s = mock_stats(base)
                stats.append((now, s))
                return s
            return None

        start_rss = mproc.memory_info().rss
        sample(True)
        abuser = Abuser(base)
        abuser.start()
        wrk = subprocess.Popen(
            pinned(wrk_cpu, ["wrk", "-t1", f"-c{connections}", "-d180s", "--timeout", "5s", "-s", str(script), base + api.path("create")]),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        half_rss = None
        created = 0
        deadline = time.monotonic() + 170
        try:
            i = 0
            while created < target and time.monotonic() < deadline and wrk.poll() is None:
                time.sleep(0.25)
                s = sample(i % 4 == 0)
                i += 1
                if s is not None:
                    created = s["created"]
                    if half_rss is None and created >= target / 2:
                        half_rss = samples[-1][1]
        finally:
            if wrk.poll() is None:
                wrk.send_signal(signal.SIGINT)  # wrk stops and prints its summary
            wrk_out = wrk.communicate(timeout=10)[0]
        drive_s = time.monotonic() - t0
        drive_end = sample(True)
        drive_end_rss = samples[-1][1]
        # Let the abandoned conversations idle out (expiry phase) while the abuse goes on.
        settle = IDLE_TIMEOUT_S + 3 if name == "expiry" else 2
        end = time.monotonic() + settle
        while time.monotonic() < end:
            time.sleep(0.25)
            sample(len(samples) % 4 == 0)
        abuser.stop.set()
        abuser.join(10)
        final = sample(True)
        alive = proc.poll() is None
        peak_rss = max(r for _, r in samples)
        peak_open = max(s["open_conversations"] for _, s in stats)
        expected = {k: v[0] for k, v in abuse_cases().items()}
        abuse_ok = all(set(c) == {expected[k]} for k, c in abuser.results.items())
        bound = IDLE_TIMEOUT_S * created / max(drive_s, 1e-9) * 1.5 + 2000 if name == "expiry" else cap
        flat = half_rss is not None and drive_end_rss - half_rss <= max(0.10 * half_rss, 8 * 2**20)
        return {
            "phase": name,
            "flags": " ".join(flags),
            "target": target,
            "seconds": drive_s,
            "created": final["created"],
            "closed": final["closed"],
            "expired": final["expired"],
            "evicted": final["evicted"],
            "open_end_of_drive": drive_end["open_conversations"],
            "open_final": final["open_conversations"],
            "peak_open": peak_open,
            "open_bound": bound,
            "start_rss": start_rss,
            "half_rss": half_rss or 0,
            "drive_end_rss": drive_end_rss,
            "peak_rss": peak_rss,
            "end_rss": samples[-1][1],
            "statuses": final["statuses"],
            "requests": final["requests"],
            "abuse": {k: dict(c) for k, c in abuser.results.items()},
            "abuse_ok": abuse_ok,
            "alive": alive,
            "flat": flat,
            "open_ok": peak_open <= bound,
            "wrk_tail": "\n".join(wrk_out.strip().splitlines()[-4:]),
            "rss_series": samples,
            "open_series": [(t, s["open_conversations"]) for t, s in stats],
        }


def timeline(r: dict, points: int = 8) -> str:
    series = r["open_series"]
    step = max(len(series) // points, 1)
    rss = dict(r["rss_series"])
    out = []
    for t, o in series[::step] + [series[-1]]:
        out.append(f"{t:5.0f}s {o:>6} open {fmt_bytes(rss.get(t, 0)):>10}")
    return "\n".join("    " + line for line in out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20k + 12k conversations, cap 3000")
    parser.add_argument("--phase", action="append", choices=list(PHASES), help="run only this phase")
    parser.add_argument("--mock-cpu", default="1")
    parser.add_argument("--wrk-cpu", default="0")
    args = parser.parse_args(argv)
    if not shutil.which("wrk"):
        print("wrk not found: apt-get install wrk", file=sys.stderr)
        return 2
    print(machine_info())
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        for name in args.phase or list(PHASES):
            print(f"  phase {name} …", flush=True)
            results.append(run_phase(name, Path(tmp), args.quick, args.mock_cpu, args.wrk_cpu))

    passed = True
    for r in results:
        ok = r["alive"] and r["flat"] and r["open_ok"] and r["abuse_ok"]
        passed &= ok
        print(
            f"\nphase {r['phase']} ({r['flags']}): {r['created']} conversations created in {r['seconds']:.0f} s"
            f" ({r['created'] / r['seconds']:.0f}/s); {r['closed']} closed, {r['expired']} expired,"
            f" {r['evicted']} evicted"
        )
        print(f"  requests {r['requests']}; statuses {r['statuses']}")
        print(f"  open conversations: peak {r['peak_open']} (bound {r['open_bound']:.0f}), end of drive {r['open_end_of_drive']}, final {r['open_final']}")
        print(
            f"  RSS: start {fmt_bytes(r['start_rss'])}, half-way {fmt_bytes(r['half_rss'])},"
            f" end of drive {fmt_bytes(r['drive_end_rss'])}, peak {fmt_bytes(r['peak_rss'])},"
            f" final {fmt_bytes(r['end_rss'])}"
        )
        print("  abuse (observed → count): " + "; ".join(f"{k}: {', '.join(f'{s}×{n}' for s, n in c.items())}" for k, c in r["abuse"].items()))
        print(
            f"  mock alive after the soak: {r['alive']}; RSS flat from half-way: {r['flat']};"
            f" abusive requests refused as expected: {r['abuse_ok']} → {'PASS' if ok else 'FAIL'}"
        )
        print("  timeline (open conversations, RSS):")
        print(timeline(r))
        print("  wrk: " + r["wrk_tail"].replace("\n", " | "))
    print(
        f"\nverdict: {'PASS' if passed else 'FAIL'} — the mock kept memory bounded through "
        f"{sum(r['created'] for r in results)} conversations and survived the abuse"
    )
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
