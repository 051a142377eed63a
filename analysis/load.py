"""Load a run folder into DataFrames, validating the data contract of `analysis.records`.

    from analysis.load import load_run
    run = load_run("reports/2024-05-01T10-00-00", warmup_s=10)
    run.compact         # the requests as the statistics need them (analysis.chunks)
    run.conversations   # one row per conversation (categoricals, no ids)
    run.meta            # run.json as a dict ({} when missing)
    run.slo             # slo.json as a list, or None
    run.requests        # every request row as a DataFrame: read only when asked for

Bad data raises `RunDataError` naming the file, the line and the column, so the user can
find and fix it. Reading is built for 100M+ rows in bounded memory: requests are read in
chunks and reduced to compact columns as they are parsed (`analysis.chunks`), so the
memory a report needs grows by under ~30 MiB per million rows, not by every column of every row.
An Arrow cache of the parsed columns (`.<name>.cache.arrow`, keyed on the CSV's size and
mtime) lets a second report skip the CSV parse; it is optional and never needed for
correctness. Distributed runs (several `requests*.csv`, one per worker) are merged.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import socket
import threading
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from analysis.chunks import (
    CacheWriter,
    CompactRequests,
    Labels,
    Parts,
    cached_batches,
    estimate_rows,
    iter_batches,
    read_requests,
    release_memory,
)
from analysis.columns import CONVERSATION_TYPES, NUMERIC_DEFAULTS, REQUEST_TYPES, REQUIRED_VALUES
from analysis.records import (
    ARRIVAL_COLUMNS,
    ARRIVALS_GLOB,
    CONNECTION_COLUMNS,
    CONNECTIONS_GLOB,
    CONVERSATION_COLUMNS,
    CONVERSATIONS_GLOB,
    LOCUST_CSV_PREFIX,
    REQUEST_COLUMNS,
    REQUESTS_GLOB,
    RUN_JSON,
)

SLO_JSON = "slo.json"
STATS_HISTORY_CSV = f"{LOCUST_CSV_PREFIX}_stats_history.csv"

#: The request columns the analysis uses (the rest are only checked to be present).
ANALYSIS_COLUMNS: tuple[str, ...] = (
    "timestamp",
    "region",
    "variant",
    "endpoint",
    "response_time_ms",
    "status",
    "ok",
    "error_kind",
    "error",
    "conversation_id",
    "turn",
)
#: The conversation columns the analysis uses: not the ids (millions of distinct strings;
#: orphans are found from requests.csv).
CONVERSATION_ANALYSIS_COLUMNS = tuple(c for c in CONVERSATION_COLUMNS if c != "conversation_id")


class RunDataError(ValueError):
    """A run folder's data breaks the contract. Names the file, line and column."""

    def __init__(self, file: Path | str | None, problem: str, line: int | None = None, column: str | None = None, hint: str | None = None):
        self.file = Path(file) if file is not None else None
        self.problem = problem
        self.line = line
        self.column = column
        self.hint = hint
        where = str(self.file) if self.file is not None else "run folder"
        if line is not None:
            where += f", line {line}"
        if column is not None:
            where += f", column '{column}'"
        msg = f"{where}: {problem}"
        if hint:
            msg += f" ({hint})"
        super().__init__(msg)


