"""Reading a run folder while Locust still writes it: only complete rows, only new bytes.

`CsvTail` parses the rows appended to growing CSV files since the last read; `RunTail` keeps
a run folder's requests, conversations and arrivals (open model) typed like `analysis.load`,
and drops what was already judged. Used while a run goes on by the capacity search (each
step as it ends) and the live SLO watcher (`loadtest.abort`, a trailing window).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from analysis import records


class CsvTail:
    """The complete rows appended so far to growing CSV files (e.g. requests*.csv of a run).

    Each call to `read()` parses only the bytes added since the last one, up to the last line
    end that is outside a quoted field, so a row being written is never half-read.
    """

    def __init__(self, folder: Path, pattern: str, columns: Sequence[str]):
        self.folder, self.pattern, self.columns = Path(folder), pattern, list(columns)
        self._offsets: dict[Path, int] = {}
        self._headers: dict[Path, list[str]] = {}

    def read(self):
        import pandas as pd

        frames = []
        for f in sorted(self.folder.glob(self.pattern)):
            offset = self._offsets.get(f, 0)
            try:
                with open(f, "rb") as fh:
                    fh.seek(offset)
                    data = fh.read()
            except OSError:
                continue
            if f not in self._headers:
                end = data.find(b"\n")
                if end < 0:
                    continue
                self._headers[f] = next(csv.reader([data[:end].decode("utf-8").strip()]))
                offset += end + 1
                data = data[end + 1:]
            cut = records.complete_rows(data)
            if cut == 0:
                continue
            frame = pd.read_csv(io.BytesIO(data[:cut]), header=None, names=self._headers[f],
                                usecols=lambda c: c in self.columns, keep_default_na=False,
                                na_values=[""], dtype=str, engine="c")
            self._offsets[f] = offset + cut
            frames.append(frame)
        if not frames:
            return None
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def _typed_requests(df):
    import pandas as pd

    out = pd.DataFrame({
        "timestamp": pd.to_numeric(df["timestamp"], errors="coerce"),
        "region": df["region"].fillna("").astype(str),
        "variant": df["variant"].fillna("").astype(str),
        "endpoint": df["endpoint"].fillna("").astype(str),
        "response_time_ms": pd.to_numeric(df["response_time_ms"], errors="coerce"),
        "status": pd.to_numeric(df["status"], errors="coerce").fillna(0).astype(int),
        "ok": pd.to_numeric(df["ok"], errors="coerce").fillna(0).astype(int),
        "error_kind": df["error_kind"].fillna("").astype(str),
        "conversation_id": df["conversation_id"].fillna("").astype(str),
    })
    return out.dropna(subset=["timestamp", "response_time_ms"])


def _typed_conversations(df):
    import pandas as pd

    out = pd.DataFrame({c: df[c] for c in records.CONVERSATION_COLUMNS})
    for c in ("started", "ended", "duration_s"):
        out[c] = pd.to_numeric(out[c], errors="coerce")
    for c in ("turns", "ok"):
        out[c] = pd.to_numeric(out[c], errors="coerce").fillna(0).astype(int)
    return out


REQUEST_READ_COLUMNS = ("timestamp", "region", "variant", "endpoint", "response_time_ms",
                        "status", "ok", "error_kind", "conversation_id")


def _typed_arrivals(df):
    import pandas as pd

    return pd.DataFrame({
        "planned": pd.to_numeric(df["planned"], errors="coerce"),
        "lag_ms": pd.to_numeric(df["lag_ms"], errors="coerce"),
        "dropped": pd.to_numeric(df["dropped"], errors="coerce").fillna(0).astype(int),
    }).dropna(subset=["planned"])


class RunTail:
    """requests, conversations (and arrivals, open model) of one growing run folder, typed
    like `analysis.load`."""

    def __init__(self, run_dir: Path):
        self.requests_tail = CsvTail(run_dir, records.REQUESTS_GLOB, REQUEST_READ_COLUMNS)
        self.conversations_tail = CsvTail(run_dir, records.CONVERSATIONS_GLOB,
                                          records.CONVERSATION_COLUMNS)
        self.arrivals_tail = CsvTail(run_dir, records.ARRIVALS_GLOB, records.ARRIVAL_COLUMNS)
        self.requests = None
        self.conversations = None
        self.arrivals = None

    def read(self):
        import pandas as pd

        new = self.requests_tail.read()
        if new is not None and len(new):
            new = _typed_requests(new)
            self.requests = new if self.requests is None else pd.concat([self.requests, new],
                                                                         ignore_index=True)
        new = self.conversations_tail.read()
        if new is not None and len(new):
            new = _typed_conversations(new)
            self.conversations = new if self.conversations is None else pd.concat(
                [self.conversations, new], ignore_index=True)
        new = self.arrivals_tail.read()
        if new is not None and len(new):
            new = _typed_arrivals(new)
            self.arrivals = new if self.arrivals is None else pd.concat([self.arrivals, new],
                                                                         ignore_index=True)
        return self.requests, self.conversations

    def forget_before(self, t: float) -> None:
        """Drop rows that ended before t (already judged)."""
        if self.requests is not None:
            end = self.requests["timestamp"] + self.requests["response_time_ms"] / 1000.0
            self.requests = self.requests[end.to_numpy() >= t].reset_index(drop=True)
        if self.conversations is not None:
            self.conversations = self.conversations[
                self.conversations["ended"].to_numpy() >= t].reset_index(drop=True)
        if self.arrivals is not None:
            self.arrivals = self.arrivals[self.arrivals["planned"].to_numpy() >= t].reset_index(drop=True)
