"""Rows over Locust's message channel: workers ship their CSV rows to the master's run folder.

In a distributed run (`loadtest run --workers N` with `loadtest worker` on other machines, or
`--processes N` on one) only the master has a run folder; workers need no disk and no shared
volume. A worker's recorder and open-model arrivals write their CSV lines into an `Outbox`;
its `Shipper` sends them to the master in batches over `runner.send_message`, about once a
second or as soon as `BATCH_ROWS` rows wait; the master's `Collector` appends each batch to
the run folder's requests.csv, conversations.csv, arrivals.csv and connections.csv as it
arrives (the `worker` column tells the workers apart) and acknowledges it.

Delivery. Every batch carries (run, seq). A worker keeps a batch until its ack arrives and
sends it again after `RESEND_AFTER_S` (Locust drops what is queued on a connection it
resets); the master writes each seq once and acknowledges a repeated one without writing it,
so a retried batch never duplicates rows.

Bounded memory. A worker holds at most `MAX_HELD_ROWS` rows, waiting or sent but not yet
acknowledged (about 40 MB). When a master cannot keep up (a slow disk, a burst, a network
outage), rows past that bound are dropped and counted per file rather than blocking users:
blocking would change the very load being measured. The master holds no rows: it writes
each batch when it arrives.

Accounting. When a test stops each worker sends `loadtest_rows_done`: rows produced and
dropped per file and its last seq. The master waits (up to `DONE_TIMEOUT_S`) for every worker
still connected to be complete; `close()` then gives per worker rows produced, received,
dropped, repeated batches and, for a worker lost mid-run, when it was lost and when its last
rows arrived; the plugin writes them to run.json (`worker_rows`).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import gevent
from gevent.event import Event

from analysis import records
from loadtest.inlocust.recorder import open_csv
from loadtest.runfolder import WriteFailed

logger = logging.getLogger("loadtest")

ROWS, ACK, DONE = "loadtest_rows", "loadtest_rows_ack", "loadtest_rows_done"
FILES = {
    "requests": (records.REQUESTS_CSV, records.REQUEST_COLUMNS),
    "conversations": (records.CONVERSATIONS_CSV, records.CONVERSATION_COLUMNS),
    "arrivals": (records.ARRIVALS_CSV, records.ARRIVAL_COLUMNS),  # open model only
    "connections": (records.CONNECTIONS_CSV, records.CONNECTION_COLUMNS),
}  # HTTPS targets only

BATCH_INTERVAL_S = 1.0
BATCH_ROWS = 5_000
MAX_HELD_ROWS = 250_000
RESEND_AFTER_S = 10.0
DONE_TIMEOUT_S = 15.0


def worker_name(index: int) -> str:
    """The `worker` column's value: Locust's worker index, as the master assigned it."""
    return f"worker{index}"


# ---- worker side ---------------------------------------------------------------------------


class OutboxStream:
    """File-like: one `write` is one CSV line (as the recorder and arrivals write them)."""

    closed = False

    def __init__(self, outbox: "Outbox", name: str):
        self._outbox = outbox
        self._name = name

    def write(self, line: str) -> int:
        self._outbox.add(self._name, line)
        return len(line)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class Outbox:
    """CSV lines waiting to be shipped, per file, bounded by `max_held` (see the module doc)."""

    def __init__(self, max_held: int = MAX_HELD_ROWS, batch_rows: int = BATCH_ROWS):
        self.max_held = max_held
        self.batch_rows = batch_rows
        self.lines: dict[str, list[str]] = {name: [] for name in FILES}
        self.waiting = 0  # rows not yet in a batch
        self.unacked = 0  # rows in batches sent and not yet acknowledged
        self.produced: Counter = Counter()
        self.dropped: Counter = Counter()
        self.full = Event()  # set when a batch is worth sending before the next tick

    def stream(self, name: str) -> OutboxStream:
        return OutboxStream(self, name)

    def add(self, name: str, line: str) -> None:
        self.produced[name] += 1
        if self.waiting + self.unacked >= self.max_held:
            if not self.dropped:
                logger.warning("loadtest: %d rows wait for the master; dropping new rows (counted in run.json) until it catches up", self.max_held)
            self.dropped[name] += 1
            return
        self.lines[name].append(line)
        self.waiting += 1
        if self.waiting >= self.batch_rows:
            self.full.set()

    def take(self) -> tuple[dict[str, str], dict[str, int]]:
        """The waiting lines as one text per file, and how many rows each holds."""
        texts = {name: "".join(lines) for name, lines in self.lines.items() if lines}
        counts = {name: len(lines) for name, lines in self.lines.items() if lines}
        self.lines = {name: [] for name in FILES}
        self.waiting = 0
        self.full.clear()
        return texts, counts


@dataclass
class _Sent:
    payload: dict
    rows: int
    at: float


class Shipper:
    """A worker's side of one test: batches the outbox to the master until acknowledged."""

    def __init__(self, send: Callable[[str, dict], None], run_id: str, outbox: Outbox | None = None):
        self.send = send  # runner.send_message
        self.run_id = run_id
        self.outbox = outbox or Outbox()
        self.seq = 0
        self.sent: dict[int, _Sent] = {}
        self.send_errors = 0
        self._greenlet = gevent.spawn(self._loop)

    def _loop(self) -> None:
        while True:
            self.outbox.full.wait(timeout=BATCH_INTERVAL_S)
            self.ship()
            self.resend_overdue()

    def ship(self) -> None:
        if not self.outbox.waiting:
            return
        texts, counts = self.outbox.take()
        self.seq += 1
        rows = sum(counts.values())
        batch = _Sent({"run": self.run_id, "seq": self.seq, "counts": counts, **texts}, rows, time.monotonic())
        self.sent[self.seq] = batch
        self.outbox.unacked += rows
        self._send(ROWS, batch.payload)

    def resend_overdue(self) -> None:
        now = time.monotonic()
        for batch in list(self.sent.values()):
            if now - batch.at > RESEND_AFTER_S:
                batch.at = now
                self._send(ROWS, batch.payload)

    def _send(self, kind: str, payload: dict) -> None:
        try:
            self.send(kind, payload)
        except Exception as e:  # a broken connection: the batch stays unacknowledged, resent later
            self.send_errors += 1
            logger.debug("loadtest: sending %s to the master failed: %s", kind, e)

    def on_ack(self, data: dict) -> None:
        if data.get("run") == self.run_id:
            batch = self.sent.pop(data.get("seq", 0), None)
            if batch is not None:
                self.outbox.unacked -= batch.rows

    def finish(self) -> None:
        """At test stop (after the recorder closed): ship the rest, then the accounting.
        Unacknowledged batches are still resent until the next test or the worker quits."""
        self.ship()
        self._send(DONE, {"run": self.run_id, "last_seq": self.seq, "produced": dict(self.outbox.produced), "dropped": dict(self.outbox.dropped)})

    def stop(self) -> None:
        self._greenlet.kill(block=False)


