"""`locust -f locustfiles/chat.py` works as is, with settings from locust.conf."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from runs import free_port_block, read_csv

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def test_plain_locust_reads_locust_conf_and_writes_a_run_folder(tmp_path):
    port = free_port_block(4)
    ready = tmp_path / "ready.json"
    mock = subprocess.Popen(
        [sys.executable, "-m", "loadtest", "mock", "--port", str(port), "--latency-scale", "0.2", "--quiet", "--ready-file", str(ready)],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), "the mock did not start"
        base_urls = f"uk=http://127.0.0.1:{port + 1},eu=http://127.0.0.1:{port + 2}"
        (tmp_path / "locust.conf").write_text(
            f"locustfile = {ROOT / 'locustfiles' / 'chat.py'}\nheadless = true\nusers = 4\n"
            f"spawn-rate = 4\nrun-time = 4s\nregions = uk,eu\nvariants = b\nturns = 2\n"
            f"think-time = 0.1\nbase-urls = {base_urls}\nout = {tmp_path / 'reports'}\n"
        )
        proc = subprocess.run([sys.executable, "-m", "locust"], cwd=tmp_path, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, proc.stderr[-2000:]
        run_dir = (tmp_path / "reports" / "latest").resolve()
        rows = read_csv(run_dir / "requests.csv")
        assert {r["region"] for r in rows} == {"uk", "eu"} and {r["variant"] for r in rows} == {"b"}
        assert all(r["ok"] == "1" for r in rows)
        assert "uk · b · respond" in proc.stderr + proc.stdout  # Locust's own stats table
    finally:
        mock.terminate()
        mock.wait(timeout=10)
