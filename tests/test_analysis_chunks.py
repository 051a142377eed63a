"""analysis.chunks / analysis.groups: the chunked, bounded-memory path stays exact.

Exactness: percentiles equal numpy's on the raw rows bit for bit (the recorder writes
microseconds, kept as uint32 µs), whatever the chunk size: 1 row, a few rows, and more than
the file, with ranges small enough to cut the file in many places (one of them next to an
error message holding a newline inside quotes). Memory: the peak RSS of a full report grows
by less than 30 MiB per million rows (a subprocess per run measures its own VmHWM).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from synthetic import make_run

from analysis import chunks
from analysis.groups import SortedGroups
from analysis.load import load_run
from analysis.stats import ALL, PERCENTILES, compute_stats

ROOT = Path(__file__).resolve().parents[1]
REGIONS = {"uk": (4.9, 0.35), "us": (5.3, 0.5), "eu": (5.0, 0.4)}
QS = [f"p{str(q).replace('.', '')}_ms" for q in PERCENTILES]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("chunks") / "run"
    make_run(
        path, rows=3_000, regions=REGIONS, variants=["a", "b"], variant_factor={"b": 1.3}, error_rate=0.05, orphans=5, seed=21, workers=2, split_files=True
    )
    # an error message with a newline (and a comma, a quote) inside a quoted field
    f = path / "requests-worker1.csv"
    text = f.read_text()
    assert ",HTTP 503 Service Unavailable," in text
    f.write_text(text.replace(",HTTP 503 Service Unavailable,", ',"HTTP 503\nService, ""Unavailable""",', 1))
    return path


def _raw(path: Path) -> pd.DataFrame:
    frames = [pd.read_csv(f, keep_default_na=False, na_values={"response_time_ms": []}) for f in sorted(path.glob("requests*.csv"))]
    return pd.concat(frames, ignore_index=True)


@pytest.mark.parametrize("chunk_rows", [1, 7, 1000, 10**9])
def test_chunked_percentiles_equal_numpy_on_raw_rows(run_dir, chunk_rows, monkeypatch):
    monkeypatch.setattr(chunks, "RANGE_BYTES", 4096)  # many ranges: cuts land everywhere
    raw = _raw(run_dir)
    st = compute_stats(load_run(run_dir, use_cache=False, chunk_rows=chunk_rows))
    assert st.total_requests == len(raw) and st.total_errors == int((raw.ok == 0).sum())
    ok = raw[raw.ok == 1]
    levels = {
        "region·variant·endpoint": ["region", "variant", "endpoint"],
        "region·endpoint": ["region", "endpoint"],
        "variant·endpoint": ["variant", "endpoint"],
        "endpoint": ["endpoint"],
    }
    checked = 0
    for level, keys in levels.items():
        table = st.level(level).set_index(keys)
        for k, g in ok.groupby(keys):
            row = table.loc[k if len(keys) > 1 else k[0]]
            v = g.response_time_ms.to_numpy()
            # bit-identical: µs integers divided by 1000 are the parsed floats
            np.testing.assert_array_equal(row[QS].to_numpy(dtype=float), np.percentile(v, PERCENTILES))
            assert row["min_ms"] == v.min() and row["max_ms"] == v.max()
            assert row["ok_count"] == len(v)
            assert row["mean_ms"] == pytest.approx(v.mean(), rel=1e-12)
            checked += 1
    assert checked == 18 + 9 + 6 + 3
    overall = st.level("overall").iloc[0]
    np.testing.assert_array_equal(overall[QS].to_numpy(dtype=float), np.percentile(ok.response_time_ms, PERCENTILES))
    # per turn, and the error message with a newline survived as one message
    bt = st.by_turn
    sel = ok[(ok.region == "us") & (ok.endpoint == "respond") & (ok.turn == 3)]
    row = bt[(bt.region == "us") & (bt.variant == ALL) & (bt.turn == 3)].iloc[0]
    assert row["count"] == len(sel) and row["p95_ms"] == np.percentile(sel.response_time_ms, 95)
    assert st.top_errors["example"].str.contains("HTTP 503\nService").any()
    assert st.timeseries[st.timeseries.region != ALL]["count"].sum() == len(raw)


