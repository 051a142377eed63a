"""Live progress of `loadtest run`: redrawn in place on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO

# Locust (a child process) prints live snapshots as lines with this prefix; `loadtest run`
# shows them and logs everything else.
PROGRESS_PREFIX = "@@loadtest-progress "
# …and, once, {"path", "errno", "strerror"} with this prefix when a file of the run folder could not
# be written (a full disk): the load has stopped; `loadtest run` says so in one line, exit 3.
WRITE_FAILED_PREFIX = "@@loadtest-write-failed "


class ProgressDisplay:
    def __init__(self, duration_s: float | None, stream: TextIO | None = None) -> None:
        """duration_s: the planned run time; None when a shape decides it (its snapshots say)."""
        self._stream = stream  # None: whatever sys.stdout is now (see runner.forgive_output)
        self.tty = self.stream.isatty()
        self.duration_s = duration_s
        self.started = time.monotonic()
        self._drawn = 0

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stdout

    def lines(self, snap: dict) -> list[str]:
        regions = by_region(snap)
        count = sum(r["count"] for r in regions.values())
        failures = sum(r["failures"] for r in regions.values())
        rps = sum(r["rps"] for r in regions.values())
        conv = snap["conversations"]
        elapsed = time.monotonic() - self.started
        total = snap.get("duration_s") or self.duration_s
        head = (
            f"[{elapsed:4.0f}s{f'/{total:.0f}s' if total else ''}] users {snap.get('users', 0)}  "
            f"req/s {rps:6.1f}  requests {count}  failures {failures} "
            f"({100 * failures / count if count else 0:.1f}%)  "
            f"conversations active {conv['active']} done {conv['completed']}"
        )
        per_region = "  ".join(f"{name} p95 {r['p95']:.0f}ms" if r["p95"] is not None else f"{name} p95 –" for name, r in regions.items())
        return [head, "  respond " + per_region] if per_region else [head]

    def update(self, snap: dict) -> None:
        lines = self.lines(snap)
        if self.tty:
            if self._drawn:
                self.stream.write(f"\x1b[{self._drawn}F")
            self.stream.write("".join(f"\x1b[2K{line}\n" for line in lines))
            self._drawn = len(lines)
        else:
            self.stream.write(" | ".join(lines) + "\n")
        self.stream.flush()

    def close(self) -> None:
        self._drawn = 0


def by_region(snapshot: dict) -> dict[str, dict]:
    """Roll rows up per region: count, failures, rps, and the worst endpoint p95."""
    out: dict[str, dict] = {}
    for row in snapshot["rows"]:
        agg = out.setdefault(row["region"], {"count": 0, "failures": 0, "rps": 0.0, "p95": None})
        agg["count"] += row["count"]
        agg["failures"] += row["failures"]
        agg["rps"] += row["rps"]
        if row["endpoint"] == "respond" and row["p95"] is not None:
            agg["p95"] = max(agg["p95"] or 0.0, row["p95"])
    return out
