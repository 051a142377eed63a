"""analysis.load: reading a run folder, validation errors that name file/line/column, cache."""

from __future__ import annotations

import json
import os
import threading

import pytest

from analysis import chunks
from analysis import load as load_module
from analysis.load import RunDataError, load_run
from synthetic import make_run


@pytest.fixture()
def run(tmp_path):
    make_run(tmp_path / "run", rows=3_000, seed=5)
    return tmp_path / "run"


def _edit(path, line_no, fn):
    lines = path.read_text().splitlines()
    lines[line_no - 1] = fn(lines[line_no - 1])
    path.write_text("\n".join(lines) + "\n")


def _set_field(line: str, idx: int, value: str) -> str:
    parts = line.split(",")
    parts[idx] = value
    return ",".join(parts)


def test_loads_types_and_categoricals(run):
    r = load_run(run, use_cache=False)
    df = r.requests
    for c in ("region", "variant", "endpoint", "error_kind", "error"):
        assert df[c].dtype == "category"
    assert df["conversation_id"].dtype == "str"  # arrow-backed strings: too many distinct ids for a dictionary
    assert df["response_time_ms"].dtype == "float64" and df["ok"].dtype == "int8"
    assert r.meta["run_id"] == "run" and r.slo is None
    assert r.stats_history is not None and {"timestamp", "users"} <= set(r.stats_history.columns)
    assert len(r.conversations) > 0


def test_missing_column_names_it(run):
    _edit(run / "requests.csv", 1, lambda h: h.replace("response_time_ms", "latency"))
    with pytest.raises(RunDataError) as e:
        load_run(run, use_cache=False)
    assert e.value.column == "response_time_ms" and e.value.line == 1
    assert e.value.file.name == "requests.csv"
    assert "missing column response_time_ms" in str(e.value)


def test_non_numeric_latency_names_line_and_column(run):
    _edit(run / "requests.csv", 42, lambda s: _set_field(s, 5, "fast"))
    with pytest.raises(RunDataError) as e:
        load_run(run, use_cache=False)
    assert (e.value.line, e.value.column) == (42, "response_time_ms")
    assert "'fast'" in str(e.value) and "requests.csv, line 42" in str(e.value)


def test_empty_latency_is_an_error(run):
    _edit(run / "requests.csv", 7, lambda s: _set_field(s, 5, ""))
    with pytest.raises(RunDataError) as e:
        load_run(run, use_cache=False)
    assert (e.value.line, e.value.column) == (7, "response_time_ms")


def test_bad_ok_and_negative_latency(run):
    _edit(run / "requests.csv", 9, lambda s: _set_field(s, 7, "2"))
    with pytest.raises(RunDataError) as e:
        load_run(run, use_cache=False)
    assert (e.value.line, e.value.column) == (9, "ok")
    _edit(run / "requests.csv", 9, lambda s: _set_field(_set_field(s, 7, "1"), 5, "-3"))
    with pytest.raises(RunDataError) as e:
        load_run(run, use_cache=False)
    assert (e.value.line, e.value.column) == (9, "response_time_ms")


def test_empty_file(run):
    (run / "requests.csv").write_text("")
    with pytest.raises(RunDataError) as e:
        load_run(run, use_cache=False)
    assert "empty" in str(e.value) and e.value.file.name == "requests.csv"


def test_truncated_line(run):
    _edit(run / "requests.csv", 100, lambda s: ",".join(s.split(",")[:6]))
    with pytest.raises(RunDataError) as e:
        load_run(run, use_cache=False)
    assert e.value.line == 100 and "expected 15 fields, got 6" in str(e.value)


def test_header_only_file_is_an_empty_run(run):
    header = (run / "requests.csv").read_text().splitlines()[0]
    (run / "requests.csv").write_text(header + "\n")
    r = load_run(run, use_cache=False)
    assert len(r.requests) == 0


def test_missing_folder_and_files(tmp_path):
    with pytest.raises(RunDataError, match="no such run folder"):
        load_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDataError, match="no requests.csv"):
        load_run(tmp_path / "empty")


def test_tolerant_run_json(run):
    (run / "run.json").unlink()
    r = load_run(run, use_cache=False)
    assert r.meta == {} and r.run_id == "run" and len(r.requests)
    (run / "run.json").write_text(json.dumps({"status": "running"}))
    assert load_run(run, use_cache=False).meta["status"] == "running"
    (run / "run.json").write_text("{not json")
    with pytest.raises(RunDataError, match="run.json"):
        load_run(run, use_cache=False)


def test_cache_is_used_and_invalidated(tmp_path, monkeypatch):
    monkeypatch.setattr(chunks, "CACHE_MIN_BYTES", 64 << 10)  # a cache for this small run too (~0.3 MB)
    make_run(tmp_path / "run", rows=3_000, seed=6)
    csv = tmp_path / "run" / "requests.csv"
    cache = tmp_path / "run" / ".requests.csv.cache.arrow"
    first = load_run(tmp_path / "run")
    # the first read only marks the CSV as read: no cache for a run reported once
    assert chunks.parsed_before(csv) and chunks.cached_batches(csv, ["timestamp"]) is None
    assert cache.stat().st_size < 4096
    a = load_run(tmp_path / "run")  # the second writes it
    assert (a.compact.ok_lat == first.compact.ok_lat).all()
    for t in threading.enumerate():  # the full frame's cache is written in the background
        if t.name == "analysis-cache":
            t.join()
    assert cache.exists() and chunks.cached_batches(csv, ["timestamp"]) is not None
    assert cache.stat().st_size > 100_000

    def no_parse(*args, **kwargs):
        raise AssertionError("requests.csv parsed although its cache is there")

    with monkeypatch.context() as m:  # from the cache: the CSV is not parsed, by either reader
        m.setattr(chunks, "iter_batches", no_parse)
        m.setattr(load_module, "_read_csv", no_parse)
        b = load_run(tmp_path / "run")
        assert a.requests.equals(b.requests)
        assert (b.compact.ok_lat == a.compact.ok_lat).all()
    # editing the CSV (size/mtime change) invalidates the cache
    _edit(csv, 2, lambda s: _set_field(s, 5, "1.5"))
    os.utime(csv, ns=(os.stat(csv).st_atime_ns, os.stat(csv).st_mtime_ns + 10**9))
    c = load_run(tmp_path / "run")
    assert c.requests["response_time_ms"].iloc[0] == 1.5
    for t in threading.enumerate():
        if t.name == "analysis-cache":
            t.join()
