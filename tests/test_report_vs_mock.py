"""The whole pipeline against the mock's default regional profiles: the report's p50s are what
the mock meant to take (its sampled service times) plus a little client overhead, and come
out in the profiles' order."""

import pytest

from loadtest.mock import MockConfig, MockServer
from loadtest.mock.profiles import default_regions
from runs import loadtest, read_csv

pytestmark = pytest.mark.slow

SCALE = 0.5  # 2x faster than the defaults: more samples in a short run


def test_report_p50s_follow_what_the_mock_sampled(tmp_path):
    with MockServer(MockConfig(latency_scale=SCALE)) as mock:
        urls = ",".join(f"{r}={u}" for r, u in mock.base_urls.items())
        proc = loadtest(
            "run",
            "--duration",
            "12s",
            "--users",
            "24",
            "--spawn-rate",
            "50",
            "--think-time",
            "0.02-0.05",
            "--turns",
            "1",
            "--variants",
            "a",
            "--base-urls",
            urls,
            # connections kept: create then measures the service, not connecting
            "--connections",
            "per-user",
            "--out",
            str(tmp_path),
        )
        sampled = {r: mock.stats(r)["service_ms"] for r in mock.base_urls}
    assert proc.returncode == 0, proc.stderr
    run_dir = (tmp_path / "latest").resolve()
    summary = {(r["region"], r["endpoint"]): r for r in read_csv(run_dir / "summary.csv")}
    profiles = default_regions()
    p50 = {}
    for region in profiles:
        for endpoint in ("create", "respond"):
            row = summary[(region, endpoint)]
            assert int(row["errors"]) == 0 and int(row["count"]) > 150
            assert int(row["count"]) == sampled[region][endpoint]["count"]  # the same requests
            client, server = float(row["p50_ms"]), sampled[region][endpoint]["p50"]
            # the client measured at least what the mock slept, plus bounded overhead (a short
            # think time keeps Locust's core from saturating, which would queue in the client)
            assert server - 0.5 <= client <= server * 1.15 + 8.0, (region, endpoint, client, server)
        p50[region] = float(summary[(region, "respond")]["p50_ms"])
    expected_order = sorted(profiles, key=lambda r: profiles[r].respond.median_ms)
    assert sorted(p50, key=p50.get) == expected_order  # uk < eu < us < self-serve
