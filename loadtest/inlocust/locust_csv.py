"""Locust's own CSVs in the run folder, one set per test: `locust_stats.csv`,
`locust_stats_history.csv` (full history), `locust_failures.csv`, `locust_exceptions.csv`.

Locust's `StatsCSVFileWriter` (its `--csv`), with two differences:
- a failed write (a full disk) is not an unhandled greenlet exception (a traceback, exit code
  2) but stops the writer, cuts its files back to whole lines and goes to `on_failure` once,
  like the recorder's;
- one set per test (each web UI test gets its own), written once a second and flushed, and
  once more by `close()`: the plugin closes it when Locust quits (the final numbers, workers'
  last reports included, as Locust's own writer has them) or when the next test starts.
Started by the plugin on the master or the single local process; imported only inside Locust.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Callable

import gevent
from locust.env import Environment
from locust.stats import CSV_STATS_INTERVAL_SEC, PERCENTILES_TO_REPORT, StatsCSVFileWriter

from analysis import records
from loadtest.rowfile import cut_to_whole_lines
from loadtest.runfolder import WriteFailed


class LocustCsv(StatsCSVFileWriter):
    def __init__(self, environment: Environment, run_dir: Path, on_failure: Callable[[WriteFailed], None]) -> None:
        """Raises WriteFailed when the files cannot be made."""
        self.on_failure = on_failure
        self.failure: WriteFailed | None = None
        self.closed = False
        base = Path(run_dir) / records.LOCUST_CSV_PREFIX
        try:
            super().__init__(environment, PERCENTILES_TO_REPORT, str(base), full_history=True)
            self.requests_csv_writer.writerow(self.requests_csv_columns)
            self._requests_start = self.requests_csv_filehandle.tell()
            self.stats_history_csv_writer.writerow(self.stats_history_csv_columns)
            self.failures_csv_writer.writerow(self.failures_columns)
            self.failures_csv_data_start = self.failures_csv_filehandle.tell()
            self.exceptions_csv_writer.writerow(self.exceptions_columns)
            self.exceptions_csv_data_start = self.exceptions_csv_filehandle.tell()
        except OSError as e:
            raise WriteFailed(Path(getattr(e, "filename", None) or f"{base}_stats.csv"), e) from None
        self._greenlet = gevent.spawn(self._write_forever)

    def _files(self) -> tuple[io.TextIOWrapper, ...]:
        return (self.requests_csv_filehandle, self.stats_history_csv_filehandle, self.failures_csv_filehandle, self.exceptions_csv_filehandle)

    def _write_once(self) -> None:
        """Locust's stats now: the snapshots rewritten, a history row appended; flushed."""
        for handle, start, rows, writer in (
            (self.requests_csv_filehandle, self._requests_start, self._requests_data_rows, self.requests_csv_writer),
            (self.failures_csv_filehandle, self.failures_csv_data_start, self._failures_data_rows, self.failures_csv_writer),
            (self.exceptions_csv_filehandle, self.exceptions_csv_data_start, self._exceptions_data_rows, self.exceptions_csv_writer),
        ):
            handle.seek(start)
            rows(writer)
            handle.truncate()
        self._stats_history_data_rows(self.stats_history_csv_writer, time.time())
        for handle in self._files():
            handle.flush()

    def _write_forever(self) -> None:
        gevent.sleep(CSV_STATS_INTERVAL_SEC)
        while not self.closed:  # a failed write closes the files here, in this greenlet (`_failed`)
            self._write_or_fail()
            gevent.sleep(CSV_STATS_INTERVAL_SEC)

    def _write_or_fail(self) -> None:
        try:
            self._write_once()
        except OSError as e:
            self._failed(WriteFailed(Path(self.base_filepath + "_*.csv"), e))

    def _failed(self, failure: WriteFailed) -> None:
        if self.failure is not None:
            return
        self.failure, self.closed = failure, True
        for handle in self._files():
            try:
                handle.close()
            except OSError:  # its last buffered part could not be written
                pass
            cut_to_whole_lines(Path(handle.name))
        self.on_failure(failure)

    def close(self) -> None:
        """A last write of the final numbers, then close (may run in its own greenlet's failure)."""
        if self.closed:
            return
        self.closed = True
        if self._greenlet is not gevent.getcurrent():
            self._greenlet.kill(block=True)
        self._write_or_fail()
        if self.failure is None:
            try:
                for handle in self._files():
                    handle.close()
            except OSError as e:
                self._failed(WriteFailed(Path(handle.name), e))
