"""Benchmark: requests/s of our conversation user vs a bare FastHttpUser, one core each.

Both generate against the same mock (one region, latency scale 0, conversations that never
end early), pinned to CPU 1; every Locust run is pinned to CPU 0 (`taskset`), with the same
users, duration and conversation shape (create → respond × TURNS → close, no think time):

  ours   loadtest/inlocust/locustfile.py exactly as `loadtest run` starts it (children.locust_command:
         requests.csv/conversations.csv recorder, reply validation, live stats, progress
         lines, Locust's --csv-full-history)
  bare   benchmarks/bare_locustfile.py: the same three calls, nothing else

Runs come in pairs, ours/bare then bare/ours, …; req/s is read from Locust's own stats
CSV (Aggregated "Requests/s", its last once-a-second snapshot) for both. The verdict is the
median over pairs of ours/bare (adjacent runs see similar contention from other processes);
the medians of each side are shown too. Target: ≥ 0.95. As a cross-check that other load on
the machine moves much less, a sampler reads the Locust process's CPU time and the mock's
request counter every 0.5 s: requests per CPU-second over the steady part of each run.

On a machine other work shares, --together is the measurement to trust: the kinds of a
round run at the same time on the Locust core, each against its own mock, so that what else
runs slows them alike (one after the other, per-pair ratios swing 0.5–1.9 under load).

    python benchmarks/bench_generator.py              # 6 pairs, 50 users, 10 s each (~2.5 min)
    python benchmarks/bench_generator.py --quick      # 2 pairs × 6 s
    python benchmarks/bench_generator.py --together --pairs 8 --old ../main   # + the previous code, at once
    python benchmarks/bench_generator.py --breakdown  # + CPU µs per request of each part of our code
    python benchmarks/bench_generator.py --profile 2 --duration 30 --old ../main   # py-spy, per stage
"""

from __future__ import annotations

import argparse
import contextlib
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

from common import (
    ROOT,
    child_env,
    locust_aggregated,
    machine_info,
    median,
    mock,  # noqa: E402
    mock_stats,
    pinned,
)
from loadtest import config  # noqa: E402
from loadtest import children  # noqa: E402

BARE = Path(__file__).resolve().parent / "bare_locustfile.py"
TARGET = 0.95  # issue 13: ≥ 0.95× a bare FastHttpUser


def ours_command(base: str, run_dir: Path, users: int, seconds: int, turns: int, extra: dict | None = None) -> list[str]:
    # per-user connections: the bare user keeps its connection too (like for like)
    scenario = config.resolve(
        flags={
            "regions": "uk",
            "base_urls": f"uk={base}",
            "variants": "",
            "turns": str(turns),
            "think_time": "0",
            "users": str(users),
            "spawn_rate": str(users),
            "duration": str(seconds),
            "stop_timeout": "5s",
            "connections": "per-user",
            **(extra or {}),
        },
        environ={},
    )
    return children.locust_command(scenario, {"uk": base}, run_dir=run_dir)


def bare_command(base: str, run_dir: Path, users: int, seconds: int) -> list[str]:
    return [
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
        "--csv",
        str(run_dir / "locust"),
        "--only-summary",
        "--exit-code-on-error",
        "0",
        "--loglevel",
        "WARNING",
    ]


def api_requests(base: str) -> int:
    """The mock's count of create, respond and close requests (not its /_mock/stats)."""
    requests = mock_stats(base)["requests"]
    return requests["create"] + requests["respond"] + requests["close"]


