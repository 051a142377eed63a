"""The record is true: what a run writes matches what happened (issue 9).

Hidden retries, the configuration in run.json, conversation success, exit codes of
interrupted runs, the open model's schedule, and input refused before anything starts.
"""

from collections import Counter

import pytest

from loadtest.mock import MockConfig, MockServer
from runs import FAST, loadtest, read_csv, read_rows, run_json


@pytest.mark.slow
@pytest.mark.parametrize("endpoint", ["close", "respond"])
def test_a_reset_is_one_connection_row_per_request_the_server_received(tmp_path, endpoint):
    """geventhttpclient resends a PUT (close) on a reset connection below Locust: each try
    must be a row, so the rows equal the requests the mock counted, resets included."""
    config = MockConfig(latency_scale=0.1, faults=(f"{endpoint}:reset:0.5",))
    with MockServer(config, regions=["uk"]) as mock:
        proc = loadtest("run", "--regions", "uk", "--base-urls", f"uk={mock.base_urls['uk']}",
                        "--variants", "", "--duration", "5s", "--users", "6", *FAST,
                        "--turns", "1-2", "--out", str(tmp_path))
        stats = mock.stats("uk")
    assert proc.returncode == 0, proc.stderr
    rows = [r for r in read_rows((tmp_path / "latest").resolve()) if r["endpoint"] == endpoint]
    assert len(rows) == stats["requests"][endpoint]
    kinds = Counter((r["ok"], r["error_kind"]) for r in rows)
    assert kinds[("0", "connection")] == stats["faults"][endpoint]["reset"] > 0
    assert kinds[("1", "")] == len(rows) - kinds[("0", "connection")]
