"""Run folders: `reports/<run-id>/`, the `reports/latest` link, and `run.json`."""

from __future__ import annotations

import hashlib
from importlib import metadata
import json
import os
import platform
import secrets
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from loadtest import __version__, records


def new_run_dir(out: str | Path) -> Path:
    """A fresh, uniquely named run folder under `out`; `out/latest` points to it."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)
    run_dir = out / run_id
    run_dir.mkdir()
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
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5, cwd=Path(__file__).parent)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def versions() -> dict[str, str]:
    # Not `import locust`: that would gevent-monkey-patch the loadtest parent process.
    return {"tool_version": __version__, "locust_version": metadata.version("locust"),
            "python_version": platform.python_version(), "git_sha": git_sha(),
            "host": socket.gethostname()}


def config_hash(config: dict[str, Any]) -> str:
    """Same scenario → same hash, so two reports can be seen to share a scenario."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def read_run_json(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((Path(run_dir) / records.RUN_JSON).read_text())
    except (OSError, ValueError):
        return {}


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def update_run_json(run_dir: Path, **fields: Any) -> dict[str, Any]:
    """Merge fields into run.json (created if missing)."""
    data = read_run_json(run_dir)
    data.update(fields)
    data.setdefault("run_id", Path(run_dir).name)
    write_json_atomic(Path(run_dir) / records.RUN_JSON, data)
    return data