class Sampler(threading.Thread):
    """Every 0.5 s: the Locust process's CPU seconds and the mock's count of API requests.

    Over the steady part of a run this gives requests per CPU-second of the generator, which
    other processes competing for the core change much less than requests per second."""

    def __init__(self, pid: int, base: str, interval: float = 0.5):
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.base = base
        self.interval = interval
        self.stop = threading.Event()
        self.samples: list[tuple[float, float, int]] = []  # (wall, cpu s, requests)

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                cpu = self.proc.cpu_times()
                requests = api_requests(self.base)
            except (psutil.Error, OSError):
                return
            self.samples.append((time.monotonic(), cpu.user + cpu.system, requests))

    def steady(self) -> dict:
        """Rates between the 3rd sample with traffic and the last but one (ramp and stop cut off)."""
        busy = [i for i in range(1, len(self.samples)) if self.samples[i][2] > self.samples[i - 1][2]]
        if len(busy) < 5:
            return {"cpu_util": float("nan"), "req_per_cpu_s": float("nan"), "mock_rps": float("nan")}
        (t0, c0, r0), (t1, c1, r1) = self.samples[busy[2]], self.samples[busy[-2]]
        return {"cpu_util": (c1 - c0) / (t1 - t0), "req_per_cpu_s": (r1 - r0) / max(c1 - c0, 1e-9), "mock_rps": (r1 - r0) / (t1 - t0)}


def old_command(checkout: Path, base: str, run_dir: Path, users: int, seconds: int, turns: int) -> list[str]:
    """Ours as another checkout of the repository has it (`--old`): its locustfile, same flags."""
    cmd = ours_command(base, run_dir, users, seconds, turns)
    locustfile = cmd.index("-f") + 1
    cmd[locustfile] = str(checkout / Path(cmd[locustfile]).relative_to(ROOT))
    return cmd


