"""Child processes that never outlive `loadtest`: where they are started and where their ends are tied.

Every child process (the mock, Locust and the workers it forks, the web UI's Locust and its
report builder, fleet workers) is started with `spawn()`. It runs in its own session, so a
terminal's Ctrl-C reaches only `loadtest`, which stops its children in order; and its life is
tied to the process that started it, however that process ends, SIGKILL included:

- **The lifeline** (portable): a pipe whose write end only the parent holds. The child
  inherits the read end, named in ``$LOADTEST_LIFELINE``, and so does every process it forks
  (Locust's ``--processes`` workers). When the parent ends, the kernel closes the write end
  and the read end turns readable (end of file) at once. Children that run our code watch it
  (`lifeline_fd()`: the mock's event loop, the Locust plugin) and stop as they would on
  Ctrl-C, quickly, keeping their data.
- **PR_SET_PDEATHSIG** (Linux): the kernel sends the child SIGHUP the moment the thread that
  spawned it ends. A child watching its lifeline treats SIGHUP as the same news; any other
  child (or one stuck before it got that far) dies of it. Hence: spawn from the main thread,
  the one thread that lives as long as the process.

Stopping, in one place: `stop()` asks a child to end (SIGTERM, or SIGINT for Locust, see
`stop_locust()`), kills it after a grace period, then ends whatever is left of its session
(`end_process_group()`: Locust's forked workers). `master_port_args()` gives a Locust with
`--processes` a master port of its own, so two runs on one machine never share workers.

This module is the process layer's bottom half and stays light (standard library only): the
mock and the Locust plugin import it for `lifeline_fd()`. Starting our two kinds of children
(the mock, Locust: command lines, readiness, output) is `loadtest.children`.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

LIFELINE_ENV = "LOADTEST_LIFELINE"  # "<parent pid>:<fd of the read end>"
PARENT_LOST_SIGNAL = signal.SIGHUP
_PR_SET_PDEATHSIG = 1

_lifeline_write_end: int | None = None
_lifeline_read_end: int | None = None
_prctl = None


def _lifeline() -> int:
    """The read end of this process's lifeline (one pipe per process, made on first use)."""
    global _lifeline_read_end, _lifeline_write_end
    if _lifeline_read_end is None:
        # Both ends close on exec; spawn() passes only the read end, so no child ever holds
        # the write end and the pipe reaches end of file exactly when this process ends.
        _lifeline_read_end, _lifeline_write_end = os.pipe()
    return _lifeline_read_end


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    """preexec_fn: SIGHUP when the parent's spawning thread ends (Linux); exit if it already has."""

    def set_death_signal() -> None:
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, int(PARENT_LOST_SIGNAL))
        if os.getppid() != parent_pid:  # the parent died between fork and prctl
            os._exit(1)

    return set_death_signal


def spawn(cmd: list[str], *, env: dict[str, str] | None = None, **popen_kwargs: Any) -> subprocess.Popen:
    """`subprocess.Popen(cmd, ...)` in a new session, its life tied to this process (see above)."""
    global _prctl
    read_end = _lifeline()
    env = dict(os.environ if env is None else env)
    env[LIFELINE_ENV] = f"{os.getpid()}:{read_end}"
    if sys.platform.startswith("linux") and _prctl is None:
        try:  # loaded here, in the parent: the child between fork and exec only calls it
            _prctl = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError):
            _prctl = None
    pass_fds = tuple(popen_kwargs.pop("pass_fds", ())) + (read_end,)
    return subprocess.Popen(cmd, env=env, start_new_session=True, pass_fds=pass_fds, preexec_fn=_die_with_parent(os.getpid()), **popen_kwargs)


def lifeline_fd() -> int | None:
    """In a child started by `spawn()` (or a process it forked): the lifeline's read end, which
    turns readable when the `loadtest` process that started it ends. None otherwise."""
    value = os.environ.get(LIFELINE_ENV, "")
    try:
        fd = int(value.partition(":")[2])
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            return fd
    except (ValueError, OSError):  # not set, or a process that did not inherit the pipe
        pass
    return None


STOP_GRACE_S = 5.0
#: Locust's graceful stop (see `stop_locust`).
LOCUST_STOP_SIGNAL = signal.SIGINT


def stop(proc: subprocess.Popen, grace_s: float = STOP_GRACE_S, sig: int = signal.SIGTERM) -> int:
    """End a child started by `spawn()`: `sig`, then SIGKILL if it is still running after
    `grace_s`; then whatever is left of its session (`end_process_group`). Returns its exit code."""
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        except ProcessLookupError:  # ended between poll and signal
            proc.wait()
    end_process_group(proc.pid, grace_s)
    return proc.returncode


def stop_locust(proc: subprocess.Popen) -> None:
    """Ask Locust to stop gracefully, without waiting: users close their conversations, the
    CSVs are flushed.

    SIGINT, not SIGTERM: during a headless shape run Locust 2.x waits on the shape before it
    installs its SIGTERM handler, so SIGTERM would kill it at once (open conversations left on
    the target, the last second of rows lost), while SIGINT takes its "Ctrl-C" path: stop the
    users within --stop-timeout, fire test_stop, write the stats, exit 0. Inside Locust the
    plugin takes SIGINT as a gevent callback (`Plugin.on_stop_signal`), not as Python's
    KeyboardInterrupt wherever it lands; a Locust already stopping after a failed write of its
    own ignores it.
    """
    if proc.poll() is None:
        proc.send_signal(LOCUST_STOP_SIGNAL)


def end_process_group(pgid: int, grace_s: float = STOP_GRACE_S) -> None:
    """Stop what is left of a child's session (started by `spawn()`, its process group id is
    the child's pid): SIGTERM, then SIGKILL after `grace_s`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except (ProcessLookupError, PermissionError):
                return
            time.sleep(0.1)


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on `host` right now, for a child to listen on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def master_port_args() -> list[str]:
    """Locust options for `--processes`: its master and the workers it forks meet on a free
    port, not Locust's default 5557, which another run on this machine may hold (its workers
    would then join the other run's master)."""
    port = str(free_port())
    return ["--master-bind-port", port, "--master-port", port]
