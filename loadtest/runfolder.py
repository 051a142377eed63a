"""Run folders: `reports/<run-id>/`, the `reports/latest` link, and `run.json`.

A file of the run folder that cannot be written (a full disk, a quota, a read-only mount)
raises `WriteFailed`, whose message names the folder, the file and what to do; whoever
catches it stops the load (nothing more could be recorded) and exits with code 3.
`run.json` is replaced atomically and never leaves its temporary file behind; on a full disk
it is rewritten in place when the new text fits in the space it already holds, so it can
still say `failed`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import platform
import secrets
import socket
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from analysis import records
from loadtest import __version__, config


class WriteFailed(Exception):
    """A file of the run folder could not be written; the message says which and what to do."""

    def __init__(self, path: Path, error: OSError):
        self.path, self.error = Path(path), error
        reason = error.strerror or str(error)
        super().__init__(f"cannot write {self.path.name} in {self.path.parent}: {reason}")

    def to_json(self) -> str:
        """For Locust to tell `loadtest` (a line on its stdout, see progress.WRITE_FAILED_PREFIX)."""
        return json.dumps({"path": str(self.path), "errno": self.error.errno, "strerror": self.error.strerror or str(self.error)})

    @classmethod
    def from_json(cls, text: str) -> "WriteFailed":
        got = json.loads(text)
        return cls(Path(got["path"]), OSError(got["errno"], got["strerror"]))

    @property
    def advice(self) -> str:
        if self.error.errno in (errno.ENOSPC, errno.EDQUOT):
            return f"free some space (or pick another --out), then build the report of what was recorded with: loadtest report {self.path.parent}"
        return f"check the folder is writable, then: loadtest report {self.path.parent}"


def new_run_dir(out: str | Path) -> Path:
    """A fresh, uniquely named run folder under `out`; `out/latest` points to it."""
    out = Path(out)
    run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)
    run_dir = out / run_id
    try:
        out.mkdir(parents=True, exist_ok=True)
        run_dir.mkdir()
    except OSError as e:
        raise WriteFailed(run_dir, e) from None
    point_latest(run_dir)
    return run_dir


def point_latest(run_dir: Path) -> None:
    """Atomically repoint `<out>/latest` at run_dir (a relative symlink)."""
    link = run_dir.parent / "latest"
    tmp = run_dir.parent / f".latest-{os.getpid()}"
    try:
        if tmp.is_symlink():
            tmp.unlink()
        tmp.symlink_to(run_dir.name)
        os.replace(tmp, link)
    except OSError:
        pass  # a filesystem without symlinks: the run folder itself is what matters


def git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def versions() -> dict[str, str]:
    # Not `import locust`: that would gevent-monkey-patch the loadtest parent process.
    return {
        "tool_version": __version__,
        "locust_version": metadata.version("locust"),
        "python_version": platform.python_version(),
        "git_sha": git_sha(),
        "host": socket.gethostname(),
    }


def scenario_config(settings: dict[str, Any]) -> dict[str, Any]:
    """The part of a run's configuration that defines its load: without the settings that only
    say where results go and how they are judged (`config.NOT_SCENARIO`: out, slos, warmup,
    baseline, …), and with the built-in corpus named rather than located, so the same scenario
    run from two checkouts is the same scenario."""
    out = {k: v for k, v in settings.items() if k not in config.NOT_SCENARIO}
    if str(out.get("corpus", "")).replace("\\", "/").endswith("loadtest/data/messages.txt"):
        out["corpus"] = "(built-in)"
    return out


def config_hash(settings: dict[str, Any]) -> str:
    """Same scenario → same hash, so two reports can be seen to share a scenario and a
    baseline can be checked to be comparable (see `baseline_problem`)."""
    text = json.dumps(scenario_config(settings), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def scenario_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """'users 16 → 32' for each scenario setting that differs between two configurations."""
    a, b = scenario_config(a), scenario_config(b)
    return [f"{k} {json.dumps(a.get(k), default=str)} → {json.dumps(b.get(k), default=str)}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def scenario_mismatch(baseline_dir: str | Path, current: dict[str, Any]) -> str | None:
    """'baseline X ran a different scenario (…): users 16 → 32' when the run folder's config
    hash differs from `current`'s (run.json contents) or is not recorded; None when equal."""
    meta = read_run_json(Path(baseline_dir))
    theirs, ours = meta.get("config_hash"), current.get("config_hash")
    if not theirs:
        return f"baseline {baseline_dir} records no config hash in run.json, so it cannot be told to have run the same scenario"
    if theirs == ours:
        return None
    diff = scenario_differences(meta.get("config") or {}, current.get("config") or {})
    what = "; ".join(diff[:8]) + (f"; and {len(diff) - 8} more" if len(diff) > 8 else "") if diff else "run.json does not record which settings differ"
    return f"baseline {baseline_dir} ran a different scenario (config hash {theirs}, this run {ours}): {what}"


def baseline_problem(baseline_dir: str | Path, current: dict[str, Any], any_config: bool = False) -> str | None:
    """Why `baseline_dir` is not a comparable baseline for a run of `current` (run.json
    contents: config_hash and config), or None when it is: it must be a run folder with
    recorded requests and, unless `any_config`, the same config hash. The message says what
    to do."""
    base = Path(baseline_dir)
    if not base.is_dir():
        return f"baseline {base} is not a folder; pass the run folder of an earlier run (e.g. reports/<run-id>)"
    if not any(base.glob(records.REQUESTS_GLOB)):
        return f"baseline {base} holds no {records.REQUESTS_GLOB}; pass the folder of a run that recorded requests"
    mismatch = None if any_config else scenario_mismatch(base, current)
    if mismatch:
        return f"{mismatch}. Compare runs of the same scenario, or pass --baseline-any-config to compare anyway"
    return None


def read_run_json(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((Path(run_dir) / records.RUN_JSON).read_text())
    except (OSError, ValueError):
        return {}


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Replace `path` by the JSON of `data` (temporary file + rename); raises WriteFailed."""
    text = (json.dumps(data, indent=2, default=str) + "\n").encode()
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(text)
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if not _rewrite_in_place(path, text):
            raise WriteFailed(path, e) from None


def _rewrite_in_place(path: Path, text: bytes) -> bool:
    """On a full disk: rewrite the file within the blocks it already holds (no new space)."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError:
        return False
    try:
        if len(text) > os.fstat(fd).st_blocks * 512:
            return False
        if os.pwrite(fd, text, 0) != len(text):
            return False
        os.ftruncate(fd, len(text))
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def update_run_json(run_dir: Path, **fields: Any) -> dict[str, Any]:
    """Merge fields into run.json (created if missing)."""
    data = read_run_json(run_dir)
    data.update(fields)
    data.setdefault("run_id", Path(run_dir).name)
    write_json_atomic(Path(run_dir) / records.RUN_JSON, data)
    return data