@dataclass
class Run:
    """One run folder, loaded.

    `compact` holds the requests as the statistics need them (`analysis.chunks`: a few
    bytes per request, read in chunks). `requests`, every column of every row as a
    DataFrame, is read only when asked for (small runs, the capacity search, tests): a
    report never needs it.
    """

    path: Path
    meta: dict
    compact: CompactRequests
    conversations: pd.DataFrame
    stats_history: pd.DataFrame | None = None
    slo: list | None = None
    #: Open model only (arrivals*.csv): one row per planned conversation.
    arrivals: pd.DataFrame | None = None
    #: HTTPS targets only (connections*.csv): one row per new TLS connection.
    connections: pd.DataFrame | None = None
    #: Files whose incomplete last line (cut by a crash or a full disk) was skipped.
    incomplete: list[str] = field(default_factory=list)
    warmup_s: float = 0.0
    #: Start and end (epoch s) of the measured window (after warm-up exclusion).
    window: tuple[float, float] = (math.nan, math.nan)
    files: list[Path] = field(default_factory=list)
    use_cache: bool = True
    _requests: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def requests(self) -> pd.DataFrame:
        """Every request row after the warm-up cut (ANALYSIS_COLUMNS), read on first use."""
        if self._requests is None:
            df = load_requests(self.files, use_cache=self.use_cache)
            cut = self.window[0]
            if self.warmup_s > 0 and math.isfinite(cut):
                df = df.loc[df["timestamp"].to_numpy() >= cut].reset_index(drop=True)
            self._requests = df
        return self._requests

    @property
    def run_id(self) -> str:
        return str(self.meta.get("run_id") or self.path.name)

    @property
    def duration_s(self) -> float:
        start, end = self.window
        return max(end - start, 0.0) if math.isfinite(start) and math.isfinite(end) else 0.0

    def regions(self) -> list[str]:
        """Regions in a stable order: declared in run.json first, then any seen in the data."""
        return _ordered(self.meta.get("regions"), self.compact.regions, self.compact.combo_r)

    def variants(self) -> list[str]:
        """Variants ('' for none) in a stable order: declared first, then seen."""
        out = _ordered(self.meta.get("variants") or [], self.compact.variants, self.compact.combo_v)
        return out or [""]


def _ordered(declared: Any, labels: list[str], used: np.ndarray) -> list[str]:
    out: list[str] = []
    if isinstance(declared, (list, tuple)):
        out = [str(x) for x in declared if x is not None]
    for i in sorted(set(used.tolist())):
        if labels[i] not in out:
            out.append(labels[i])
    return out


# --------------------------------------------------------------------------- run folder


def load_run(run_dir: Path | str, warmup_s: float = 0.0, use_cache: bool = True, chunk_rows: int | None = None) -> Run:
    """Load a run folder: requests (merged, compact), conversations, run.json, slo.json,
    Locust history.

    Rows of requests (and conversations) that start within the first `warmup_s` seconds of
    the run are dropped. Raises RunDataError when the folder or its data is unusable.
    `chunk_rows` bounds the rows reduced at once (tests); results never depend on it.
    """
    path = Path(run_dir)
    if not path.exists():
        raise RunDataError(path, "no such run folder", hint="pass the folder a run wrote, e.g. reports/<run-id>")
    if not path.is_dir():
        raise RunDataError(path, "not a folder", hint="pass the run folder, not a file inside it")
    meta = load_meta(path)
    files = sorted(p for p in path.glob(REQUESTS_GLOB) if p.is_file())
    if not files:
        raise RunDataError(path, "no requests.csv in this folder", hint="is this a run folder? a run writes requests.csv as it goes")
    checked = [(f, _check_header(f, REQUEST_COLUMNS)) for f in files]
    conversations = load_conversations(path, use_cache=use_cache)
    slo = load_slo(path)
    history = load_stats_history(path)
    arrivals = load_arrivals(path)
    connections = load_connections(path)

    start = _num(meta.get("started"))
    if not math.isfinite(start):
        start = _first_timestamp(checked)
    cut = start + max(warmup_s, 0.0) if math.isfinite(start) else math.nan
    compact = read_requests(
        checked,
        REQUEST_TYPES,
        [c for c in REQUEST_COLUMNS if c in ANALYSIS_COLUMNS],
        start=cut if math.isfinite(cut) else 0.0,
        cut=cut if warmup_s > 0 and math.isfinite(cut) else -math.inf,
        diagnose=lambda f, m: _diagnose(f, _header_of(checked, f), REQUEST_TYPES, ANALYSIS_COLUMNS, m),
        fail=lambda f, problem, i, c: RunDataError(f, problem, line=i + 2, column=c),
        chunk_rows=chunk_rows,
        use_cache=use_cache,
    )
    end = _num(meta.get("ended"))
    last = compact.last_end
    if warmup_s > 0 and not len(compact) and math.isfinite(compact.first_ts):
        raise RunDataError(
            path,
            f"a warm-up of {warmup_s:g} s leaves no requests: the run's requests span {max(last - start, 0):.1f} s from its start",
            hint="use a shorter --warmup",
        )
    if math.isfinite(last) and (not math.isfinite(end) or end < last - 1e-6):
        end = last if not math.isfinite(end) else max(end, last)
    if warmup_s > 0 and math.isfinite(cut) and len(conversations):
        conversations = conversations.loc[conversations["started"].to_numpy() >= cut].reset_index(drop=True)
    incomplete = [f.name for f in (*files, *path.glob(CONVERSATIONS_GLOB)) if f.is_file() and incomplete_tail(f)]
    return Run(
        path=path,
        meta=meta,
        compact=compact,
        conversations=conversations,
        incomplete=sorted(incomplete),
        stats_history=history,
        slo=slo,
        arrivals=arrivals,
        connections=connections,
        warmup_s=float(max(warmup_s, 0.0)),
        window=(cut, end),
        files=files,
        use_cache=use_cache,
    )