def test_chunk_size_does_not_change_any_table(run_dir, monkeypatch):
    big = compute_stats(load_run(run_dir, use_cache=False))
    monkeypatch.setattr(chunks, "RANGE_BYTES", 4096)  # against the most cut: small ranges, one row per chunk
    one = compute_stats(load_run(run_dir, use_cache=False, chunk_rows=1))
    for name in ("requests", "by_turn", "timeseries", "conversations", "errors_by_kind", "top_errors"):
        pd.testing.assert_frame_equal(getattr(one, name), getattr(big, name), obj=name)


def test_lognormal_truth_is_recovered_exactly_at_scale(tmp_path):
    """200k rows: chunked p50…p99.9 per region × endpoint equal numpy on the raw rows, and
    are close to the lognormal the rows were drawn from."""
    truth = make_run(tmp_path / "big", rows=200_000, regions=REGIONS, error_rate=0.01, seed=5)
    raw = _raw(tmp_path / "big")
    st = compute_stats(load_run(tmp_path / "big", use_cache=False))
    t = st.level("region·endpoint").set_index(["region", "endpoint"])
    for (r, e), g in raw[raw.ok == 1].groupby(["region", "endpoint"]):
        np.testing.assert_array_equal(t.loc[(r, e), QS].to_numpy(dtype=float), np.percentile(g.response_time_ms, PERCENTILES))
        assert t.loc[(r, e), "p50_ms"] == pytest.approx(truth.lognormal_quantile(r, e, 50), rel=0.03)


UNIONS = [[0], [1, 2], [3, 4], [4], [0, 1, 2, 3, 4, 5, 6], [5, 6]]  # group 4 is empty


def _unions_equal_numpy(g: SortedGroups, codes: np.ndarray, v: np.ndarray) -> None:
    """Every union's count, percentiles, mean, min and max equal numpy's on the raw values;
    an empty union's percentiles are NaN."""
    qs = (0, 0.1, 50, 95, 99.9, 100)
    d = g.describe(UNIONS, qs)
    for i, gs in enumerate(UNIONS):
        sel = np.isin(codes, gs)
        assert d["n"][i] == sel.sum()
        if sel.any():
            np.testing.assert_array_equal(d["pct"][i], np.percentile(v[sel], qs))
            assert (d["min"][i], d["max"][i]) == (v[sel].min(), v[sel].max())
            assert d["mean"][i] == pytest.approx(v[sel].mean(), rel=1e-12)
        else:
            assert np.isnan(d["pct"][i]).all()


def test_sorted_groups_union_by_rank_equals_numpy():
    rng = np.random.default_rng(2)
    v = np.round(rng.lognormal(5, 1.2, 50_001), 3)
    codes = rng.integers(0, 6, len(v))
    codes[codes == 4] = 5  # group 4 empty
    g = SortedGroups.from_codes(codes, np.rint(v * 1000).astype(np.uint32), 7, 1000.0)
    _unions_equal_numpy(g, codes, v)
    for gs in UNIONS:
        np.testing.assert_array_equal(g.merged(gs), np.sort(v[np.isin(codes, gs)]))


@pytest.mark.parametrize("step", [1, 999, 1 << 20])
def test_sorted_float_groups_union_by_rank_equals_numpy(step):
    """Floats of any sign and magnitude (ties, ±0, a huge value, rows left out with code -1):
    every union's percentiles, mean, min and max equal numpy's on the raw values."""
    rng = np.random.default_rng(4)
    v = np.concatenate([rng.lognormal(1, 2, 20_000), -rng.lognormal(0, 1, 500), [0.0, -0.0, 1e300, 5.5, 5.5, 5.5]])
    codes = rng.integers(-1, 6, len(v))
    codes[codes == 4] = 5  # group 4 empty
    rng.shuffle(v)
    _unions_equal_numpy(SortedGroups.from_floats(codes, v, 7, step=step), codes, v)


def test_id_hashes_ignore_padding_and_length_mixing():
    import pyarrow as pa

    a = chunks.id_hashes(pa.array(["abc", "x" * 36, "abc\x00", "abcdefgh", "abcdefghi"]))
    b = chunks.id_hashes(pa.array(["x" * 36, "abc"]))
    assert a[0] == b[1] and a[1] == b[0]  # same id, same hash, whatever the batch widths
    assert len(set(a.tolist())) == 5  # "abc" and "abc\0" differ (the length is mixed in)
    # a slice of a batch (its data starts mid-buffer) hashes its strings as a fresh array does
    ids = pa.array([("us-" if i % 3 else "self-serve-") + "%024x" % i for i in range(50)] + ["é" * 9])
    np.testing.assert_array_equal(chunks.id_hashes(ids.slice(7, 30)), chunks.id_hashes(pa.array(ids.to_pylist()[7:37])))
    np.testing.assert_array_equal(chunks.id_hashes(ids)[[3, 50]], chunks.id_hashes(pa.array([ids[3].as_py(), "é" * 9])))
    assert len(set(chunks.id_hashes(ids).tolist())) == 51