# ---- master side ---------------------------------------------------------------------------


@dataclass
class WorkerAccount:
    node: str = ""
    received: Counter = field(default_factory=Counter)
    produced: dict | None = None  # from the worker's DONE message
    dropped: dict | None = None
    last_seq: int | None = None
    seqs: set = field(default_factory=set)
    repeated_batches: int = 0
    last_rows_at: float | None = None
    lost_at: float | None = None

    @property
    def complete(self) -> bool:
        return self.last_seq is not None and len(self.seqs) == self.last_seq

    def summary(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "produced": self.produced,
            "received": dict(self.received),
            "dropped": self.dropped,
            "batches": len(self.seqs),
            "repeated_batches": self.repeated_batches,
            "complete": self.complete,
            "last_rows_at": self.last_rows_at,
            "lost_at": self.lost_at,
        }


class Collector:
    """The master's side of one test: writes the workers' rows into the run folder."""

    def __init__(self, run_dir: Path, open_model: bool, on_failure: Callable[[WriteFailed], None] = lambda e: None):
        """Raises WriteFailed when the files cannot be made; a failed write later stops the
        files (whole rows kept, see `loadtest.rowfile`) and goes to `on_failure` once."""
        self.on_failure = on_failure
        self.failure: WriteFailed | None = None
        self.run_id = run_dir.name
        self.run_dir = run_dir
        # connections.csv appears with its first row, as in a single-process run.
        names = ["requests", "conversations"] + (["arrivals"] if open_model else [])
        self.files = {n: open_csv(run_dir / FILES[n][0], FILES[n][1]) for n in names}
        self.workers: dict[str, WorkerAccount] = {}
        self.foreign_batches = 0  # from another test (a late worker of a previous start)
        self._flusher = gevent.spawn(self._flush_forever)

    def account(self, worker: str, node: str) -> WorkerAccount:
        acc = self.workers.get(worker)
        if acc is None:
            acc = self.workers[worker] = WorkerAccount(node=node)
        return acc

    def on_rows(self, worker: str, node: str, data: dict) -> bool:
        """One batch from a worker; False when it was not this test's (ack it anyway)."""
        if data.get("run") != self.run_id:
            self.foreign_batches += 1
            return False
        acc = self.account(worker, node)
        seq = data["seq"]
        if seq in acc.seqs:
            acc.repeated_batches += 1
            return True
        for name, count in data["counts"].items():
            f = self.files.get(name)
            if f is None:  # the first TLS handshakes (or arrivals the master did not expect)
                try:
                    f = self.files[name] = open_csv(self.run_dir / FILES[name][0], FILES[name][1])
                except WriteFailed as e:
                    self._failed(e)
                    continue
            f.write(data[name])
            acc.received[name] += count
        acc.seqs.add(seq)
        acc.last_rows_at = time.time()
        return True

    def on_done(self, worker: str, node: str, data: dict) -> None:
        if data.get("run") != self.run_id:
            return
        acc = self.account(worker, node)
        acc.produced, acc.dropped, acc.last_seq = data["produced"], data["dropped"], data["last_seq"]

    def lost(self, worker: str, node: str) -> None:
        acc = self.account(worker, node)
        if acc.lost_at is None:
            acc.lost_at = time.time()

    def said_done(self, worker: str) -> bool:
        acc = self.workers.get(worker)
        return acc is not None and acc.last_seq is not None

    def wait_until_complete(self, pending: Callable[[], set[str]], timeout: float) -> None:
        """Until the `pending()` workers (connected, not done) have said done and every worker
        that did has all its batches up to its last seq; at most `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            waiting = pending() | {w for w, acc in self.workers.items() if acc.last_seq is not None and not acc.complete and acc.lost_at is None}
            if not waiting:
                return
            if time.monotonic() > deadline:
                break
            gevent.sleep(0.1)
        logger.warning("loadtest: rows of %s still incomplete after %.0f s; their last rows may be missing", ", ".join(sorted(waiting)), timeout)

    def _flush_forever(self) -> None:
        while True:
            gevent.sleep(BATCH_INTERVAL_S)
            self._each_file("flush")

    def _each_file(self, method: str) -> None:
        for f in list(self.files.values()):
            try:
                getattr(f, method)()
            except WriteFailed as e:
                self._failed(e)

    def _failed(self, failure: WriteFailed) -> None:
        if self.failure is None:
            self.failure = failure
            for f in self.files.values():
                try:
                    f.close()
                except WriteFailed:
                    pass
            self.on_failure(failure)

    def close(self) -> dict[str, dict]:
        """Close the files; per worker accounting for run.json."""
        self._flusher.kill(block=False)
        self._each_file("flush")
        self._each_file("close")
        return {w: self.workers[w].summary() for w in sorted(self.workers)}
