"""Reading a run folder while Locust still writes it: only complete rows, only new bytes.

`CsvTail` parses the rows appended to growing CSV files since the last read; `RunTail` keeps
a run folder's requests, conversations and arrivals (open model), typed by the column tables
`analysis.load` reads whole files with (`analysis.columns.typed_text`), and drops what was
already judged. Used while a run goes on by the capacity search (each step as it ends) and
the live SLO watcher (`loadtest.abort`, a trailing window).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from analysis import records
from analysis.columns import ARRIVAL_TYPES, CONVERSATION_TYPES, REQUEST_TYPES, REQUIRED_VALUES, typed_text


class CsvTail:
    """The complete rows appended so far to growing CSV files (e.g. requests*.csv of a run).

    Each call to `read()` parses only the bytes added since the last one, up to the last line
    end that is outside a quoted field, so a row being written is never half-read.
    """

    def __init__(self, folder: Path, pattern: str, columns: Sequence[str]):
        self.folder, self.pattern, self.columns = Path(folder), pattern, list(columns)
        self._offsets: dict[Path, int] = {}
        self._headers: dict[Path, list[str]] = {}

    def read(self) -> pd.DataFrame | None:
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
                data = data[end + 1 :]
            cut = records.complete_rows(data)
            if cut == 0:
                continue
            frame = pd.read_csv(
                io.BytesIO(data[:cut]),
                header=None,
                names=self._headers[f],
                usecols=lambda c: c in self.columns,
                keep_default_na=False,
                na_values=[""],
                dtype=str,
                engine="c",
            )
            self._offsets[f] = offset + cut
            frames.append(frame)
        if not frames:
            return None
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


REQUEST_READ_COLUMNS = ("timestamp", "region", "variant", "endpoint", "response_time_ms", "status", "ok", "error_kind", "conversation_id")


class RunTail:
    """requests, conversations (and arrivals, open model) of one growing run folder, typed
    as `analysis.load` types whole files."""

    def __init__(self, run_dir: Path):
        self.requests_tail = CsvTail(run_dir, records.REQUESTS_GLOB, REQUEST_READ_COLUMNS)
        self.conversations_tail = CsvTail(run_dir, records.CONVERSATIONS_GLOB, records.CONVERSATION_COLUMNS)
        self.arrivals_tail = CsvTail(run_dir, records.ARRIVALS_GLOB, records.ARRIVAL_COLUMNS)
        self.requests: pd.DataFrame | None = None
        self.conversations: pd.DataFrame | None = None
        self.arrivals: pd.DataFrame | None = None

    def read(self) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
        new = self.requests_tail.read()
        if new is not None and len(new):
            new = typed_text(new, REQUEST_TYPES, REQUIRED_VALUES)
            self.requests = new if self.requests is None else pd.concat([self.requests, new], ignore_index=True)
        new = self.conversations_tail.read()
        if new is not None and len(new):
            new = typed_text(new, CONVERSATION_TYPES)
            self.conversations = new if self.conversations is None else pd.concat([self.conversations, new], ignore_index=True)
        new = self.arrivals_tail.read()
        if new is not None and len(new):
            new = typed_text(new, ARRIVAL_TYPES, ["planned"])
            self.arrivals = new if self.arrivals is None else pd.concat([self.arrivals, new], ignore_index=True)
        return self.requests, self.conversations

    def forget_before(self, t: float) -> None:
        """Drop rows that ended before t (already judged)."""
        if self.requests is not None:
            end = self.requests["timestamp"] + self.requests["response_time_ms"] / 1000.0
            self.requests = self.requests[end.to_numpy() >= t].reset_index(drop=True)
        if self.conversations is not None:
            self.conversations = self.conversations[self.conversations["ended"].to_numpy() >= t].reset_index(drop=True)
        if self.arrivals is not None:
            self.arrivals = self.arrivals[self.arrivals["planned"].to_numpy() >= t].reset_index(drop=True)
