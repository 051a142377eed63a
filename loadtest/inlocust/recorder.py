"""Writes requests.csv, conversations.csv and (HTTPS targets) connections.csv as the run goes.

Rows are gathered in `RowFile`s (`open_csv`) which a background greenlet flushes every
second, so a run that is killed loses at most about a second of rows, and the files only ever
hold whole rows. When a write fails (a full disk), recording stops, the rows already written
stay, and `on_failure` is called once with the `runfolder.WriteFailed`. Columns: see
`records.py`. On a
worker of a distributed run the same rows go, line by line, to the outbox that ships them to
the master (`loadtest.inlocust.fleet`) instead of to files.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import gevent

from analysis import records
from loadtest.rowfile import RowFile
from loadtest.runfolder import WriteFailed

FLUSH_INTERVAL_S = 1.0
# A successful row: ok=1, no error_kind, no error (columns as in records.REQUEST_COLUMNS).
_OK_ROW = "%.6f,%s,%s,%s,%s,%.3f,%d,1,,,%d,%s,%s,%s,%s\n"
_COMMAS = len(records.REQUEST_COLUMNS) - 1


class LineSink(Protocol):
    """Where CSV lines go: a text file, or a worker's outbox stream (`fleet.OutboxStream`)."""

    @property
    def closed(self) -> bool: ...
    def write(self, line: str) -> int: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


def open_csv(path: Path, columns: Sequence[str]) -> RowFile:
    """A new CSV file of the run folder, its header written and flushed (whole rows only, see
    `loadtest.rowfile`); raises WriteFailed."""
    f = RowFile(path)
    csv.writer(f, lineterminator="\n").writerow(columns)
    f.flush()
    return f


class LazyCsv:
    """A CSV file of the run folder created, with its header, by its first line: for files
    that exist only when there is something in them (connections.csv: HTTPS targets only)."""

    def __init__(self, path: Path, columns: Sequence[str]):
        self.path = path
        self.columns = columns
        self.closed = False
        self._file: RowFile | None = None

    def write(self, line: str) -> int:
        if self._file is None:
            self._file = open_csv(self.path, self.columns)
        return self._file.write(line)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        self.closed = True
        if self._file is not None:
            self._file.close()