def start_run(kind: str, base: str, run_dir: Path, users: int, seconds: int, turns: int, cpu: str, extra: dict | None = None, old: Path | None = None) -> dict:
    """Start one Locust run; `kind` "bare" is the bare user, "old" ours from the `old`
    checkout, anything else ours with `extra` settings. `finish_run` waits for it."""
    run_dir.mkdir(parents=True)
    cmd = (
        bare_command(base, run_dir, users, seconds)
        if kind == "bare"
        else old_command(old, base, run_dir, users, seconds, turns)
        if kind == "old"
        else ours_command(base, run_dir, users, seconds, turns, extra)
    )
    env = child_env()
    if kind == "old":
        env["PYTHONPATH"] = str(old)
    env["BARE_TURNS"] = str(turns)
    log = open(run_dir / "stdout.log", "w")
    # cwd: `python -m` puts it first on sys.path, so "old" must run in its own checkout
    proc = subprocess.Popen(pinned(cpu, cmd), env=env, cwd=old if kind == "old" else ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    sampler = Sampler(proc.pid, base)  # taskset execs Locust: same pid
    sampler.start()
    return {"kind": kind, "run_dir": run_dir, "seconds": seconds, "proc": proc, "sampler": sampler, "log": log, "started": time.monotonic()}


def finish_run(run: dict) -> dict:
    kind, run_dir, proc, sampler = run["kind"], run["run_dir"], run["proc"], run["sampler"]
    try:
        rc = proc.wait(timeout=run["seconds"] + 60)
    finally:
        sampler.stop.set()
        sampler.join()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        run["log"].close()
    if rc != 0:
        raise SystemExit(f"{kind} run failed (exit {rc}); see {run_dir / 'stdout.log'}")
    agg = locust_aggregated(run_dir / "locust")
    row = {
        "kind": kind,
        "rps": float(agg["Requests/s"]),
        "requests": int(agg["Request Count"]),
        "failures": int(agg["Failure Count"]),
        "median_ms": agg["Median Response Time"],
        "wall_s": time.monotonic() - run["started"],
        **sampler.steady(),
    }
    requests_csv = run_dir / "requests.csv"
    if kind != "bare":
        row["csv_rows"] = sum(1 for _ in open(requests_csv)) - 1 if requests_csv.exists() else 0
    return row


def run_once(kind: str, base: str, run_dir: Path, users: int, seconds: int, turns: int, cpu: str, extra: dict | None = None, old: Path | None = None) -> dict:
    """One Locust run on its own (see `start_run`)."""
    return finish_run(start_run(kind, base, run_dir, users, seconds, turns, cpu, extra, old))


BREAKDOWN_DOC = """Per-request CPU of our user's own code, in-process, without HTTP.

The conversation runs through loadtest/inlocust/chat.py's code path (ChatClient/Conversation)
with a fake `client.request` that answers like the mock at once; the request listener is
called the way Locust's ResponseContextManager calls it. Each line is CPU µs per request
(time.process_time, best of 5 repeats, so other processes on the core barely matter),
for the mix create → respond × TURNS → close."""


def breakdown_child(turns: int, conversations: int = 4000) -> None:
    """Runs in its own process (importing locust monkey-patches the standard library)."""
    import gc
    import types

    import locust  # noqa: F401  - the monkey-patching, as in a real run

    from loadtest import api, config
    from loadtest.inlocust import chat, plugin, recorder, transport
    from loadtest.inlocust.live import LiveStats

    values = {s.name: s.default for s in config.SETTINGS if s.locust}
    values.update(
        regions="uk", base_urls="uk=http://127.0.0.1:1", variants="", turns=str(turns), think_time="0", target="mock", yes="false", connections="per-user"
    )
    options = types.SimpleNamespace(**values)
    tmp = Path(tempfile.mkdtemp(prefix="bench-generator-breakdown-"))
    live = LiveStats()
    rec = recorder.Recorder.in_folder(tmp, "local")
    run = plugin.RunContext(options, tmp, rec, live)
    plug = plugin.Plugin()
    plug.run = run
    plug.environment = types.SimpleNamespace(runner=object())
    listeners: list = []

    cid = "uk-" + "0" * 24
    replies = {
        "create": json.dumps({"conversation_id": cid, "response": "Hello, thanks for contacting Acme. How can I help?"}).encode(),
        "respond": json.dumps(
            {"conversation_id": cid, "response": "Sure, I can help with that. Could you give me your order number?", "end_conversation": False}
        ).encode(),
        "close": b'{"success":true}',
    }

    class Response:
        status_code = 200
        error = None

        def __init__(self, content):
            self.content = content

    def exchange(session, method, url, where, body, headers):  # transport.exchange, no socket
        content = replies[url.rsplit("/", 1)[1]]
        return transport.Sent(Response(content), 200, content, None, time.time(), 0.8, len(content))

    def report(session, sent, method, name, url, context, exception):  # transport.report: the listeners
        for fire in listeners:
            fire(
                request_type=method,
                name=name,
                context=context,
                response=sent.response,
                exception=exception,
                start_time=sent.start_time,
                url=url,
                response_length=sent.response_length,
                response_time=sent.response_time,
            )

    transport.exchange, transport.report = exchange, report

    class BareClient:
        def post(self, path, data=None, headers=None, name=None):
            return Response(replies[path.rsplit("/", 1)[1]])

        put = post

    user = types.SimpleNamespace(client=None, _state="running", context=lambda: {"user": 1})
    client = chat.ChatClient(user, run)
    bare = types.SimpleNamespace(client=BareClient())
    paths = {e: api.path(e) for e in api.ENDPOINTS}
    headers = api.headers(api.DUMMY_API_KEY, api.DUMMY_TOKEN)
    message = "I'd like to change my booking please"
    requests = conversations * (turns + 2)

    def ours():
        for _ in range(conversations):
            with client.conversation() as conversation:
                for m in conversation.turns():
                    client.think()
                    conversation.respond(m)

    def bare_task():  # benchmarks/bare_locustfile.py's task, same fake transport
        for _ in range(conversations):
            r = bare.client.post(paths["create"], data=json.dumps(api.create_body(None)), headers=headers, name="create")
            c = json.loads(r.content)["conversation_id"]
            for _ in range(turns):
                bare.client.post(paths["respond"], data=json.dumps(api.respond_body(c, message)), headers=headers, name="respond")
            bare.client.put(paths["close"], data=json.dumps(api.close_body(c)), headers=headers, name="close")

    def timed(fn) -> float:
        best = float("inf")
        for _ in range(5):
            gc.collect()
            t = time.process_time()
            fn()
            best = min(best, time.process_time() - t)
        return best / requests * 1e6

    def with_listeners(fns, think=True):
        def go():
            listeners[:] = fns
            saved = chat.ChatClient.think
            if not think:
                chat.ChatClient.think = lambda self: None
            try:
                ours()
            finally:
                chat.ChatClient.think = saved

        return go

    def sample_meta():
        response = Response(replies["respond"])
        return {
            "request_type": "POST",
            "name": "uk · respond",
            "response_time": 0.8,
            "response_length": 120,
            "response": response,
            "context": {"user": 1, "region": "uk", "variant": "", "endpoint": "respond", "conversation_id": cid, "turn": 2, "error_kind": ""},
            "exception": None,
            "start_time": time.time(),
            "url": "http://127.0.0.1:1" + paths["respond"],
        }

    def per_call(fn, n=20000) -> float:
        meta = sample_meta()
        best = float("inf")
        for _ in range(5):
            t = time.process_time()
            for _ in range(n):
                fn(**meta)
            best = min(best, time.process_time() - t)
        return best / n * 1e6

    def loop(fn, n=20000) -> float:
        best = float("inf")
        for _ in range(5):
            t = time.process_time()
            for _ in range(n):
                fn()
            best = min(best, time.process_time() - t)
        return best / n * 1e6

    rows = []
    bare_us = timed(bare_task)
    user_us = timed(with_listeners([], think=False))
    rows.append(("bare task code (json.dumps bodies, json.loads create)", bare_us))
    rows.append(("our user code: Conversation/ChatClient, context, validation", user_us))
    reply = json.loads(replies["respond"])
    rows.append(("  of which json.loads + api.parse_reply (respond)", loop(lambda: api.parse_reply("respond", json.loads(replies["respond"])))))
    rows.append(("  of which api.parse_reply alone (respond)", loop(lambda: api.parse_reply("respond", reply))))
    rows.append(("think(): gevent.sleep(0) before each respond, per request", timed(with_listeners([], think=True)) - user_us))
    rows.append(("request listener Plugin.on_request (all of it)", per_call(plug.on_request)))
    rows.append(("  Recorder.on_request (csv row)", per_call(rec.on_request)))

    def add_and_fold(n=4096):
        now = time.time()
        for i in range(n):
            live.add_request("uk", "", "respond", 0.8 + (i % 50) / 10, True, now)
        live.fold()  # samples are folded in bulk: their share counts too

    rows.append(("  LiveStats.add_request + its share of fold()", loop(add_and_fold, 20) / 4096))
    # periodic work, per request at 4000 req/s (the live window full: 10 s of samples)
    for _ in range(40000):
        live.add_request("uk", "", "respond", 0.8, True, time.time())
    snap = loop(live.snapshot, 20)
    rows.append((f"progress line every 2 s (LiveStats.snapshot {snap / 1000:.1f} ms), per request at 4k req/s", snap / 2 / 4000))
    rows.append(("gc: tracked objects at start (bare ~55k; ours imports numpy+pandas)", float(len(gc.get_objects()))))
    full_think = timed(with_listeners([plug.on_request], think=True))
    rows.append(("our user code + think + listener, end to end", full_think))
    rec.close()
    shutil.rmtree(tmp, ignore_errors=True)
    print("BREAKDOWN " + json.dumps(rows))


def breakdown(cpu: str, turns: int) -> list[tuple[str, float]]:
    out = subprocess.run(
        pinned(cpu, [sys.executable, __file__, "--breakdown-child", "--turns", str(turns)]),
        env=child_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    line = next((text for text in out.stdout.splitlines() if text.startswith("BREAKDOWN ")), None)
    if line is None:
        raise SystemExit(f"breakdown failed:\n{out.stdout}\n{out.stderr}")
    return json.loads(line[len("BREAKDOWN ") :])


def print_breakdown(rows, bare_cpu_us: float | None) -> None:
    print("\n" + BREAKDOWN_DOC)
    for name, us in rows:
        if name.startswith("gc:"):
            print(f"  {name:<84} {us:>8.0f}")
        else:
            print(f"  {name:<84} {us:>8.2f} µs")
    extra = dict(rows)["our user code + think + listener, end to end"] - dict(rows)["bare task code (json.dumps bodies, json.loads create)"]
    print(f"  our code's extra per request over the bare task: {extra:.1f} µs")
    if bare_cpu_us:
        print(
            f"  against the bare generator's {bare_cpu_us:.0f} µs CPU per request (measured above) that alone"
            f" predicts {bare_cpu_us / (bare_cpu_us + extra):.2f}× its req/s"
        )


# ---------------------------------------------------------------------------- --profile

PROFILE_DOC = """CPU µs per request of each stage, sampled in the real generator process (py-spy).

The kinds run at the same time on the Locust core (as --together); py-spy samples each
Locust process at PROFILE_RATE Hz without pausing it, idle samples (the hub waiting for
sockets) excluded. C code (orjson, geventhttpclient's parser, garbage collection) counts in
the Python function that called it.
Each sample is charged to the innermost stage on its stack (a stage's own calls into
Locust, e.g. Locust's request inside our _send, count as Locust's); µs per request =
a stage's share of the samples × the process's CPU seconds / the requests the mock counted."""

PROFILE_RATE = 200

# (stage, predicate on one frame "function (path:line)"), tried innermost frame first; the
# first frame any predicate claims decides the sample's stage.
STAGES: list[tuple[str, object]] = [
    (
        "recorder: requests.csv row format + write",
        lambda f: "inlocust/recorder.py" in f and f.startswith(("Recorder.on_request ", "Recorder.row ")) or "rowfile.py" in f and "write " in f,
    ),
    ("recorder: flush to disk (once a second)", lambda f: "rowfile.py" in f or "_flush_forever" in f),
    ("recorder: conversations.csv row", lambda f: "inlocust/recorder.py" in f),
    ("live stats add", lambda f: "inlocust/live.py" in f and ("add_request" in f or "add_conversation" in f or f.startswith("bucket "))),
    ("live snapshot + progress line (every 2 s)", lambda f: "inlocust/live.py" in f or "_print_progress" in f),
    ("request event hook (plugin dispatch)", lambda f: "inlocust/plugin.py" in f and "on_request" in f),
    ("reply parsing/validation (orjson + parse_reply)", lambda f: "loadtest/api.py" in f and "parse_reply" in f or "_require" in f or "_judge" in f),
    ("rate limiter", lambda f: "RateLimiter" in f),
    ("name/URL lookups", lambda f: "inlocust/chat.py" in f and f.startswith(("RunContext.request_line ", "RunContext.call_line "))),
    ("our transport: send, read, fire the request event (transport.py)", lambda f: "inlocust/transport.py" in f),
    (
        "our user: context, bodies, conversation logic",
        lambda f: "inlocust/chat.py" in f or "inlocust/locustfile.py" in f or "loadtest/api.py" in f or "bare_locustfile.py" in f,
    ),
    ("Locust's own stats (both pay)", lambda f: "locust/stats.py" in f),
    ("Locust event dispatch (both pay)", lambda f: "locust/event.py" in f),
    ("Locust FastHttpSession.request + response (both pay)", lambda f: "locust/contrib/fasthttp.py" in f),
    ("geventhttpclient: HTTP (both pay)", lambda f: "geventhttpclient" in f),
    ("gevent: sockets, hub, greenlet switches (both pay)", lambda f: "gevent/" in f or "greenlet" in f),
    ("Locust task/user scheduling (both pay)", lambda f: "locust/user/" in f),
    ("Locust other (runner, CSV writer; both pay)", lambda f: "/locust/" in f),
]


def stage_of(stack: str) -> str:
    frames = stack.split(";")
    for frame in reversed(frames):  # innermost first
        for name, claims in STAGES:
            if claims(frame):
                return name
    return "other (interpreter, stdlib)"


def classify(raw: Path) -> dict[str, int]:
    """py-spy's raw (collapsed) output → samples per stage."""
    counts: dict[str, int] = {}
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if stack:
            stage = stage_of(stack)
            counts[stage] = counts.get(stage, 0) + int(n)
    return counts


def profile_round(
    kinds: list[str], bases: dict[str, str], work: Path, users: int, seconds: int, turns: int, cpu: str, spy_cpu: str, old: Path | None = None
) -> list[dict]:
    """The kinds run at the same time on `cpu` (as --together), each sampled by py-spy:
    requests, CPU seconds and samples per stage of each over the same seconds."""
    if not shutil.which("py-spy"):
        raise SystemExit("--profile needs py-spy (pip install py-spy)")

    def served() -> dict[str, int]:
        return {kind: api_requests(bases[kind]) for kind in kinds}

    before = served()
    runs = [start_run(kind, bases[kind], work / kind, users, seconds, turns, cpu, old=old) for kind in kinds]
    started = time.monotonic()
    while time.monotonic() < started + seconds and not all(n > before[k] for k, n in served().items()):
        time.sleep(0.2)
    time.sleep(2.0)  # imports, test start and spawning are not per-request work: sample once traffic flows
    sample_s = int(started + seconds - time.monotonic() - 3)  # and stop before the first run ends
    if sample_s < 3:
        raise SystemExit(f"--profile: traffic started too late for {seconds} s runs; give a longer --duration")
    spies = []
    for run in runs:
        raw = run["run_dir"] / "pyspy.txt"
        spy = subprocess.Popen(
            pinned(
                spy_cpu,
                [
                    "py-spy",
                    "record",
                    "--pid",
                    str(run["proc"].pid),
                    "--nonblocking",
                    "--rate",
                    str(PROFILE_RATE),
                    "--format",
                    "raw",
                    "--duration",
                    str(sample_s),
                    "--output",
                    str(raw),
                ],
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        process = psutil.Process(run["proc"].pid)
        spies.append((run, spy, raw, process, process.cpu_times(), api_requests(bases[run["kind"]])))
    out = []
    for run, spy, raw, process, t0, r0 in spies:
        spy.wait(timeout=seconds + 60)
        t1, r1 = process.cpu_times(), api_requests(bases[run["kind"]])
        out.append({"kind": run["kind"], "requests": r1 - r0, "cpu_s": (t1.user + t1.system) - (t0.user + t0.system), "stages": classify(raw)})
    for run in runs:
        finish_run(run)
    return out


def print_profile(runs: list[dict]) -> None:
    print("\n" + PROFILE_DOC)
    by_kind: dict[str, list[dict]] = {}
    for r in runs:
        by_kind.setdefault(r["kind"], []).append(r)
    us: dict[str, dict[str, float]] = {}
    for kind, rs in by_kind.items():
        total_samples = {s: sum(r["stages"].get(s, 0) for r in rs) for s in {s for r in rs for s in r["stages"]}}
        n = sum(total_samples.values())
        cpu_us = sum(r["cpu_s"] for r in rs) / max(sum(r["requests"] for r in rs), 1) * 1e6
        us[kind] = {s: c / n * cpu_us for s, c in total_samples.items()}
        us[kind]["TOTAL CPU per request"] = cpu_us
        print(f"  {kind}: {sum(r['requests'] for r in rs)} requests, {sum(r['cpu_s'] for r in rs):.1f} CPU s, {n} samples")
    stages = [name for name, _ in STAGES] + ["other (interpreter, stdlib)", "TOTAL CPU per request"]
    kinds = [k for k in ("old", "ours", "bare") if k in us]
    print(f"  {'stage':<56} " + " ".join(f"{k + ' µs':>8}" for k in kinds) + f" {'ours-bare':>9}")
    for s in stages:
        values = [us[k].get(s, 0.0) for k in kinds]
        if any(values):
            print(f"  {s:<56} " + " ".join(f"{v:>8.1f}" for v in values) + f" {us['ours'].get(s, 0.0) - us['bare'].get(s, 0.0):>+9.1f}")
    print("PROFILE " + json.dumps(us))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 pairs of 6 s runs")
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--duration", type=int, help="seconds per run (default 10; quick 6)")
    parser.add_argument("--pairs", type=int, help="ours/bare pairs (default 6; quick 2)")
    parser.add_argument("--turns", type=int, default=3, help="respond turns per conversation (default 3)")
    parser.add_argument("--locust-cpu", default="0")
    parser.add_argument("--mock-cpu", default="1")
    parser.add_argument("--keep", metavar="DIR", help="keep run folders here instead of a temp dir")
    parser.add_argument("--breakdown", action="store_true", help="also time our user's own code per request, in-process (no HTTP)")
    parser.add_argument("--breakdown-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--old",
        type=Path,
        metavar="CHECKOUT",
        help="also run ours from another checkout of the repository (e.g. `git worktree add /tmp/old main`), interleaved: before/after side by side",
    )
    parser.add_argument(
        "--together",
        action="store_true",
        help="run the kinds of a round at the same time on the Locust core (each its own mock), so that they see the same contention: compare req/CPU-s",
    )
    parser.add_argument(
        "--profile", type=int, metavar="PAIRS", default=0, help="instead: PAIRS interleaved ours/bare runs under py-spy, CPU µs per request of each stage"
    )
    args = parser.parse_args(argv)
    if args.breakdown_child:
        breakdown_child(args.turns)
        return 0
    seconds = args.duration or (6 if args.quick else 10)
    pairs = args.pairs or (2 if args.quick else 6)

    print(machine_info())
    if args.profile:
        kinds = ["ours", "bare"] + (["old"] if args.old else [])
        with tempfile.TemporaryDirectory(prefix="bench-generator-profile-") as tmp, contextlib.ExitStack() as mocks:
            work = Path(args.keep) if args.keep else Path(tmp)
            work.mkdir(parents=True, exist_ok=True)
            bases = {kind: mocks.enter_context(mock(work, args.mock_cpu, name=f"mock-{kind}"))[1] for kind in kinds}
            runs = [
                run
                for i in range(args.profile)
                for run in profile_round(kinds, bases, work / f"p{i}", args.users, seconds, args.turns, args.locust_cpu, args.mock_cpu, args.old)
            ]
        print_profile(runs)
        return 0
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-generator-") as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        kinds = ["ours", "bare"] + (["old"] if args.old else [])
        with contextlib.ExitStack() as mocks:
            # --together: one mock per kind (the mock counts each side's requests apart)
            bases = {kind: mocks.enter_context(mock(work, args.mock_cpu, name=f"mock-{kind}"))[1] for kind in (kinds if args.together else kinds[:1])}
            for i in range(pairs):
                order = kinds[i % len(kinds) :] + kinds[: i % len(kinds)]  # rotated: each kind leads in turn
                if args.together:  # all kinds at once on the same core: the same contention for each
                    started = [
                        start_run(kind, bases[kind], work / f"{i}-{kind}", args.users, seconds, args.turns, args.locust_cpu, old=args.old) for kind in order
                    ]
                    done = [finish_run(run) for run in started]
                else:
                    done = [
                        run_once(kind, bases["ours"], work / f"{i}-{kind}", args.users, seconds, args.turns, args.locust_cpu, old=args.old) for kind in order
                    ]
                for row in sorted(done, key=lambda r: kinds.index(r["kind"])):
                    row["rep"] = i
                    rows.append(row)
                    print(
                        f"  pair {i} {row['kind']:<4} {row['rps']:>6.0f} req/s, {row['req_per_cpu_s']:>6.0f} req/CPU-s, CPU {row['cpu_util']:.2f}", flush=True
                    )

    def pick(kind: str, key: str) -> list[float]:
        return [r[key] for r in rows if r["kind"] == kind]

    pair_ratio = [o["rps"] / b["rps"] for o, b in zip((r for r in rows if r["kind"] == "ours"), (r for r in rows if r["kind"] == "bare"))]
    cpu_ratio = [o["req_per_cpu_s"] / b["req_per_cpu_s"] for o, b in zip((r for r in rows if r["kind"] == "ours"), (r for r in rows if r["kind"] == "bare"))]
    print(
        f"\nLocust on CPU {args.locust_cpu}, mock on CPU {args.mock_cpu}; {args.users} users, {seconds} s"
        f" per run, create → respond × {args.turns} → close, think time 0; {pairs} pairs, order alternating"
    )
    print(
        "req/s: Locust's stats CSV, Aggregated Requests/s. req/CPU-s, CPU: requests the mock counted per"
        " CPU-second of the Locust process, and its CPU use, over the steady part of the run."
    )
    print(f"{'pair':>4} {'kind':<5} {'req/s':>7} {'req/CPU-s':>9} {'CPU':>5} {'requests':>9} {'failures':>8} {'median ms':>9} {'csv rows':>9}")
    for r in rows:
        print(
            f"{r['rep']:>4} {r['kind']:<5} {r['rps']:>7.0f} {r['req_per_cpu_s']:>9.0f} {r['cpu_util']:>5.2f}"
            f" {r['requests']:>9} {r['failures']:>8} {r['median_ms']:>9} {r.get('csv_rows', '-'):>9}"
        )
    if args.old:

        def ratios(kind: str, key: str) -> list[float]:
            return [o[key] / b[key] for o, b in zip((r for r in rows if r["kind"] == kind), (r for r in rows if r["kind"] == "bare"))]

        for key, label in (("rps", "req/s"), ("req_per_cpu_s", "req/CPU-s")):
            new_r, old_r = ratios("ours", key), ratios("old", key)
            print(
                f"{label} per round, vs bare: ours {', '.join(f'{x:.2f}' for x in new_r)} → median"
                f" {median(new_r):.2f}; old {', '.join(f'{x:.2f}' for x in old_r)} → median {median(old_r):.2f}"
            )
    ours, bare = median(pick("ours", "rps")), median(pick("bare", "rps"))
    print(f"median req/s: ours {ours:.0f}, bare {bare:.0f} → {ours / bare:.2f}")
    print(f"per-pair ratios of req/s: {', '.join(f'{x:.2f}' for x in pair_ratio)} → median {median(pair_ratio):.2f}")
    print(
        f"per-pair ratios of req/CPU-s: {', '.join(f'{x:.2f}' for x in cpu_ratio)} → median {median(cpu_ratio):.2f}"
        f" (ours {median(pick('ours', 'req_per_cpu_s')):.0f}, bare {median(pick('bare', 'req_per_cpu_s')):.0f})"
    )
    ratio = median(pair_ratio)
    verdict = "PASS" if ratio >= TARGET else "FAIL"
    print(
        f"verdict: {verdict} — our user generates {ratio:.2f}× the bare FastHttpUser's req/s (median of"
        f" {pairs} interleaved pairs; target ≥ {TARGET}); per CPU-second {median(cpu_ratio):.2f}×"
    )
    if args.breakdown:
        print_breakdown(breakdown(args.locust_cpu, args.turns), 1e6 / median(pick("bare", "req_per_cpu_s")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