def _header_of(checked: Sequence[tuple[Path, list[str]]], f: Path) -> list[str]:
    return next(h for p, h in checked if p == f)


def _first_timestamp(checked: Sequence[tuple[Path, list[str]]]) -> float:
    """The earliest request start over all files (only when run.json does not say)."""
    first = math.inf
    for f, header in checked:
        for batch, _ in iter_batches(f, header, REQUEST_TYPES, ["timestamp"], partial(_diagnose, f, header, REQUEST_TYPES, ["timestamp"])):
            ts = batch.column(0)
            if len(ts) and ts.null_count < len(ts):
                first = min(first, float(pc.min(ts).as_py()))
    return first if math.isfinite(first) else math.nan


def _num(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v if math.isfinite(v) else math.nan


def load_meta(path: Path) -> dict:
    """run.json as a dict; {} when missing. Tolerant: any field may be absent."""
    f = path / RUN_JSON
    if not f.exists():
        return {}
    try:
        meta = json.loads(f.read_text(encoding="utf-8") or "{}")
    except (OSError, UnicodeDecodeError) as e:
        raise RunDataError(f, f"cannot read: {e}") from e
    except json.JSONDecodeError as e:
        raise RunDataError(
            f, f"not valid JSON: {e.msg}", line=e.lineno, hint="the run may still be writing it; or delete it to report without run metadata"
        ) from e
    if not isinstance(meta, dict):
        raise RunDataError(f, "expected a JSON object")
    note = did_not_finish(meta)
    if note:  # the folder says it is still going, but nothing is running it any more
        meta["status"], meta["status_note"] = "did not finish", note
    return meta


def _load_small(path: Path, glob: str, columns: Sequence[str], text: dict, na: dict, optional: dict | None = None) -> pd.DataFrame | None:
    """A small optional CSV of the run folder (merged over workers), or None when absent."""
    files = sorted(p for p in path.glob(glob) if p.is_file())
    if not files:
        return None
    frames = []
    for f in files:
        try:
            df = pd.read_csv(f, dtype=text, keep_default_na=False, na_values=na)
        except (OSError, ValueError) as e:
            raise RunDataError(f, f"cannot read: {e}") from e
        for column, value in (optional or {}).items():  # runs recorded before the column existed
            if column not in df.columns:
                df[column] = value
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise RunDataError(f, f"missing column(s) {', '.join(missing)}", line=1, hint=f"expected: {', '.join(columns)}")
        frames.append(df[list(columns)])
    return pd.concat(frames, ignore_index=True)


def load_arrivals(path: Path) -> pd.DataFrame | None:
    """arrivals*.csv of an open-model run (merged over workers), or None for a closed model."""
    return _load_small(
        path, ARRIVALS_GLOB, ARRIVAL_COLUMNS, {"region": str, "variant": str, "reason": str}, {"started": [""], "lag_ms": [""]}, optional={"reason": ""}
    )


def load_connections(path: Path) -> pd.DataFrame | None:
    """connections*.csv (HTTPS targets: one row per new TLS connection), or None."""
    return _load_small(path, CONNECTIONS_GLOB, CONNECTION_COLUMNS, {"region": str, "endpoint": str, "conversation_id": str, "worker": str}, {})


def load_slo(path: Path) -> list | None:
    """slo.json (a list of SLO results) or None when the SLO step did not run."""
    f = path / SLO_JSON
    if not f.exists():
        return None
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunDataError(f, f"cannot read SLO results: {e}") from e
    if isinstance(data, dict):  # tolerate {"slos": [...]} / {"results": [...]}
        data = data.get("slos") or data.get("results") or []
    if not isinstance(data, list):
        raise RunDataError(f, "expected a JSON list of SLO results")
    return [d for d in data if isinstance(d, dict)]


def load_stats_history(path: Path) -> pd.DataFrame | None:
    """Locust's stats history (aggregated rows): Timestamp, User Count. None if absent/unusable."""
    f = path / STATS_HISTORY_CSV
    if not f.exists():
        return None
    try:
        df = pd.read_csv(f)
        if "Timestamp" not in df or "User Count" not in df:
            return None
        if "Name" in df:
            df = df[df["Name"].astype(str) == "Aggregated"]
        out = pd.DataFrame({"timestamp": pd.to_numeric(df["Timestamp"], errors="coerce"), "users": pd.to_numeric(df["User Count"], errors="coerce")}).dropna()
        return out.reset_index(drop=True)
    except Exception:  # optional input: never fail a report because of it
        return None


# --------------------------------------------------------------------------- requests


def load_requests(files: Sequence[Path | str] | Path | str, use_cache: bool = True, columns: Sequence[str] = ANALYSIS_COLUMNS) -> pd.DataFrame:
    """Read one or several requests CSVs (distributed workers) into one DataFrame."""
    if isinstance(files, (str, Path)):
        files = [files]
    columns = [c for c in REQUEST_COLUMNS if c in set(columns)]
    tables = [_read_table(Path(f), REQUEST_COLUMNS, REQUEST_TYPES, columns, use_cache) for f in files]
    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables).unify_dictionaries()
    df = table.to_pandas()
    for c, v in NUMERIC_DEFAULTS.items():
        if c in df and df[c].dtype.kind == "f":  # nulls made it float
            df[c] = df[c].fillna(v).astype(REQUEST_TYPES[c].to_pandas_dtype())
    if "ok" in df:
        bad = ~df["ok"].isin((0, 1)).to_numpy()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            f, line = _locate(files, tables, i)
            raise RunDataError(f, f"'ok' must be 0 or 1, got {int(df['ok'].iloc[i])}", line=line, column="ok")
    if "response_time_ms" in df:
        rt = df["response_time_ms"].to_numpy()
        bad = ~np.isfinite(rt) | (rt < 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            f, line = _locate(files, tables, i)
            raise RunDataError(f, f"latency must be a finite number ≥ 0, got {rt[i]!r}", line=line, column="response_time_ms")
    return df


def _locate(files: Sequence, tables: Sequence[pa.Table], i: int) -> tuple[Path, int]:
    """File and line of merged row i (header is line 1)."""
    for f, t in zip(files, tables):
        if i < t.num_rows:
            return Path(f), i + 2
        i -= t.num_rows
    return Path(files[-1]), i + 2


def load_conversations(path: Path, use_cache: bool = True, columns: Sequence[str] = CONVERSATION_ANALYSIS_COLUMNS) -> pd.DataFrame:
    """conversations*.csv merged; an empty frame with the right columns when absent.

    Read in chunks like the requests (`analysis.chunks.iter_batches`): strings become
    categoricals, so the frame costs ~30 bytes per conversation and the read adds no
    full-size copy. (`use_cache` is accepted for symmetry; conversations need no cache.)"""
    files = sorted(p for p in path.glob(CONVERSATIONS_GLOB) if p.is_file())
    columns = [c for c in CONVERSATION_COLUMNS if c in set(columns)]
    if not files:
        return _empty(columns, CONVERSATION_TYPES)
    labels = {c: Labels() for c in columns if pa.types.is_dictionary(CONVERSATION_TYPES[c])}
    parts = Parts(estimate_rows(files))
    for f in files:
        header = _check_header(f, CONVERSATION_COLUMNS)
        for batch, row0 in iter_batches(f, header, CONVERSATION_TYPES, columns, partial(_diagnose, f, header, CONVERSATION_TYPES, columns)):
            for c in columns:
                col = batch.column(c)
                if c in labels:
                    parts.add(**{c: labels[c].codes(col).astype(np.int16)})
                elif c == "started" and col.null_count:
                    i = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
                    raise RunDataError(f, "empty value where a number is required", line=row0 + i + 2, column=c)
                else:
                    fill = 0 if pa.types.is_integer(col.type) else math.nan
                    parts.add(**{c: pc.fill_null(col, fill).to_numpy()})
    data = {}
    for c in columns:
        if c in labels:
            data[c] = pd.Categorical.from_codes(parts.take(c, np.int16), categories=labels[c].names or [""])
        else:
            data[c] = parts.take(c, CONVERSATION_TYPES[c].to_pandas_dtype())
    frame = pd.DataFrame(data)
    del data, parts
    release_memory()
    return frame


def _empty(columns: Sequence[str], types: dict) -> pd.DataFrame:
    return pa.table({c: pa.array([], type=types[c]) for c in columns}).to_pandas()


# --------------------------------------------------------------------------- CSV reading


def _read_table(f: Path, contract: Sequence[str], types: dict, columns: Sequence[str], use_cache: bool, required: Sequence[str] = REQUIRED_VALUES) -> pa.Table:
    try:
        f.stat()
    except OSError as e:
        raise RunDataError(f, f"cannot read: {e.strerror or e}") from e
    if use_cache:
        table = _read_cache(f, columns)
        if table is not None:
            return table
    header = _check_header(f, contract)
    table = _read_csv(f, header, types, columns, required)
    if use_cache and table.num_rows >= 100_000:
        # Written on a background (non-daemon) thread: Arrow releases the GIL, so the write
        # overlaps the statistics; the interpreter waits for it at exit, and the temporary
        # file + rename means a killed process never leaves a half-written cache.
        threading.Thread(target=_write_cache, args=(f, table), name="analysis-cache").start()
    return table


def _check_header(f: Path, contract: Sequence[str]) -> list[str]:
    try:
        with open(f, newline="", encoding="utf-8") as fh:
            first = fh.readline()
    except OSError as e:
        raise RunDataError(f, f"cannot read: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise RunDataError(f, "not a UTF-8 text file", line=1) from e
    if not first.strip():
        raise RunDataError(f, "the file is empty (no header row)", hint="the run wrote no data; did it start? re-run, or remove the file")
    header = next(csv.reader([first]))
    header = [h.strip().lstrip("\ufeff") for h in header]
    missing = [c for c in contract if c not in header]
    if missing:
        raise RunDataError(
            f,
            f"missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)}",
            line=1,
            column=missing[0],
            hint=f"the header must name: {', '.join(contract)}",
        )
    return header


def incomplete_tail(f: Path) -> int:
    """Bytes after the file's last newline: a final line cut short (0 when it ends whole)."""
    try:
        with open(f, "rb") as fh:
            end = pos = fh.seek(0, os.SEEK_END)
            while pos > 0:
                step = min(1 << 16, pos)
                pos -= step
                fh.seek(pos)
                i = fh.read(step).rfind(b"\n")
                if i >= 0:
                    return end - (pos + i + 1)
    except OSError:
        return 0
    return 0  # no newline at all: not even a whole header, refused by the header check


def _read_csv(f: Path, header: list[str], types: dict, columns: Sequence[str], required: Sequence[str]) -> pa.Table:
    convert = pacsv.ConvertOptions(
        column_types={c: types[c] for c in columns},
        include_columns=list(columns),
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
        null_values=[""],
    )
    read = pacsv.ReadOptions(use_threads=True, block_size=16 << 20)
    try:
        tail = incomplete_tail(f)
        if tail:  # everything up to the last whole line (memory-mapped: no copy)
            with pa.memory_map(str(f)) as mm:
                source = pa.BufferReader(mm.read_buffer(mm.size() - tail))
                table = pacsv.read_csv(source, read_options=read, convert_options=convert)
        else:
            table = pacsv.read_csv(f, read_options=read, convert_options=convert)
    except pa.ArrowInvalid as e:
        raise _diagnose(f, header, types, columns, str(e)) from None
    except OSError as e:
        raise RunDataError(f, f"cannot read: {e}") from e
    for c in required:
        if c in table.column_names and table[c].null_count:
            i = int(np.flatnonzero(table[c].is_null().to_numpy(zero_copy_only=False))[0])
            raise RunDataError(f, "empty value where a number is required", line=i + 2, column=c)
    return table


_COLUMN_ERR = re.compile(r"In CSV column #(\d+): (.*)")


def _diagnose(f: Path, header: list[str], types: dict, columns: Sequence[str], message: str) -> RunDataError:
    """Turn a pyarrow error into a RunDataError that names the line and column."""
    if "Empty CSV file" in message:
        return RunDataError(f, "the file is empty (no header row)")
    m = _COLUMN_ERR.search(message)
    if m:
        idx = int(m.group(1))
        col = header[idx] if idx < len(header) else f"#{idx}"
        ty = types.get(col)
        try:  # re-read that one column as text and find the first value that does not convert
            raw = pacsv.read_csv(f, convert_options=pacsv.ConvertOptions(include_columns=[col], column_types={col: pa.string()}))[col]
            vals = raw.to_pandas()
            if ty is not None and (pa.types.is_floating(ty) or pa.types.is_integer(ty)):
                num = pd.to_numeric(vals.where(vals != "", "0"), errors="coerce")
                bad = num.isna().to_numpy(copy=True)
                if pa.types.is_integer(ty):
                    bad = bad | (num.fillna(0) % 1 != 0).to_numpy()
                if bad.any():
                    i = int(np.flatnonzero(bad)[0])
                    kind = "an integer" if pa.types.is_integer(ty) else "a number"
                    return RunDataError(f, f"expected {kind}, got {vals.iloc[i]!r}", line=i + 2, column=col)
        except (pa.ArrowInvalid, ValueError, TypeError):
            pass
        return RunDataError(f, m.group(2), column=col)
    if "CSV parse error" in message:
        bad_rows: list = []

        def handler(row: pacsv.InvalidRow) -> str:
            bad_rows.append(row)
            return "error"

        try:
            pacsv.read_csv(
                f,
                read_options=pacsv.ReadOptions(use_threads=False),
                parse_options=pacsv.ParseOptions(invalid_row_handler=handler),
                convert_options=pacsv.ConvertOptions(include_columns=[header[0]], column_types={header[0]: pa.string()}),
            )
        except pa.ArrowInvalid:
            pass
        if bad_rows:
            row = bad_rows[0]
            return RunDataError(
                f, f"expected {row.expected_columns} fields, got {row.actual_columns}", line=row.number, hint="a truncated or hand-edited line?"
            )
        return RunDataError(f, message.split(":", 1)[-1].strip()[:200])
    return RunDataError(f, message[:300])


# --------------------------------------------------------------------------- Arrow cache


def _read_cache(f: Path, columns: Sequence[str]) -> pa.Table | None:
    batches = cached_batches(f, columns)
    if batches is None:
        return None
    try:
        return pa.Table.from_batches(list(batches))
    except Exception:  # a broken cache is just ignored
        return None


def _write_cache(f: Path, table: pa.Table) -> None:
    writer = CacheWriter(f, table.schema)
    for b in table.to_batches(max_chunksize=1 << 20):
        writer.write(b)
    writer.commit()


def did_not_finish(meta: dict) -> str | None:
    """Why a run whose run.json says `starting`/`running` is in fact over: the process that
    owned it (`pid` on `host`) is gone, killed before it could say so. None when the run
    may still be going, or cannot be checked from here (another host, no pid recorded)."""
    status, pid, host = meta.get("status"), meta.get("pid"), meta.get("host")
    if status not in ("starting", "running") or not isinstance(pid, int):
        return None
    if host and host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
        alive = True
    except ProcessLookupError:
        alive = False
    except PermissionError:  # another user's process: its command line tells
        alive = True
    if alive:  # a recycled pid is not the run's: the run's was loadtest or Locust
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            alive = b"loadtest" in cmdline or b"locust" in cmdline
        except OSError:
            pass  # no /proc here: trust the pid
    if alive:
        return None
    return (
        f"run.json says {status}, but its process (pid {pid}) is gone: the run did not finish (killed?), and the data covers only what was recorded until then"
    )