def test_bad_latency_in_a_later_chunk_names_its_line(run_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(chunks, "RANGE_BYTES", 4096)
    path = tmp_path / "bad"
    make_run(path, rows=3_000, seed=3)
    f = path / "requests.csv"
    lines = f.read_text().splitlines()
    parts = lines[2500].split(",")
    parts[5] = "-1.5"
    lines[2500] = ",".join(parts)
    f.write_text("\n".join(lines) + "\n")
    from analysis.load import RunDataError

    with pytest.raises(RunDataError) as e:
        load_run(path, use_cache=False, chunk_rows=100)
    assert (e.value.line, e.value.column) == (2501, "response_time_ms")


PEAK = textwrap.dedent("""
    import json, sys
    sys.path[:0] = [{root!r}, {tests!r}]
    from analysis.report import build_report
    build_report({run!r})
    print(json.dumps(next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:"))))
""")

READ = textwrap.dedent("""
    import sys
    sys.path[:0] = [{root!r}]
    from analysis.load import load_run
    load_run({run!r})
""")

GENERATE = textwrap.dedent("""
    import sys
    sys.path[:0] = [{root!r}, {tests!r}]
    from synthetic import make_run
    make_run({run!r}, rows={rows}, variants=["a", "b"], duration_s={rows} / 2000, seed=1)
""")


def _child(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_report_peak_memory_grows_less_than_30_mib_per_million_rows(tmp_path):
    peaks, cached = {}, {}
    for rows in (2_000_000, 6_000_000):
        run = str(tmp_path / f"run-{rows}")
        _child(GENERATE.format(root=str(ROOT), tests=str(ROOT / "tests"), run=run, rows=rows))
        peaks[rows] = json.loads(_child(PEAK.format(root=str(ROOT), tests=str(ROOT / "tests"), run=run)))  # cold: the first read
        _child(READ.format(root=str(ROOT), run=run))  # the second read writes the cache
        assert (Path(run) / ".requests.csv.cache.arrow").stat().st_size > rows * 10
        cached[rows] = json.loads(_child(PEAK.format(root=str(ROOT), tests=str(ROOT / "tests"), run=run)))  # reads it
    per_million = (peaks[6_000_000] - peaks[2_000_000]) / 4 / 2**20
    cached_per_million = (cached[6_000_000] - cached[2_000_000]) / 4 / 2**20
    print(f"peak RSS {peaks[2_000_000] / 2**20:.0f} MiB at 2M rows, {peaks[6_000_000] / 2**20:.0f} MiB at 6M: {per_million:.1f} MiB per million rows")
    print(f"from the cache: {cached[2_000_000] / 2**20:.0f} / {cached[6_000_000] / 2**20:.0f} MiB: {cached_per_million:.1f} MiB per million rows")
    # The cache is read batch by batch, not memory-mapped: a map's pages stayed resident
    # (~70 MiB per million rows more, 9 GiB at 100 M). Measured 35 MiB/M from the cache: above
    # the cold path's 30 (not yet understood), so this bound only holds the mapping away.
    assert cached_per_million <= 45
    # The target: <= 30 MiB per million rows (measured ~20 since the readers hand freed
    # memory back, `analysis.chunks.release_memory`; ~45 before). The pandas path it replaced
    # took ~170 MiB per million rows.
    assert per_million <= 30


def test_ranges_never_cut_inside_a_quoted_field(tmp_path):
    f = tmp_path / "q.csv"
    body = '1,"plain",2\n3,"two\nlines, ""quoted""",4\n5,"x",6\n7,"a\n\nb",8\n'
    f.write_text("h1,h2,h3\n" + body)
    for size in range(4, 80):  # every possible block boundary
        pieces = list(chunks._ranges(f, size))
        assert b"".join(pieces).decode() == body
        for p in pieces:
            assert p.count(b'"') % 2 == 0 and p.endswith(b"\n"), (size, p)
