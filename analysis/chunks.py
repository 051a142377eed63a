"""Read requests CSVs in chunks into the compact columns exact statistics need.

    from analysis.chunks import read_requests
    rq = read_requests(files, start=t0, cut=t0 + warmup_s)
    rq.ok_lat, rq.ok_combo, rq.ok_sec, rq.ok_turn     # one entry per successful request
    rq.fail_*                                         # one entry per failed request
    rq.created, rq.orphans                            # per (region, variant, endpoint) combo

Why: a report over 100M rows must not hold 100M rows of every column. Exact percentiles
need each group's latencies, nothing else, so a successful request is kept as 9 bytes:
its latency in integer microseconds (uint32: the recorder writes 3 decimals, so nothing is
lost, and values up to 71 minutes fit), a small code for its region × variant × endpoint
(`combos`), its second since the window start (time series; uint16 while the run is under
18 h) and its turn (uint8). Failed requests keep their status, kind and message codes.
Conversation ids are reduced to 64-bit hashes on the fly (successful creates and closes
only) and turned into per-combo orphan counts at the end, then dropped.

How: each file is cut into ~16 MB ranges at line ends outside quoted fields (an error
message may hold a newline), two threads parse ranges with pyarrow (the GIL is released)
while this thread reduces the previous one, so parsing and reduction overlap on two cores
and memory holds a few ranges, whatever the file size. `chunk_rows` cuts ranges further
(tests use 1 row) without changing any result. Bad data raises `RunDataError` naming the
file, line and column, as `analysis.load` always did.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import math
import os
import queue
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

#: Bytes of CSV text parsed at once (~110k request rows).
RANGE_BYTES = 16 << 20
#: Distinct raw error messages kept apart; the rest share one label (bounded memory).
MAX_MESSAGES = 200_000
OTHER_MESSAGES = "(other messages)"
#: Largest latency that fits: uint32 microseconds, about 71.6 minutes.
MAX_LATENCY_US = 2**32 - 1


class Labels:
    """Strings ↔ small integer codes, in first-seen order."""

    def __init__(self, limit: int | None = None, other: str = ""):
        self.names: list[str] = []
        self.index: dict[str, int] = {}
        self.limit, self.other = limit, other

    def code(self, s: str) -> int:
        c = self.index.get(s)
        if c is None:
            if self.limit is not None and len(self.names) >= self.limit:
                return self.code(self.other) if s != self.other else self._add(s)
            c = self._add(s)
        return c

    def _add(self, s: str) -> int:
        self.index[s] = len(self.names)
        self.names.append(s)
        return self.index[s]

    def codes(self, arr: pa.Array) -> np.ndarray:
        """Codes of a (dictionary or string) Arrow array, row by row (int32)."""
        if not pa.types.is_dictionary(arr.type):
            arr = pc.dictionary_encode(arr)
        lut = np.array([self.code(s) for s in arr.dictionary.to_pylist()] + [-1], dtype=np.int32)
        idx = arr.indices.to_numpy(zero_copy_only=False)
        return lut[idx]


def id_hashes(arr: pa.Array) -> np.ndarray:
    """64-bit hashes of the strings of an Arrow string array, computed with numpy on the raw
    bytes (ids of any length, the length mixed in). Far cheaper than a set of millions of
    Python strings; a collision between two distinct ids is ~1e-7 likely for 2M ids and
    would only hide one orphan.

    Each string is read as little-endian 8-byte words straight from Arrow's data buffer
    (a uint64 view with a 1-byte stride: a word may start at any byte), the bytes past its
    end masked to zero, so a string hashes the same whatever the other strings' lengths
    (~90 ns an id; a per-byte gather into a padded matrix cost ~490 when lengths mixed)."""
    n = len(arr)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if arr.type == pa.large_string():
        arr = arr.cast(pa.string())
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int32, count=n + 1, offset=arr.offset * 4).astype(np.int64)
    lengths = np.diff(offsets)
    lo, hi = int(offsets[0]), int(offsets[-1])
    data = np.zeros(hi - lo + 8, dtype=np.uint8)  # 8 spare bytes: the last word may read past the end
    if hi > lo:
        data[: hi - lo] = np.frombuffer(bufs[2], dtype=np.uint8, count=hi - lo, offset=lo)
    words = np.ndarray(shape=(hi - lo + 1,), dtype="<u8", buffer=data, strides=(1,))
    starts = offsets[:-1] - lo
    h = np.full(n, 0xCBF29CE484222325, dtype=np.uint64) ^ lengths.astype(np.uint64)
    prime = np.uint64(0x100000001B3)
    ones = np.uint64(2**64 - 1)
    with np.errstate(over="ignore"):
        for j in range(-(-int(lengths.max()) // 8)):  # a string mixes its own words only
            left = lengths - 8 * j  # its bytes from this word on
            live = left > 0
            w = words[np.minimum(starts + 8 * j, hi - lo)]
            if (left < 8).any():  # keep only the string's own bytes (a live word holds 1–8)
                w &= ones >> (8 * (8 - np.clip(left, 1, 8))).astype(np.uint64)
            x = h ^ w
            x *= prime
            x ^= x >> np.uint64(29)
            h = x if live.all() else np.where(live, x, h)
    return h


def _libc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        return None


_MALLOC_TRIM = _libc_trim()


def release_memory() -> None:
    """Hand memory freed by a reading phase back to the operating system.

    Parsing leaves freed blocks in the allocators' pools (pyarrow's, and glibc's heap
    fragmented by per-batch arrays); they count in the resident size, in proportion to the
    file, and the next phase's peak adds to them (measured: ~40 → ~20 MiB of peak RSS per
    million request rows). Costs a few milliseconds; a no-op where there is no glibc."""
    pa.default_memory_pool().release_unused()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


# --------------------------------------------------------------------------- CSV ranges


def _ranges(f: Path, range_bytes: int) -> Iterator[bytes]:
    """The file after its header line, in pieces that end at a line end outside quotes."""
    with open(f, "rb") as fh:
        fh.readline()
        rest = b""  # a range always starts outside quotes: it starts where the last one ended
        while True:
            block = fh.read(range_bytes)
            if not block:  # `rest` has no line end: an incomplete last line (a crash or a
                return  # full disk cut it; the recorder writes whole lines), skipped
            data = rest + block if rest else block
            cut = data.rfind(b"\n") + 1
            if cut and data.find(b'"', 0, cut) >= 0:
                # an odd number of quotes before the cut: that newline is inside a quoted field
                quotes = int(np.count_nonzero(np.frombuffer(data, dtype=np.uint8, count=cut) == 34))
                while cut and quotes & 1:
                    prev = data.rfind(b"\n", 0, cut - 1) + 1
                    quotes -= data.count(b'"', prev, cut)
                    cut = prev
            if not cut:  # no usable line end yet: read more
                rest = data
                continue
            yield data[:cut]
            rest = data[cut:]


def iter_batches(
    f: Path,
    header: list[str],
    types: dict,
    columns: Sequence[str],
    on_error: Callable[[str], Exception],
    range_bytes: int | None = None,
    chunk_rows: int | None = None,
) -> Iterator[tuple[pa.RecordBatch, int]]:
    """(record batch, index of its first data row in the file), in file order.

    Two threads parse ranges ahead of the caller. A pyarrow parse error is passed to
    `on_error`, whose exception is raised (it names the line and column)."""
    convert = pacsv.ConvertOptions(
        column_types={c: types[c] for c in columns},
        include_columns=list(columns),
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
        null_values=[""],
    )
    read = pacsv.ReadOptions(column_names=header, use_threads=False, block_size=4 << 20)

    def parse(data: bytes) -> pa.Table:
        return pacsv.read_csv(pa.py_buffer(data), read_options=read, convert_options=convert)

    row0 = 0
    futures: queue.Queue = queue.Queue(maxsize=3)  # parsed ranges in flight: bounded memory
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="analysis-parse") as pool:

        def produce() -> None:  # cutting ranges (a pass over the bytes) overlaps the reduction
            try:
                for data in _ranges(f, range_bytes or RANGE_BYTES):
                    fut = pool.submit(parse, data)
                    while not stop.is_set():
                        try:
                            futures.put(fut, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
            except OSError as e:
                futures.put(e)
                return
            futures.put(None)

        producer = threading.Thread(target=produce, name="analysis-ranges", daemon=True)
        producer.start()
        try:
            while (fut := futures.get()) is not None:
                if isinstance(fut, OSError):
                    raise fut
                try:
                    table = fut.result()
                except pa.ArrowInvalid as e:
                    raise on_error(str(e)) from None
                for batch in table.to_batches():
                    step = chunk_rows or batch.num_rows
                    for i in range(0, batch.num_rows, max(step, 1)):
                        piece = batch.slice(i, step) if step < batch.num_rows else batch
                        yield piece, row0
                        row0 += piece.num_rows
        finally:
            stop.set()
            while producer.is_alive():
                try:
                    futures.get(timeout=0.1)
                except queue.Empty:
                    pass
            producer.join()


# --------------------------------------------------------------------------- Arrow cache

#: Bump when the cached columns or their types change.
CACHE_VERSION = 4
#: CSVs smaller than this are parsed again rather than cached.
CACHE_MIN_BYTES = 8 << 20


def cache_path(f: Path) -> Path:
    return f.with_name(f".{f.name}.cache.arrow")


def parsed_before(f: Path) -> bool:
    """Whether an earlier read of this very CSV (same size and mtime) left its mark: the
    cache is only worth writing for a file that is read again (`read_requests`)."""
    try:
        with pa.OSFile(str(cache_path(f)), "rb") as source:
            meta = pa.ipc.open_stream(source).schema.metadata or {}
        return bool(json.loads(meta.get(b"analysis_cache", b"{}")) == {**_cache_key(f), "parsed": True})
    except Exception:
        return False


def _cache_key(f: Path) -> dict:
    st = f.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "version": CACHE_VERSION}


def cached_batches(f: Path, columns: Sequence[str]) -> Iterator[pa.RecordBatch] | None:
    """The parsed columns of `f` from the cache beside it, if it matches the CSV's size and
    mtime and holds `columns`; None otherwise (the cache is never needed for correctness)."""
    cache = cache_path(f)
    try:
        if not cache.exists():
            return None
        # read, not memory-mapped: a map's pages stay resident as the batches are reduced, so
        # a 100M-row cache (6.7 GB) held 9 GiB of RSS; read batch by batch, memory stays flat
        source = pa.OSFile(str(cache), "rb")
        reader = pa.ipc.open_stream(source)
        meta = reader.schema.metadata or {}
        if json.loads(meta.get(b"analysis_cache", b"{}")) != _cache_key(f) or any(c not in reader.schema.names for c in columns):
            source.close()
            return None
    except Exception:  # a stale or broken cache is just ignored
        return None

    def batches() -> Iterator[pa.RecordBatch]:
        with source:
            for b in reader:
                yield b.select(list(columns))

    return batches()


class CacheWriter:
    """Writes the parsed batches of a CSV beside it as an Arrow IPC stream (dictionaries may
    change between batches), to a temporary file renamed on `commit`: a killed process or
    a data error never leaves a half-written cache. Best effort: a read-only folder or a
    full disk only costs the next report a CSV parse."""

    def __init__(self, f: Path, schema: pa.Schema, mark_only: bool = False):
        """mark_only: no batches, only a mark that `f` was parsed (see `parsed_before`)."""
        self.cache, self.tmp, self.writer = cache_path(f), None, None
        try:
            key = {**_cache_key(f), "parsed": True} if mark_only else _cache_key(f)
            fd, self.tmp = tempfile.mkstemp(prefix=self.cache.name, suffix=".tmp", dir=self.cache.parent)
            os.close(fd)
            self.sink = pa.OSFile(self.tmp, "wb")
            self.writer = pa.ipc.new_stream(self.sink, schema.with_metadata({"analysis_cache": json.dumps(key)}))
        except Exception:
            self.abort()

    def write(self, batch: pa.RecordBatch) -> None:
        if self.writer is not None:
            try:
                self.writer.write_batch(batch)
            except Exception:
                self.abort()

    def commit(self) -> None:
        if self.writer is None:
            return
        try:
            self.writer.close()
            self.sink.close()
            assert self.tmp is not None
            os.chmod(self.tmp, 0o644)
            os.replace(self.tmp, self.cache)
            self.tmp = None
        except Exception:
            pass
        self.abort()

    def abort(self) -> None:
        self.writer = None
        if self.tmp and os.path.exists(self.tmp):
            os.unlink(self.tmp)
        self.tmp = None


# --------------------------------------------------------------------------- compact requests


def _narrow(a: np.ndarray) -> np.ndarray:
    """uint16 when the values allow, else uint32."""
    return a.astype(np.uint16) if not len(a) or int(a.max()) < 2**16 else a.astype(np.uint32)


@dataclass
class CompactRequests:
    """The requests of a run, reduced to what the statistics need (see the module doc)."""

    regions: list[str]
    variants: list[str]
    endpoints: list[str]
    #: per combo: region, variant, endpoint codes (into the lists above)
    combo_r: np.ndarray
    combo_v: np.ndarray
    combo_e: np.ndarray
    ok_lat: np.ndarray  # uint32 µs
    ok_combo: np.ndarray  # uint16
    ok_sec: np.ndarray  # uint16/uint32 whole seconds since `start`
    ok_turn: np.ndarray  # uint8 (0 for none, capped at 255)
    fail_lat: np.ndarray  # float64 ms
    fail_combo: np.ndarray
    fail_sec: np.ndarray
    fail_status: np.ndarray  # int32
    fail_kind: np.ndarray  # int32 into kinds
    fail_err: np.ndarray  # int32 into messages
    kinds: list[str]
    messages: list[str]
    created: np.ndarray  # per combo: successful creates with a conversation id
    orphans: np.ndarray  # per combo: ... of which no successful close was seen
    start: float  # time origin of ok_sec / fail_sec
    first_ts: float = math.nan  # over every row, before any warm-up cut
    last_end: float = math.nan  # max(timestamp + latency) over every row
    rows: int = 0  # rows kept (after the warm-up cut)

    def __len__(self) -> int:
        return self.rows

    @property
    def ncombos(self) -> int:
        return len(self.combo_r)

    def nbytes(self) -> int:
        return sum(v.nbytes for v in vars(self).values() if isinstance(v, np.ndarray))


class Parts:
    """Growing columns in buffers sized for the whole file up front: virtual memory only
    (pages are touched as rows arrive), so there is no concatenation at the end and no
    heap full of freed chunk arrays (which would count in the peak RSS)."""

    def __init__(self, capacity: int):
        self.capacity = max(int(capacity), 1024)
        self.bufs: dict[str, np.ndarray] = {}
        self.sizes: dict[str, int] = {}

    def add(self, **arrays: np.ndarray) -> None:
        for k, v in arrays.items():
            buf, n = self.bufs.get(k), self.sizes.get(k, 0)
            if buf is None or n + len(v) > len(buf) or not np.can_cast(v.dtype, buf.dtype):
                dtype = v.dtype if buf is None else np.promote_types(buf.dtype, v.dtype)
                size = self.capacity if buf is None else max(len(buf), int((n + len(v)) * 1.5))
                grown = np.empty(size, dtype=dtype)
                if buf is not None:
                    grown[:n] = buf[:n]
                self.bufs[k] = buf = grown
            buf[n : n + len(v)] = v
            self.sizes[k] = n + len(v)

    def take(self, k: str, dtype: npt.DTypeLike) -> np.ndarray:
        buf = self.bufs.pop(k, None)
        return buf[: self.sizes[k]] if buf is not None else np.zeros(0, dtype=dtype)


def estimate_rows(files: Sequence[Path]) -> int:
    """About how many rows the files hold, from the line length at the start of the first."""
    total = sum(f.stat().st_size for f in files)
    with open(files[0], "rb") as fh:
        head = fh.read(1 << 20)
    lines = max(head.count(b"\n"), 1)
    return int(total / (len(head) / lines) * 1.2) + 1024


class _Reducer:
    def __init__(self, start: float, cut: float, capacity: int):
        self.start, self.cut = start, cut
        self.regions, self.variants, self.endpoints = Labels(), Labels(), Labels()
        self.kinds = Labels()
        self.messages = Labels(MAX_MESSAGES, OTHER_MESSAGES)
        self.lut = np.full((4, 4, 4), -1, dtype=np.int32)
        self.combos: list[tuple[int, int, int]] = []
        self.parts = Parts(capacity)
        self.first_ts, self.last_end, self.rows = math.inf, -math.inf, 0

    def _combo_codes(self, r: np.ndarray, v: np.ndarray, e: np.ndarray, on_overflow: Callable[[], Exception]) -> np.ndarray:
        need = (int(r.max()) + 1, int(v.max()) + 1, int(e.max()) + 1)
        if any(n > s for n, s in zip(need, self.lut.shape)):
            grown = np.full([max(n * 2, s) for n, s in zip(need, self.lut.shape)], -1, dtype=np.int32)
            grown[tuple(slice(0, s) for s in self.lut.shape)] = self.lut
            self.lut = grown
        c = self.lut[r, v, e]
        if (c < 0).any():
            for rr, vv, ee in np.unique(np.stack([r[c < 0], v[c < 0], e[c < 0]], axis=1), axis=0):
                self.lut[rr, vv, ee] = len(self.combos)
                self.combos.append((int(rr), int(vv), int(ee)))
            if len(self.combos) > 2**16:
                raise on_overflow()
            c = self.lut[r, v, e]
        return c.astype(np.uint16)

    def absorb(self, b: pa.RecordBatch, row0: int, fail: Callable[[str, int, str], Exception]) -> None:
        n = b.num_rows
        if not n:
            return
        col = {name: b.column(i) for i, name in enumerate(b.schema.names)}
        for c in ("timestamp", "response_time_ms", "ok"):
            if col[c].null_count:
                i = int(np.flatnonzero(col[c].is_null().to_numpy(zero_copy_only=False))[0])
                raise fail("empty value where a number is required", row0 + i, c)
        ts = col["timestamp"].to_numpy()
        rt = col["response_time_ms"].to_numpy()
        ok = col["ok"].to_numpy()
        bad = (ok != 0) & (ok != 1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise fail(f"'ok' must be 0 or 1, got {int(ok[i])}", row0 + i, "ok")
        us = np.rint(rt * 1000.0)
        bad = ~np.isfinite(rt) | (rt < 0) | (us > MAX_LATENCY_US)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            what = "a finite number ≥ 0" if not (np.isfinite(rt[i]) and rt[i] >= 0) else "at most 71 minutes"
            raise fail(f"latency must be {what}, got {rt[i]!r}", row0 + i, "response_time_ms")
        self.first_ts = min(self.first_ts, float(ts.min()))
        self.last_end = max(self.last_end, float((ts + rt / 1000.0).max()))
        keep = ts >= self.cut if math.isfinite(self.cut) else None
        if keep is not None and not keep.all():
            if not keep.any():
                return
            idx = np.flatnonzero(keep)
            b = b.take(pa.array(idx))
            col = {name: b.column(i) for i, name in enumerate(b.schema.names)}
            ts, rt, ok, us = ts[idx], rt[idx], ok[idx], us[idx]
        self.rows += len(ts)
        r = self.regions.codes(col["region"])
        v = self.variants.codes(col["variant"])
        e = self.endpoints.codes(col["endpoint"])
        combo = self._combo_codes(r, v, e, lambda: fail("more than 65,536 region × variant × endpoint combinations", row0, "region"))
        sec = np.floor(ts - self.start)
        np.clip(sec, 0, 2**32 - 1, out=sec)
        okm = ok == 1
        turn = pc.fill_null(col["turn"], -1).to_numpy()
        self.parts.add(ok_lat=us[okm].astype(np.uint32), ok_combo=combo[okm], ok_sec=_narrow(sec[okm]), ok_turn=np.clip(turn[okm], 0, 255).astype(np.uint8))
        if not okm.all():
            fm = ~okm
            fmask = pa.array(fm)
            status = pc.fill_null(col["status"], 0).to_numpy()[fm]
            kinds = self.kinds.codes(pc.filter(col["error_kind"], fmask))
            errs = self.messages.codes(pc.filter(col["error"], fmask))
            self.parts.add(
                fail_lat=rt[fm], fail_combo=combo[fm], fail_sec=_narrow(sec[fm]), fail_status=status.astype(np.int32), fail_kind=kinds, fail_err=errs
            )
        self._ids(col["conversation_id"], e, okm, combo)

    def _ids(self, ids: pa.Array, e: np.ndarray, okm: np.ndarray, combo: np.ndarray) -> None:
        ce, xe = self.endpoints.index.get("create"), self.endpoints.index.get("close")
        if ce is not None:
            m = okm & (e == ce)
            if m.any():
                got = pc.filter(ids, pa.array(m))
                has = pc.not_equal(got, "").to_numpy(zero_copy_only=False)
                if has.any():
                    got = pc.filter(got, pa.array(has)) if not has.all() else got
                    self.parts.add(create_hash=id_hashes(got), create_combo=combo[m][has])
        if xe is not None:
            m = okm & (e == xe)
            if m.any():
                self.parts.add(close_hash=id_hashes(pc.filter(ids, pa.array(m))))

    def finish(self) -> CompactRequests:
        p = self.parts
        ncombo = len(self.combos)
        created = np.zeros(ncombo, dtype=np.int64)
        orphans = np.zeros(ncombo, dtype=np.int64)
        ch = p.take("create_hash", np.uint64)
        cc = p.take("create_combo", np.uint16)
        xh = p.take("close_hash", np.uint64)
        if len(ch):
            created = np.bincount(cc, minlength=ncombo).astype(np.int64)
            xh.sort()
            step = 1 << 20  # temporaries of one slice of creates at a time
            for i in range(0, len(ch), step):
                # looked up in hash order: the binary searches then walk the closes in
                # order (cache hits) instead of jumping at random (18 M creates: 24 → 2 s)
                order = np.argsort(ch[i : i + step])
                h, c = ch[i : i + step][order], cc[i : i + step][order]
                del order
                if len(xh):
                    pos = np.searchsorted(xh, h)
                    np.minimum(pos, len(xh) - 1, out=pos)
                    open_ = xh[pos] != h
                else:
                    open_ = np.ones(len(h), dtype=bool)
                orphans += np.bincount(c[open_], minlength=ncombo)[:ncombo]
        del ch, cc, xh
        combos = np.array(self.combos, dtype=np.int32).reshape(-1, 3)
        return CompactRequests(
            regions=self.regions.names,
            variants=self.variants.names,
            endpoints=self.endpoints.names,
            combo_r=combos[:, 0],
            combo_v=combos[:, 1],
            combo_e=combos[:, 2],
            ok_lat=p.take("ok_lat", np.uint32),
            ok_combo=p.take("ok_combo", np.uint16),
            ok_sec=p.take("ok_sec", np.uint16),
            ok_turn=p.take("ok_turn", np.uint8),
            fail_lat=p.take("fail_lat", np.float64),
            fail_combo=p.take("fail_combo", np.uint16),
            fail_sec=p.take("fail_sec", np.uint16),
            fail_status=p.take("fail_status", np.int32),
            fail_kind=p.take("fail_kind", np.int32),
            fail_err=p.take("fail_err", np.int32),
            kinds=self.kinds.names,
            messages=self.messages.names,
            created=created,
            orphans=orphans,
            start=self.start,
            first_ts=self.first_ts if math.isfinite(self.first_ts) else math.nan,
            last_end=self.last_end if math.isfinite(self.last_end) else math.nan,
            rows=self.rows,
        )


def read_requests(
    files: Sequence[tuple[Path, list[str]]],
    types: dict,
    columns: Sequence[str],
    start: float,
    cut: float,
    diagnose: Callable[[Path, str], Exception],
    fail: Callable[[Path, str, int, str], Exception],
    chunk_rows: int | None = None,
    range_bytes: int | None = None,
    use_cache: bool = False,
) -> CompactRequests:
    """Reduce requests CSVs (with their checked headers) to `CompactRequests`.

    start: the time origin of the per-row seconds; cut: rows that start before it are left
    out (the warm-up; -inf for none). diagnose(file, arrow message) and fail(file, problem,
    data row index, column) build the errors raised on bad data. With `use_cache`, parsed
    columns are read from (or written to) the Arrow cache beside each CSV."""
    red = _Reducer(start, cut, estimate_rows([f for f, _ in files]))
    for f, header in files:
        cached = cached_batches(f, columns) if use_cache else None
        writer = None
        if cached is not None:
            source = _numbered(cached)
        else:
            source = iter_batches(f, header, types, columns, partial(diagnose, f), range_bytes, chunk_rows)
            if use_cache and f.stat().st_size >= CACHE_MIN_BYTES:
                # The cache is written on the second parse of a file, not the first: most
                # runs are reported once (at their end), and writing it costs that report
                # ~15 % of its time (10 M rows: 0.77 GB to disk) and the disk 0.6× the CSV.
                schema = pa.schema([(c, types[c]) for c in columns])
                if parsed_before(f):
                    writer = CacheWriter(f, schema)
                else:
                    CacheWriter(f, schema, mark_only=True).commit()
        try:
            for batch, row0 in source:
                red.absorb(batch, row0, partial(fail, f))
                if writer is not None:
                    writer.write(batch)
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        if writer is not None:
            writer.commit()
    compact = red.finish()
    release_memory()
    return compact


def _numbered(batches: Iterator[pa.RecordBatch]) -> Iterator[tuple[pa.RecordBatch, int]]:
    row0 = 0
    for b in batches:
        yield b, row0
        row0 += b.num_rows
