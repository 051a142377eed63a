"""Every `loadtest` example of README.md runs as typed (so an example can never rot).

Examples come from the README's `sh` blocks (continuation lines joined) and from inline code
that has arguments. Each one either runs here, offline and in a few seconds — durations and
shapes shortened, the mock faster — or is skipped for a reason stated below. A new example
that fits no rule fails `test_every_example_is_run_or_skipped_for_a_reason`.
"""

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loadtest.config import parse_duration

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

# Why an example is not run here; the first matching rule wins.
SKIPS = (
    ("--target real", "sends load to PolyAI's hosts: needs credentials and a network"),
    ("loadtest ui", "serves the web UI until Ctrl-C (tests/test_webui.py drives it)"),
    ("loadtest capacity", "a search takes minutes by design (tests/test_capacity.py runs short ones)"),
    ("reports/<id>/", "needs a capacity search's output"),
    ("-- --master", "waits for workers on other machines"),
    ("loadtest worker", "connects to a master on another machine (tests/test_ci_runs.py runs workers)"),
    ("--workers ", "waits for `loadtest worker` processes on other machines (tests/test_fleet.py)"),
    ("uk=https://127.0.0.1:9443", ("talks to the TLS mock the example before it serves on a fixed port (tests/test_tls.py checks against a TLS mock)")),
)


# Subcommands (and top-level flags) run here; anything else needs a reason in SKIPS.
RUNNABLE = ("run", "mock", "report", "compare", "locustfile", "--version")


def readme_examples() -> list[str]:
    text = README.read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.DOTALL):
        pending = ""
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line) if not line.lstrip().startswith("#") else ""
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            command = " ".join((pending + line).split())
            pending = ""
            if command.startswith("loadtest ") or " loadtest " in f" {command} ":
                commands.append(command[command.index("loadtest ") :] if "loadtest " in command else command)
    commands.extend(re.findall(r"`(loadtest [a-z]+ -[^`]*)`", text))
    return list(dict.fromkeys(c.rstrip(" &") for c in commands))


def skip_reason(command: str) -> str | None:
    return next((why for needle, why in SKIPS if needle in command), None)


def shorten_shape(spec: str) -> str:
    """Durations of a shape spec scaled down (the longest to ≤ 3 s, minutes to seconds)."""
    name, _, params = spec.partition(":")
    pairs = [p.partition("=") for p in params.split(",")]
    seconds = {k: parse_duration(v) for k, _, v in pairs if re.fullmatch(r"[\d.]+(ms|s|m|h)", v)}
    factor = min(1 / 60, 3 / max(seconds.values())) if seconds else 1
    return name + ":" + ",".join(f"{k}={seconds[k] * factor:.3g}s" if k in seconds else f"{k}={v}" for k, _, v in pairs)


def shortened_run(args: list[str]) -> list[str]:
    """`loadtest run` ARGS, seconds instead of minutes, against a faster mock."""
    locust = args[args.index("--") :] if "--" in args else []
    args = args[: len(args) - len(locust)]
    out = []
    i = 0
    while i < len(args):
        flag = args[i]
        if flag == "--duration":
            out += [flag, "2s"]
            i += 2
            continue
        if flag == "--shape":
            out += [flag, shorten_shape(args[i + 1])]
            i += 2
            continue
        out.append(flag)
        i += 1
    present = set(out)
    if "--shape" not in present and "--duration" not in present:
        out += ["--duration", "2s"]
    for flag, value in (("--think-time", "0.05-0.1"), ("--spawn-rate", "50"), ("--mock-latency-scale", "0.1")):
        if flag not in present:
            out += [flag, value]
    if "--config" in present:
        out += ["--warmup", "0s"]  # the file's warm-up is longer than a shortened run
    return out + locust


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A working directory like a checkout: examples/ and a corpus file of one's own."""
    cwd = tmp_path_factory.mktemp("readme")
    (cwd / "examples").symlink_to(ROOT / "examples")
    (cwd / "my-messages.txt").write_text("Where is my order?\nI want to change my booking\n")
    return cwd