class Recorder:
    """One row per request, per conversation and per new TLS connection, each written with
    one `write` call of one whole CSV line to `requests_out` / `conversations_out` /
    `connections_out` (files, or a worker's outbox)."""

    def __init__(
        self,
        requests_out: LineSink,
        conversations_out: LineSink,
        connections_out: LineSink,
        worker: str,
        redact: Callable[[str], str] = lambda s: s,
        on_failure: Callable[[WriteFailed], None] = lambda e: None,
    ):
        self.worker = worker
        self.redact = redact
        self.on_failure = on_failure
        self.failure: WriteFailed | None = None
        self._requests_file = requests_out
        self._write_request = requests_out.write  # bound once: the hot path
        self._conversations_file = conversations_out
        self._connections_file = connections_out
        self._requests = csv.writer(self._requests_file, lineterminator="\n")
        self._conversations = csv.writer(self._conversations_file, lineterminator="\n")
        self.rows = 0
        self._flusher = gevent.spawn(self._flush_forever)

    @classmethod
    def in_folder(
        cls, run_dir: Path, worker: str, redact: Callable[[str], str] = lambda s: s, on_failure: Callable[[WriteFailed], None] = lambda e: None
    ) -> "Recorder":
        """Raises WriteFailed when the files cannot be made."""
        return cls(
            open_csv(run_dir / records.REQUESTS_CSV, records.REQUEST_COLUMNS),
            open_csv(run_dir / records.CONVERSATIONS_CSV, records.CONVERSATION_COLUMNS),
            LazyCsv(run_dir / records.CONNECTIONS_CSV, records.CONNECTION_COLUMNS),
            worker,
            redact,
            on_failure,
        )

    def on_request(
        self,
        request_type: str,
        name: str,
        response_time: float,
        response_length: int,
        response: Any = None,
        context: dict | None = None,
        exception: BaseException | None = None,
        start_time: float | None = None,
        **_kwargs: Any,
    ) -> None:
        """Locust `request` event listener: one row per request."""
        self.row(name, response_time, response_length, response, context or {}, exception, start_time)

    def row(
        self, name: str, response_time: float, response_length: int, response: Any, ctx: dict, exception: BaseException | None, start_time: float | None
    ) -> None:
        """One row of requests.csv (positional: the plugin's listener calls this per request)."""
        if self._requests_file.closed:
            return
        status = getattr(response, "status_code", 0) or 0
        if exception is None:
            # Hot path: one formatted line; the csv module only when a field needs quoting.
            get = ctx.get
            line = _OK_ROW % (
                start_time or 0.0,
                get("region", ""),
                get("variant", ""),
                get("endpoint", ""),
                name,
                response_time,
                status,
                response_length or 0,
                get("conversation_id", ""),
                get("turn", ""),
                get("user", ""),
                self.worker,
            )
            if line.count(",") == _COMMAS and '"' not in line and line.count("\n") == 1:
                self._write_request(line)
                self.rows += 1
                return
        error = ""
        error_kind = ""
        if exception is not None:
            error_kind = ctx.get("error_kind") or "other"
            error = self.redact(str(exception))[:300]
        self._requests.writerow(
            (
                f"{start_time:.6f}" if start_time else "",
                ctx.get("region", ""),
                ctx.get("variant", ""),
                ctx.get("endpoint", ""),
                name,
                f"{response_time:.3f}",
                status,
                0 if exception is not None else 1,
                error_kind,
                error,
                response_length or 0,
                ctx.get("conversation_id", ""),
                ctx.get("turn", ""),
                ctx.get("user", ""),
                self.worker,
            )
        )
        self.rows += 1

    def conversation(self, *, conversation_id: str, region: str, variant: str, started: float, ended: float, turns: int, ended_by: str, ok: bool) -> None:
        if self._conversations_file.closed:
            return
        self._conversations.writerow((conversation_id, region, variant, f"{started:.6f}", f"{ended:.6f}", f"{ended - started:.3f}", turns, ended_by, int(ok)))

    def connection(self, context: dict, handshake_ms: float) -> None:
        """A request opened a new TLS connection (records.CONNECTION_COLUMNS)."""
        if self._connections_file.closed:
            return
        try:  # LazyCsv: the first line makes the file
            self._connections_file.write(
                "%.6f,%s,%s,%s,%s,%s,%s,%.3f\n"
                % (
                    time.time(),
                    context.get("region", ""),
                    context.get("endpoint", ""),
                    context.get("conversation_id", ""),
                    context.get("turn", ""),
                    context.get("user", ""),
                    self.worker,
                    handshake_ms,
                )
            )
        except WriteFailed as e:
            self._failed(e)

    def _files(self) -> list[LineSink]:
        return [self._requests_file, self._conversations_file, self._connections_file]

    def flush(self) -> None:
        for f in self._files():
            try:
                if not f.closed:
                    f.flush()
            except WriteFailed as e:
                self._failed(e)

    def _failed(self, failure: WriteFailed) -> None:
        """Stop recording: what is on disk stays (whole rows); tell on_failure once."""
        if self.failure is not None:
            return
        self.failure = failure
        for f in self._files():
            try:
                f.close()
            except WriteFailed:
                pass
        self.on_failure(failure)

    def _flush_forever(self) -> None:
        while True:
            gevent.sleep(FLUSH_INTERVAL_S)
            self.flush()

    def close(self) -> None:
        self._flusher.kill(block=False)
        self.flush()
        for f in self._files():
            try:
                f.close()
            except WriteFailed as e:
                self._failed(e)
