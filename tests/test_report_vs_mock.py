"""The whole pipeline against the mock's default regional profiles: the report's p50s come
out in the profiles' order and close to their values."""

import pytest

from loadtest.mock.profiles import default_regions
from runs import loadtest, read_csv

pytestmark = pytest.mark.slow

SCALE = 0.5  # 2x faster than the defaults: more samples in a short run


def test_report_p50s_follow_the_mock_profiles(tmp_path):
    proc = loadtest("run", "--duration", "12s", "--users", "24", "--spawn-rate", "50",
                    "--think-time", "0", "--turns", "1", "--variants", "a",
                    "--mock-latency-scale", str(SCALE), "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    run_dir = (tmp_path / "latest").resolve()
    summary = {(r["region"], r["endpoint"]): r for r in read_csv(run_dir / "summary.csv")}
    profiles = default_regions()
    p50 = {}
    for region, profile in profiles.items():
        row = summary[(region, "respond")]
        assert int(row["count"]) > 150 and int(row["errors"]) == 0
        p50[region] = float(row["p50_ms"])
        expected = profile.respond.median_ms * SCALE  # turn 1: no per-turn growth yet
        # within 12 %, plus 3 ms of client and scheduling overhead (2 cores shared by mock, Locust and the test)
        assert p50[region] == pytest.approx(expected, rel=0.12, abs=3.0), region
        create = float(summary[(region, "create")]["p50_ms"])
        assert create == pytest.approx(profile.create.median_ms * SCALE, rel=0.12, abs=3.0), region
    expected_order = sorted(profiles, key=lambda r: profiles[r].respond.median_ms)
    assert sorted(p50, key=p50.get) == expected_order  # uk < eu < us < self-serve