def test_every_example_is_run_or_skipped_for_a_reason():
    examples = readme_examples()
    assert any("control:9,new:1" in e for e in examples)  # the parser finds the examples
    assert len(examples) >= 20, examples
    for command in examples:
        sub = shlex.split(command)[1]
        assert skip_reason(command) or sub in RUNNABLE, f"README example {command!r}: run it here or add a skip reason to SKIPS"


def _runs(cwd: Path, at_least: int = 2) -> list[Path]:
    """Run folders the examples above wrote (made here when those examples were deselected)."""

    def folders():
        reports = cwd / "reports"
        return sorted(p for p in reports.iterdir() if p.is_dir() and not p.is_symlink()) if reports.is_dir() else []

    while len(folders()) < at_least:
        subprocess.run(
            [sys.executable, "-m", "loadtest", "run", "--regions", "uk", "--users", "2", *shortened_run([])],
            cwd=cwd,
            capture_output=True,
            timeout=120,
            check=True,
        )
    return folders()


@pytest.mark.slow
@pytest.mark.parametrize("command", readme_examples())
def test_readme_example_runs_as_typed(command, workspace, tmp_path):
    why = skip_reason(command)
    if why:
        pytest.skip(why)
    args = shlex.split(command)[1:]
    sub = args[0]
    if sub == "mock":
        _run_mock(args, tmp_path, workspace)
        return
    if "--baseline baseline/" in command:  # an earlier run of the same (shortened) scenario
        same = shlex.split(command.split(" --baseline")[0])[2:]
        assert _run(["run", *shortened_run(same)], workspace).returncode in (0, 1)
        command = command.replace("baseline/", f"reports/{(workspace / 'reports' / 'latest').resolve().name}")
        args = shlex.split(command)[1:]
    if sub in ("report", "compare"):
        # A regression gate compares runs of one scenario: two fresh ones.
        runs = _same_scenario_runs(workspace) if "--fail-on-regression" in command else _runs(workspace)
        args = shlex.split(_with_run_folders(command, runs, tmp_path))[1:]
    if sub == "run" and "--help" not in args:
        args = ["run", *shortened_run(args[1:])]
    proc = _run(args, workspace)
    # SLO and regression gates may fail on two-second runs (exit 1); anything else must pass.
    allowed = (0, 1) if "--slo" in args or "--fail-on-regression" in args else (0,)
    assert proc.returncode in allowed, (args, proc.stdout[-2000:], proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr
    if sub == "run" and "--help" not in args:
        assert "Report: " in proc.stdout, proc.stdout[-2000:]


def _same_scenario_runs(cwd: Path) -> list[Path]:
    made = []
    for _ in range(2):
        proc = _run(["run", "--regions", "uk", "--users", "2", *shortened_run([])], cwd)
        assert proc.returncode == 0, proc.stderr[-2000:]
        made.append((cwd / "reports" / "latest").resolve())
    return made


def _with_run_folders(command: str, runs: list[Path], tmp_path: Path) -> str:
    """Placeholders of run folders (reports/<run1>, reports/main-run) → real ones."""
    text = command.replace("[", "").replace("]", "").replace(" ...", "")
    text = re.sub(r"--warmup \S+", "--warmup 0.5s", text)  # the runs above are shortened
    text = text.replace(" FILE", f" {tmp_path / 'out.html'}")
    placeholders = iter(runs)
    return re.sub(r"reports/(<[^>]+>|[a-z]+-run)", lambda m: f"reports/{next(placeholders).name}", text)


def _run(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """`loadtest ARGS` in its own session; on a timeout the whole group is killed (no orphans)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadtest", *args],
        cwd=cwd,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"loadtest {' '.join(args)} did not end within {timeout:g} s: {err[-2000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _run_mock(args: list[str], tmp_path: Path, cwd: Path) -> None:
    """The mock serves until stopped: on free ports, started until ready, then stopped."""
    if "--tls-ca-file" in args:  # not a shared path like /tmp/mock-ca.pem
        args[args.index("--tls-ca-file") + 1] = str(tmp_path / "mock-ca.pem")
    if "--port" in args:
        args[args.index("--port") + 1] = "0"
    else:
        args += ["--port", "0"]
    ready = tmp_path / "ready.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadtest", *args, "--ready-file", str(ready)], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 30
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), proc.communicate(timeout=10)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
