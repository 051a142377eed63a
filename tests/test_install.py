"""The tool as a new user installs it: `pip install .` (not editable) into a fresh virtualenv,
then used from a directory that has nothing to do with the checkout."""

import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from runs import read_csv, run_json

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _clean_env() -> dict[str, str]:
    """No PYTHONPATH pointing at a checkout: the venv's own copy must be what runs."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def _build_flags() -> list[str]:
    """Build with the installed setuptools when it can (fast, offline); otherwise pip builds in
    an isolated environment with the setuptools pyproject.toml asks for (from the index)."""
    try:
        ready = int(metadata.version("setuptools").split(".")[0]) >= 68 and bool(metadata.version("wheel"))
    except metadata.PackageNotFoundError:
        ready = False
    return ["--no-build-isolation"] if ready else []


def test_a_non_editable_install_runs_from_an_unrelated_directory(tmp_path):
    src = tmp_path / "src"  # a copy, so that building leaves nothing in the checkout
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", "reports", "tests", "benchmarks", "docs", "__pycache__", "*.egg-info", "build", "dist"))
    venv = tmp_path / "venv"
    # --system-site-packages: the dependencies are already installed (fast, offline).
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    py, loadtest = venv / "bin" / "python", venv / "bin" / "loadtest"
    env = _clean_env()
    install = subprocess.run(
        [str(py), "-m", "pip", "install", "--no-deps", *_build_flags(), "-q", str(src)], capture_output=True, text=True, env=env, timeout=300
    )
    assert install.returncode == 0, install.stderr[-3000:]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run(
        [str(py), "-c", "import loadtest; print(loadtest.__file__)"], cwd=elsewhere, capture_output=True, text=True, env=env, check=True
    ).stdout.strip()
    assert where.startswith(str(venv)), f"loadtest imported from {where}, not the venv"
    version = subprocess.run([str(loadtest), "--version"], cwd=elsewhere, capture_output=True, text=True, env=env)
    assert version.returncode == 0 and version.stdout.startswith("polyai-loadtest 0.1.0 (Locust 2.")
    assert f"Python {sys.version.split()[0]}" in version.stdout
    locustfile = subprocess.run([str(loadtest), "locustfile"], cwd=elsewhere, capture_output=True, text=True, env=env).stdout.strip()
    assert locustfile.startswith(str(venv)) and Path(locustfile).is_file()

    run = subprocess.run(
        [
            str(loadtest),
            "run",
            "--duration",
            "4s",
            "--users",
            "3",
            "--regions",
            "uk",
            "--think-time",
            "0.05-0.1",
            "--spawn-rate",
            "20",
            "--mock-latency-scale",
            "0.2",
            "--out",
            "reports",
        ],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    run_dir = (elsewhere / "reports" / "latest").resolve()
    rows = read_csv(run_dir / "requests.csv")
    assert len(rows) > 10 and {r["region"] for r in rows} == {"uk"} and all(r["ok"] == "1" for r in rows)
    assert (run_dir / "report.html").stat().st_size > 10_000
    assert run_json(run_dir)["status"] == "completed"
    assert locustfile in (run_dir / "locust.log").read_text() or "Report:" in run.stdout
