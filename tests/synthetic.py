"""Synthetic run folders for the analysis tests and the report benchmark.

    from synthetic import make_run
    truth = make_run(tmp_path / "run", rows=50_000, regions={"uk": (4.9, 0.4), "us": (5.3, 0.5)})

Writes exactly the run folder a real `loadtest run` writes (`analysis.records`: requests.csv,
conversations.csv, arrivals.csv for an open model, connections.csv for HTTPS, run.json with
the same keys, a 12-hex config hash, workers named `local` or `worker0..N-1`, conversations
cut by the end of the test `stopped`; optionally slo.json and locust_stats_history.csv) with
latencies drawn from a known lognormal distribution per region, so tests can compare
computed statistics with the truth. tests/test_synthetic_contract.py holds it to a real
run's folder. Vectorised (numpy + pyarrow), so 10M rows take seconds, not minutes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from analysis.records import (
    ARRIVAL_COLUMNS,
    ARRIVALS_CSV,
    CONNECTION_COLUMNS,
    CONNECTIONS_CSV,
    CONVERSATION_COLUMNS,
    CONVERSATIONS_CSV,
    REGIONS,
    REQUEST_COLUMNS,
    REQUESTS_CSV,
    RUN_JSON,
    UNFINISHED,
)
from loadtest import config as scenario_config
from loadtest import runfolder

START = 1_700_000_000.0
ENDPOINTS = ("create", "respond", "close")
# Endpoint latency offsets in log space: create and close are faster than respond.
ENDPOINT_SHIFT = {"create": -0.3, "respond": 0.0, "close": -0.7}

# Quoted only where a value needs it, like the csv module of a real run: pyarrow's "needed"
# would quote every string and its header, so the header is written here.
_BARE = pacsv.WriteOptions(quoting_style="none", include_header=False)
_QUOTED = pacsv.WriteOptions(quoting_style="needed", include_header=False)


def _write_csv(table: pa.Table, path: Path) -> None:
    with open(path, "wb") as f:
        f.write((",".join(table.column_names) + "\n").encode())
        start = f.tell()
        try:
            pacsv.write_csv(table, f, write_options=_BARE)
        except pa.ArrowInvalid:  # a value holds a comma, a quote or a line end
            f.seek(start)
            f.truncate()
            pacsv.write_csv(table, f, write_options=_QUOTED)


_FAILURES = (
    # status, error_kind, message
    (500, "http", "HTTP 500 Internal Server Error"),
    (503, "http", "HTTP 503 Service Unavailable"),
    (429, "rate_limited", "HTTP 429 Too Many Requests (Retry-After: 1)"),
    (0, "timeout", "ReadTimeout: no response within 30.0 s"),
    (0, "connection", "ConnectError: connection refused"),
    (200, "schema", "schema: respond body has no 'response' field"),
)


@dataclass
class Truth:
    """What the synthetic run was generated from (for assertions)."""

    path: Path
    rows: int
    conversations: int
    regions: dict
    variants: list
    start: float
    duration_s: float
    orphans: int = 0
    stopped: int = 0
    files: list = field(default_factory=list)

    def lognormal_quantile(self, region: str, endpoint: str, q: float, variant_factor: float = 1.0) -> float:
        """The true q-th percentile (0..100) of a region/endpoint latency distribution (ms)."""
        from statistics import NormalDist

        mu, sigma = self.regions[region]
        return math.exp(mu + ENDPOINT_SHIFT[endpoint] + sigma * NormalDist().inv_cdf(q / 100)) * variant_factor


def make_run(
    path: Path | str,
    rows: int = 20_000,
    regions: dict | None = None,
    variants: list | tuple = ("",),
    variant_factor: dict | None = None,
    endpoint_factor: dict | None = None,
    turns: int = 6,
    duration_s: float = 120.0,
    error_rate: float = 0.01,
    error_rates: dict | None = None,
    unique_error_messages: bool = False,
    orphans: int = 0,
    workers: int = 1,
    seed: int = 1,
    status: str = "completed",
    slo: list | None = None,
    declared_regions: list | None = None,
    declared_variants: list | None = None,
    stats_history: bool = True,
    run_json: bool = True,
    config: dict | None = None,
    split_files: bool = False,
    open_model: bool = False,
    tls: bool = False,
) -> Truth:
    """Write a synthetic run folder at `path` with about `rows` request rows.

    regions: {name: (mu, sigma)} of the lognormal latency (ms) of `respond`; create and close
    are shifted by ENDPOINT_SHIFT. variants: variant names ("" for none), assigned round-robin;
    variant_factor: {variant: latency multiplier}, or {(region, variant): …} for one region
    only; endpoint_factor: {(region, endpoint): latency multiplier} (one group slower, the
    others unchanged). error_rates: {(region, endpoint): rate}
    overrides `error_rate` (1.0 makes an all-failed endpoint). orphans: conversations whose
    close row is dropped. workers > 1: rows from worker0..worker<N-1> (as `--processes N`
    writes them, all in requests.csv; `split_files` puts each worker's rows in its own
    requests-workerN.csv, which the loader merges). Conversations still running at
    `duration_s` end `stopped` (ok 0), like the ones a real run cuts. open_model: arrivals.csv
    (one row per planned conversation, a few dropped); tls: connections.csv (one new
    connection per conversation's create, as with --connections per-conversation).
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    regions = regions or {"uk": (4.9, 0.35), "us": (5.2, 0.45), "eu": (5.0, 0.4)}
    region_names = list(regions)
    variants = list(variants)
    variant_factor = variant_factor or {}
    error_rates = error_rates or {}

    # Conversations: create, 1..turns responds, close.
    n_turns_mean = (1 + turns) / 2
    n_conv = max(1, int(round(rows / (n_turns_mean + 2))))
    conv_turns = rng.integers(1, turns + 1, size=n_conv)
    conv_region = np.arange(n_conv) % len(region_names)
    conv_variant = (np.arange(n_conv) // len(region_names)) % len(variants)
    conv_start = START + np.sort(rng.uniform(0, duration_s, size=n_conv))  # the last ones cut by the end
    per_conv = conv_turns + 2
    n = int(per_conv.sum())
    conv_of_row = np.repeat(np.arange(n_conv), per_conv)
    first_row = np.cumsum(per_conv) - per_conv
    turn = np.arange(n) - np.repeat(first_row, per_conv)
    endpoint = np.where(turn == 0, 0, np.where(turn == np.repeat(conv_turns + 1, per_conv), 2, 1))

    # Latency: lognormal per region and endpoint, times the variant factor.
    mu = np.array([regions[r][0] for r in region_names])[conv_region][conv_of_row]
    sigma = np.array([regions[r][1] for r in region_names])[conv_region][conv_of_row]
    shift = np.array([ENDPOINT_SHIFT[e] for e in ENDPOINTS])[endpoint]
    factors = np.array(
        [[variant_factor.get((r, v), variant_factor.get(v, 1.0)) for v in variants] for r in region_names]
    )  # (region, variant) overrides variant
    vf = factors[conv_region, conv_variant][conv_of_row]
    rt = np.exp(mu + shift + sigma * rng.standard_normal(n)) * vf
    for (reg, ep), factor in (endpoint_factor or {}).items():
        rt[(conv_region[conv_of_row] == region_names.index(reg)) & (endpoint == ENDPOINTS.index(ep))] *= factor

    # Timestamps: each request starts after the previous one ends plus ~1 s think time.
    gap = rt / 1000.0 + rng.uniform(0.5, 1.5, size=n)
    gap_cum = np.cumsum(gap)
    conv_base = np.repeat(gap_cum[first_row] - gap[first_row], per_conv)
    timestamp = np.repeat(conv_start, per_conv) + (gap_cum - gap) - conv_base

    # Failures.
    row_region = conv_region[conv_of_row]
    rate = np.full(n, float(error_rate))
    for (reg, ep), r in error_rates.items():
        rate[(row_region == region_names.index(reg)) & (endpoint == ENDPOINTS.index(ep))] = r
    failed = rng.random(n) < rate
    kind_idx = rng.integers(0, len(_FAILURES), size=n)
    ok = (~failed).astype(np.int8)
    status_code = np.where(failed, np.array([f[0] for f in _FAILURES])[kind_idx], 200)
    kinds = np.array([""] + [f[1] for f in _FAILURES], dtype=object)
    error_kind = kinds[np.where(failed, kind_idx + 1, 0)]
    timeouts = failed & (np.array([f[1] for f in _FAILURES])[kind_idx] == "timeout")
    rt = np.where(timeouts, 30_000.0 + rng.uniform(0, 50, size=n), rt)
    rt = np.round(rt, 3)

    # "<region>-" and 24 hex digits, as the mock's ids
    conv_ids = np.array([f"{region_names[conv_region[i]]}-{seed:04x}{i:08x}{i * 7919 % 16**12:012x}" for i in range(n_conv)], dtype=object)
    create_failed = failed & (endpoint == 0)
    conv_create_failed = np.zeros(n_conv, dtype=bool)
    conv_create_failed[conv_of_row[create_failed]] = True
    # A failed create has no conversation: keep only its create row.
    keep = ~conv_create_failed[conv_of_row] | (endpoint == 0)
    # Orphans: drop the close row of `orphans` conversations whose create succeeded.
    eligible = np.flatnonzero(~conv_create_failed)
    orphan_convs = rng.choice(eligible, size=min(orphans, eligible.size), replace=False) if orphans else np.array([], int)
    is_orphan = np.zeros(n_conv, dtype=bool)
    is_orphan[orphan_convs] = True
    keep &= ~(is_orphan[conv_of_row] & (endpoint == 2))

    cid = conv_ids[conv_of_row]
    cid = np.where(create_failed, "", cid)
    errors = np.array([""] + [f[2] for f in _FAILURES], dtype=object)[np.where(failed, kind_idx + 1, 0)]
    if unique_error_messages:
        errors = np.where(failed, np.char.add(errors.astype(str), np.char.add(" at row ", np.arange(n).astype(str))).astype(object), errors)

    reg_arr = np.array(region_names, dtype=object)[row_region]
    var_arr = np.array(variants, dtype=object)[conv_variant[conv_of_row]]
    ep_arr = np.array(ENDPOINTS, dtype=object)[endpoint]
    names = {(r, v, e): " · ".join(x for x in (r, v, e) if x) for r in region_names for v in variants for e in ENDPOINTS}
    name_keys = np.array([names[(r, v, e)] for r in region_names for v in variants for e in ENDPOINTS], dtype=object)
    name_arr = name_keys[(row_region * len(variants) + conv_variant[conv_of_row]) * 3 + endpoint]
    user = conv_of_row % 200
    worker = conv_of_row % max(workers, 1)
    worker_names = ["local"] if workers <= 1 else [f"worker{w}" for w in range(workers)]

    table = {
        "timestamp": np.round(timestamp, 6)[keep],
        "region": reg_arr[keep],
        "variant": var_arr[keep],
        "endpoint": ep_arr[keep],
        "name": name_arr[keep],
        "response_time_ms": rt[keep],
        "status": status_code[keep],
        "ok": ok[keep],
        "error_kind": error_kind[keep],
        "error": errors[keep],
        "bytes": np.where(failed, 40, 120 + endpoint * 10)[keep],
        "conversation_id": cid[keep],
        "turn": turn[keep],
        "user": np.array([str(u + 1) for u in range(200)], dtype=object)[user[keep]],
        "worker": np.array(worker_names, dtype=object)[worker[keep]],
    }
    assert tuple(table) == tuple(REQUEST_COLUMNS)
    tbl = pa.table({k: pa.array(v) for k, v in table.items()})
    files = []
    if workers > 1 and split_files:
        wcol = worker[keep]
        for w in range(workers):
            f = path / f"requests-{worker_names[w]}.csv"
            _write_csv(tbl.filter(pa.array(wcol == w)), f)
            files.append(f)
    else:
        f = path / REQUESTS_CSV
        _write_csv(tbl, f)
        files.append(f)

    # conversations.csv
    last_row = first_row + per_conv - 1
    ended = timestamp[last_row] + rt[last_row] / 1000
    ended_by_choices = np.array(["end_conversation", "handoff", "max_turns"], dtype=object)
    ended_by = ended_by_choices[rng.integers(0, 3, size=n_conv)]
    ended_by = np.where(conv_create_failed, "error", ended_by)
    # Still running when the test stopped: cut (then closed), neither a success nor a failure.
    stopped = ~conv_create_failed & (ended > START + duration_s)
    ended_by = np.where(stopped, UNFINISHED, ended_by)
    conv_failed_any = np.zeros(n_conv, dtype=bool)
    conv_failed_any[conv_of_row[failed]] = True
    conv = {
        "conversation_id": np.where(conv_create_failed, "", conv_ids),
        "region": np.array(region_names, dtype=object)[conv_region],
        "variant": np.array(variants, dtype=object)[conv_variant],
        "started": np.round(conv_start, 6),
        "ended": np.round(ended, 6),
        "duration_s": np.round(ended - conv_start, 6),
        "turns": np.where(conv_create_failed, 0, conv_turns),
        "ended_by": ended_by,
        "ok": (~conv_failed_any & ~stopped).astype(np.int8),
    }
    assert tuple(conv) == tuple(CONVERSATION_COLUMNS)
    _write_csv(pa.table({k: pa.array(v) for k, v in conv.items()}), path / CONVERSATIONS_CSV)

    if open_model:  # one row per planned conversation; every 50th found no free user
        lag_ms = np.round(rng.exponential(2.0, size=n_conv), 3)
        planned = conv_start - lag_ms / 1000
        dropped = (np.arange(n_conv) % 50) == 49
        arrivals = {
            "planned": np.round(planned, 6),
            "region": np.array(region_names, dtype=object)[conv_region],
            "variant": np.array(variants, dtype=object)[conv_variant],
            "started": np.where(dropped, None, np.round(conv_start, 6)),
            "lag_ms": np.where(dropped, None, lag_ms),
            "dropped": dropped.astype(np.int8),
            "reason": np.where(dropped, "all 50 users busy", ""),
        }
        assert tuple(arrivals) == tuple(ARRIVAL_COLUMNS)
        _write_csv(pa.table({k: pa.array(v) for k, v in arrivals.items()}), path / ARRIVALS_CSV)
    if tls:  # the create of every conversation opened a connection
        creates = keep & (endpoint == 0) & ~create_failed
        rows_end = timestamp + rt / 1000
        connections = {
            "timestamp": np.round(rows_end, 6)[creates],
            "region": reg_arr[creates],
            "endpoint": ep_arr[creates],
            "conversation_id": cid[creates],
            "turn": turn[creates],
            "user": np.array([str(u + 1) for u in range(200)], dtype=object)[user[creates]],
            "worker": np.array(worker_names, dtype=object)[worker[creates]],
            "tls_handshake_ms": np.round(rng.uniform(2.0, 6.0, size=int(creates.sum())), 3),
        }
        assert tuple(connections) == tuple(CONNECTION_COLUMNS)
        _write_csv(pa.table({k: pa.array(v) for k, v in connections.items()}), path / CONNECTIONS_CSV)

    end = float(timestamp.max() + rt.max() / 1000) if n else START + duration_s
    if run_json:
        declared = declared_regions or region_names
        if config is None:  # what `loadtest run` resolves for this scenario
            flags = {
                "users": 50,
                "spawn_rate": 10.0,
                "duration": f"{duration_s:g}s",
                "turns": f"1-{turns}" if turns > 1 else "1",
                "think_time": "0.5-1.5",
                # a test's made-up regions (not the tool's four) are left to the default
                "regions": ",".join(r for r in declared if r in REGIONS) or None,
                "variants": ",".join(declared_variants if declared_variants is not None else [v for v in variants if v]),
            }
            if open_model:
                flags["arrival_rate"] = "5"
            config = scenario_config.resolve(flags={k: v for k, v in flags.items() if v is not None}, environ={}).raw()
        # The keys (and their order) of a real run.json: started, then provenance, then ended.
        meta = {
            "status": status,
            "started": START,
            "target": "mock",
            "pid": 4242,
            "config": config,
            "config_hash": runfolder.config_hash(config),
            "users": 50,
            "spawn_rate": 10.0,
            "duration_s": duration_s,
            "turns": [1, turns],
            "think_time": [0.5, 1.5],
            "regions": declared,
            "variants": declared_variants if declared_variants is not None else [v for v in variants if v],
            "tool_version": "0.1.0",
            "locust_version": "2.47.0",
            "python_version": "3.11.7",
            "git_sha": "abc1234",
            "host": "loadgen-1",
            "run_id": path.name,
            "base_urls": {r: f"http://127.0.0.1:{9000 + i}" for i, r in enumerate(declared)},
            "tls": {"verify": True, "ca_bundle": None},
            "connections": "per-conversation",
            "ended": end,
            "lost_workers": [],
            "mock_open_conversations": {r: 0 for r in ("us", "uk", "eu", "self-serve")},
            "exit_code": 0 if status == "completed" else 4,
        }
        if workers > 1:  # the master's account of the rows its workers shipped
            meta["workers"] = worker_names
            counts = np.bincount(worker[keep], minlength=workers)
            meta["worker_rows"] = {
                name: {
                    "node": f"loadgen-1_{w:032x}",
                    "produced": {"requests": int(counts[w])},
                    "received": {"requests": int(counts[w])},
                    "dropped": {},
                    "batches": 1,
                    "repeated_batches": 0,
                    "complete": True,
                    "last_rows_at": end,
                    "lost_at": None,
                }
                for w, name in enumerate(worker_names)
            }
        (path / RUN_JSON).write_text(json.dumps(meta, indent=2))
    if slo is not None:
        (path / "slo.json").write_text(json.dumps(slo, indent=2))
    if stats_history:
        secs = np.arange(0, int(duration_s) + 1, 2)
        lines = [
            "Timestamp,User Count,Type,Name,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,"
            "100%,Total Request Count,Total Failure Count,Total Median Response Time,Total Average Response Time,"
            "Total Min Response Time,Total Max Response Time,Total Average Content Size"
        ]
        for s in secs:
            users = min(50, int(s * 10 / 2) + 1)
            lines.append(
                f"{int(START + s)},{users},,Aggregated,{users / 2:.6f},0.000000,150,170,190,200,250,300,400,450,"
                f"470,470,470,{int(s * 25)},0,150,160.0,20.0,470.0,120.0"
            )
        (path / "locust_stats_history.csv").write_text("\n".join(lines) + "\n")

    close_failed = np.zeros(n_conv, dtype=bool)
    close_failed[conv_of_row[failed & (endpoint == 2)]] = True
    n_orphans = int((~conv_create_failed & (is_orphan | close_failed)).sum())
    return Truth(
        path=path,
        rows=int(keep.sum()),
        conversations=n_conv,
        regions=dict(regions),
        variants=variants,
        start=START,
        duration_s=duration_s,
        orphans=n_orphans,
        stopped=int(stopped.sum()),
        files=files,
    )
