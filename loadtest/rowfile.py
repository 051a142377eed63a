"""Append-only CSV files that only ever hold complete rows, even when the disk fills up.

    f = RowFile(run_dir / "requests.csv")    # raises runfolder.WriteFailed if it cannot be made
    csv.writer(f, lineterminator="\n").writerow(...)    # or f.write(line): one whole row per call
    f.flush()                                # once a second: rows reach the disk together
    f.close()

Rows wait in memory until `flush()`. What is on disk is always whole rows: a flush that fails
part-way (a full disk, a quota, an I/O error) is cut back to the last whole row it wrote, so
the file still loads, and raises `runfolder.WriteFailed`; the file then takes no more rows
(`closed` is true), and the caller stops the load: what follows could not be recorded.
"""

from __future__ import annotations

import os
from pathlib import Path

from analysis.records import complete_rows
from loadtest.runfolder import WriteFailed


class RowFile:
    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise WriteFailed(self.path, e) from None
        self._pending: list[str] = []
        self._size = 0  # bytes of whole rows on disk
        self.closed = False

    def write(self, row: str) -> int:
        """Add one or more whole rows (the csv module writes one row per call)."""
        if not self.closed:
            self._pending.append(row)
        return len(row)

    def flush(self) -> None:
        if self.closed or not self._pending:
            return
        data = "".join(self._pending).encode("utf-8")
        self._pending.clear()
        view, written = memoryview(data), 0
        try:
            while written < len(data):
                written += os.write(self._fd, view[written:])
        except OSError as e:
            self._abandon(self._size + complete_rows(data[:written]))
            raise WriteFailed(self.path, e) from None
        self._size += written

    def close(self) -> None:
        """Flush and close; raises WriteFailed (the file then holds its whole rows)."""
        if self.closed:
            return
        try:
            self.flush()
        finally:
            if not self.closed:
                self.closed = True
                os.close(self._fd)

    def _abandon(self, size: int) -> None:
        """Keep the first `size` bytes (whole rows) and take nothing more."""
        self.closed = True
        self._pending.clear()
        try:
            os.ftruncate(self._fd, size)  # shrinking needs no space
        except OSError:
            pass
        os.close(self._fd)


def cut_to_whole_lines(path: Path, tail: int = 1 << 16) -> None:
    """Cut a file someone else wrote (Locust's CSVs) back to its last line end, found within
    its last `tail` bytes: after a failed write its last line may be partial."""
    try:
        with open(path, "r+b") as f:
            size = f.seek(0, os.SEEK_END)
            start = max(size - tail, 0)
            f.seek(start)
            end = f.read().rfind(b"\n")
            f.truncate(start + end + 1 if end >= 0 else start)
    except OSError:
        pass
