"""Extensions of Locust's web UI: Regions and Conversations tabs, the report, the CSVs.

`install(events, plugin)` (called by `plugin.install`) hooks Locust's `init` event; with a
web UI (not headless, not a worker) it adds, the way Locust 2.4x's React UI supports:

- tabs by data: `template_args["extended_tabs"]` + `["extended_tables"]` declare a tab and its
  table's columns; the JSON of `GET /stats/requests` (polled every 2 s while a test runs)
  carries the rows as `extended_stats`, added by an `after_request` hook:
    Regions        live p50/p95/p99, req/s, errors per region × endpoint and per variant,
                   under a live chart of respond p50/p95 over time, one line per region
                   (or per variant): `regions-chart.js`, added to Locust's page
    Conversations  active, completed, and how conversations ended (end_conversation, …)
- links on the "Download Data" tab (`template_args["extended_csv_files"]`);
- routes under `/loadtest/` (after Locust's `--web-base-path`, if any):
    /loadtest/                      the runs of this session, with their links
    /loadtest/report                build and show the HTML report of the current/last run
    /loadtest/requests.csv          requests.csv of the current/last run (complete rows)
    /loadtest/conversations.csv     conversations.csv of the current/last run
    /loadtest/runs/<run_id>/<file>  a file of a run folder (the report and what it links)
    /loadtest/live.json             the raw live snapshot
    /loadtest/history.json          respond p50/p95 over time per region and per variant
    /loadtest/regions-chart.js      the chart's script (self-contained SVG, no network)
  `?run=<run_id>` picks an earlier run of the session.

Locust's React page has no hook for a chart in an extended tab, so a `<script>` tag is added
to its index page (an `after_request` hook); the script draws into the Regions tab while that
tab is open, from `history.json` (sampled every 2 s by a greenlet while a test runs, see
`loadtest.inlocust.live.LiveHistory`).

The report is built in a child process (`analysis.report.build_report`), so building it
while a test runs does not stall the users' event loop. Live numbers come from
`plugin.live` (a sliding window, see `loadtest.inlocust.live`); exact whole-run numbers are in the
report. Besides `safety.check_target` (run for every start), a session started against the
mock refuses a start whose base URLs leave this machine (the form is editable), unless the
UI itself was started with `--target real --yes`.
"""

from __future__ import annotations

import html
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import gevent
import numpy as np
from flask import Blueprint, Response, make_response, redirect, request, send_from_directory, url_for
from flask.typing import ResponseReturnValue
from gevent.lock import Semaphore
from locust.env import Environment
from locust.event import Events
from locust.web import WebUI

from analysis import records
from analysis.colours import region_colours, variant_colours
from loadtest import api, config, processes, runfolder, safety
from loadtest.inlocust.live import HISTORY_INTERVAL_S, LiveHistory, LiveStats, histogram_percentiles, merge

logger = logging.getLogger("loadtest.inlocust.webui")

PREFIX = "/loadtest"
REPORT_BUILD_TIMEOUT_S = 300.0
ROWS_CACHE_S = 1.0
#: Runner states Locust's page would stop polling in (shown as "running" until "stopped" comes).
STOPPING_STATES = ("cleanup", "stopping")
CSV_CHUNK = 1 << 16
WARMUP_ENV = "LOADTEST_WARMUP"  # the report's --warmup, set by `loadtest ui`
CHART_SCRIPT = Path(__file__).parent.parent / "static" / "regions-chart.js"

# ---- the tabs: columns (keys are snake_case; the UI camelCases rows and columns alike) ----

REGIONS_TAB = {"key": "loadtest-regions", "title": "Regions"}
CONVERSATIONS_TAB = {"key": "loadtest-conversations", "title": "Conversations"}

REGION_COLUMNS = [
    {"key": "region", "title": "Region"},
    {"key": "variant", "title": "Variant"},
    {"key": "endpoint", "title": "Endpoint"},
    {"key": "rps", "title": "Req/s (last 10 s)"},
    {"key": "p50", "title": "p50 ms"},
    {"key": "p95", "title": "p95 ms"},
    {"key": "p99", "title": "p99 ms"},
    {"key": "error_pct", "title": "Errors %"},
    {"key": "failures", "title": "Failures"},
    {"key": "count", "title": "Requests"},
]

CONVERSATION_COLUMNS = [{"key": "active", "title": "Active"}, {"key": "completed", "title": "Completed"}] + [
    {"key": f"ended_by_{e}", "title": f"Ended by {e}"} for e in records.ENDED_BY
]

ALL = "all"


def _round(x: float | None, digits: int = 1) -> float | None:
    return None if x is None or np.isnan(x) else round(float(x), digits)


def region_rows(live: LiveStats, snapshot: dict) -> list[dict]:
    """Rows of the Regions tab from a `LiveStats` and a snapshot just taken of it.

    Per region: each endpoint, then all endpoints; then per variant the same. Percentiles
    merge the keys' histograms over the window (a p95 of several p95s would be wrong;
    histograms add up exactly), 3 significant digits (`loadtest.inlocust.live`).
    """
    keys = [(r["region"], r["variant"], r["endpoint"]) for r in snapshot["rows"]]
    by_key = {k: r for k, r in zip(keys, snapshot["rows"])}
    regions = sorted({k[0] for k in keys}, key=_region_order)
    variants = sorted({k[1] for k in keys})
    endpoints = [e for e in ("create", "respond", "close") if any(k[2] == e for k in keys)]
    endpoints += sorted({k[2] for k in keys} - set(endpoints))
    windows = {k: live.window([k], snapshot["time"])[0] for k in keys}  # once per key, merged per row

    def row(region: str, variant: str, endpoint: str, match: Callable[[tuple], bool]) -> dict | None:
        chosen = [k for k in keys if match(k)]
        if not chosen:
            return None
        count = sum(by_key[k]["count"] for k in chosen)
        failures = sum(by_key[k]["failures"] for k in chosen)
        p50, p95, p99 = histogram_percentiles(merge(windows[k] for k in chosen), (50, 95, 99))
        return {
            "region": region,
            "variant": variant,
            "endpoint": endpoint,
            "count": count,
            "failures": failures,
            "error_pct": _round(100.0 * failures / count if count else 0.0, 2),
            "rps": _round(sum(by_key[k]["rps"] for k in chosen), 2),
            "p50": _round(p50),
            "p95": _round(p95),
            "p99": _round(p99),
        }

    out: list[dict | None] = []
    for region in regions:
        for endpoint in endpoints:
            out.append(row(region, ALL, endpoint, lambda k: k[0] == region and k[2] == endpoint))
        out.append(row(region, ALL, ALL, lambda k: k[0] == region))
    if variants != [""]:
        for variant in variants:
            label = variant or "(none)"
            for endpoint in endpoints:
                out.append(row(ALL, label, endpoint, lambda k: k[1] == variant and k[2] == endpoint))
            out.append(row(ALL, label, ALL, lambda k: k[1] == variant))
    rows = [r for r in out if r]
    for i, r in enumerate(rows):  # the UI sorts by "name" until a column header is clicked
        r["name"] = f"{i:04d}"
    return rows


def conversation_rows(snapshot: dict) -> list[dict]:
    conv = snapshot["conversations"]
    row = {"name": "conversations", "active": conv["active"], "completed": conv["completed"]}
    for ended_by in records.ENDED_BY:
        row[f"ended_by_{ended_by}"] = conv["ended_by"].get(ended_by, 0)
    return [row]


def _region_order(region: str) -> tuple:
    names = list(api.REGIONS)
    return (names.index(region) if region in names else len(names), region)


# ---- the extension --------------------------------------------------------------------------


class WebUIExtension:
    """State of the UI extension in one Locust process (the master or a local runner)."""

    def __init__(self, plugin: Any) -> None:  # the LoadtestPlugin (plugin.py imports this module)
        self.plugin = plugin
        self.environment: Environment | None = None
        self.runs: list[Path] = []  # run folders opened in this session, oldest first
        self.allow_remote = False  # started with --target real
        self._rows: dict | None = None  # extended_stats, cached for ROWS_CACHE_S
        self._rows_at = 0.0
        self._frozen: dict | None = None  # the last rows of a stopped test
        self._build_lock: Semaphore | None = None  # one report build at a time, from on_init
        self.history = LiveHistory()  # the Regions tab's chart
        self._sampler: gevent.Greenlet | None = None  # samples the Regions chart while a test runs

    # ---- Locust events ----
    def on_init(self, environment: Environment, web_ui: WebUI | None = None, **_kw: Any) -> None:
        web_ui = web_ui or getattr(environment, "web_ui", None)
        if web_ui is None:
            return

        self.environment = environment
        self._build_lock = Semaphore()
        options = environment.parsed_options
        self.allow_remote = getattr(options, "target", "mock") == "real"
        web_ui.template_args.update(self.template_args())
        app = web_ui.app
        assert app is not None, "Locust's WebUI makes its Flask app when it is made"
        app.after_request(self._extend_stats_response)
        app.after_request(self._add_chart_script)
        base = (getattr(options, "web_base_path", None) or "").rstrip("/")
        app.register_blueprint(self.blueprint(web_ui), url_prefix=base + PREFIX)
        environment.events.test_start.add_listener(self.on_test_start)
        environment.events.test_stop.add_listener(self.on_test_stop)

    def on_test_start(self, environment: Environment, **_kw: Any) -> None:
        run = self.plugin.run  # set by the plugin's own test_start listener, which runs first
        if run is None:
            return
        self._frozen = self._rows = None
        remote = {r: u for r, u in run.base_urls.items() if not safety.is_loopback(u)}
        if remote and not self.allow_remote:
            # safety.check_target has passed (target real, --yes, credentials), but the form
            # is editable: a session started against the mock stays on this machine.
            logger.error(
                "loadtest: not starting — %s is off this machine, and this web UI was "
                "started for the mock; to load real hosts start it with "
                "`loadtest ui --target real --yes`.",
                ", ".join(f"{r}={u}" for r, u in remote.items()),
            )
            environment.loadtest_run = None  # type: ignore[attr-defined]  # loadtest's own attribute (plugin.py): users stop in on_start
            assert environment.runner is not None, "a test starts on a runner"
            gevent.spawn_later(0, environment.runner.stop)
            return
        self.history.reset()
        self._sampler = gevent.spawn(self._sample_history)
        if run.run_dir is not None and run.run_dir not in self.runs:
            self.runs.append(run.run_dir)
            logger.info("loadtest: run folder %s", run.run_dir)

    def on_test_stop(self, environment: Environment, **_kw: Any) -> None:
        self._frozen = self._compute_rows()
        if self._sampler is not None:
            self._sampler.kill(block=False)
            self._sampler = None
            self.history.sample(self.plugin.live)  # the last window, as the table froze it

    def _sample_history(self) -> None:
        while True:
            gevent.sleep(HISTORY_INTERVAL_S)
            self.history.sample(self.plugin.live)

    def history_json(self) -> dict:
        data = self.history.to_json()
        order = {"region": sorted(data["region"], key=_region_order), "variant": list(data["variant"])}
        return {
            **data,
            "interval_s": HISTORY_INTERVAL_S,
            "window_s": self.plugin.live.window_s,
            "running": self._running(),
            "order": order,  # JSON objects lose their order
            "colours": {"region": region_colours(order["region"]), "variant": variant_colours(order["variant"])},
        }

    # ---- tabs ----
    @staticmethod
    def template_args() -> dict[str, Any]:
        return {
            "extended_tabs": [REGIONS_TAB, CONVERSATIONS_TAB],
            "extended_tables": [{"key": REGIONS_TAB["key"], "structure": REGION_COLUMNS}, {"key": CONVERSATIONS_TAB["key"], "structure": CONVERSATION_COLUMNS}],
            "extended_csv_files": [
                {"href": f".{PREFIX}/report", "title": "Load test report (HTML) of the current or last run"},
                {"href": f".{PREFIX}/requests.csv", "title": "requests.csv of the current or last run (one row per request)"},
                {"href": f".{PREFIX}/conversations.csv", "title": "conversations.csv of the current or last run"},
                {"href": f".{PREFIX}/", "title": "All runs of this session: run folders, reports, CSVs"},
            ],
        }

    def extended_stats(self) -> list[dict]:
        if self._frozen is not None and not self._running():
            return self._frozen["stats"]
        now = time.monotonic()
        if self._rows is None or now - self._rows_at >= ROWS_CACHE_S:
            self._rows, self._rows_at = self._compute_rows(), now
        return self._rows["stats"]

    def _compute_rows(self) -> dict:
        live = self.plugin.live
        snap = live.snapshot()
        return {
            "snapshot": snap,
            "stats": [
                {"key": REGIONS_TAB["key"], "data": region_rows(live, snap)[:500]},
                {"key": CONVERSATIONS_TAB["key"], "data": conversation_rows(snap)},
            ],
        }

    def _extend_stats_response(self, response: Response) -> Response:
        if request.endpoint != "locust.request_stats" or response.status_code != 200:
            return response
        try:
            data = response.get_json()
            data["extended_stats"] = self.extended_stats()
            if data.get("state") in STOPPING_STATES:
                # Locust's page polls these statistics only while it believes the test is
                # spawning or running: told "cleanup" or "stopping" it stops polling, and would
                # show that state for ever. Our users finish their conversation when stopped
                # (think, then close), so a stop lasts long enough for a poll to land in it.
                data["state"] = "running"
            response.set_data(json.dumps(data))
        except Exception:  # never break Locust's own statistics for an extra tab
            logger.exception("loadtest: could not add the Regions tab's rows")
        return response

    def _add_chart_script(self, response: Response) -> Response:
        """Locust's index page, with the Regions tab's chart script after its own."""
        if request.endpoint != "locust.index" or response.status_code != 200 or response.direct_passthrough:
            return response
        tag = f'<script src=".{PREFIX}/regions-chart.js" defer></script>'.encode()
        body = response.get_data()
        if b"</body>" in body:
            response.set_data(body.replace(b"</body>", tag + b"</body>", 1))
        return response

    def _running(self) -> bool:
        runner = getattr(self.environment, "runner", None)
        return runner is not None and runner.state in ("spawning", "running", "cleanup", "stopping")

    # ---- runs ----
    def run_dir(self, run_id: str | None = None) -> Path | None:
        if run_id:
            return next((d for d in self.runs if d.name == run_id), None)
        return self.runs[-1] if self.runs else None

    def is_current(self, run_dir: Path) -> bool:
        run = self.plugin.run
        return run is not None and run.run_dir == run_dir and self._running()

    # ---- the report ----
    def report_path(self, run_dir: Path, rebuild: bool, warmup_s: float) -> tuple[Path | None, str]:
        """(path, "") of an up-to-date report, or (None, why not)."""
        if not any(run_dir.glob(records.REQUESTS_GLOB)):
            return None, "No requests have been recorded in this run yet."
        existing = run_dir / records.REPORT_HTML
        if not rebuild and not self.is_current(run_dir) and existing.exists():
            newest = max(p.stat().st_mtime for p in _data_files(run_dir))
            if existing.stat().st_mtime >= newest:
                return existing, ""
        assert self._build_lock is not None, "the routes are registered by on_init"
        with self._build_lock:
            return build_report_in_child(run_dir, warmup_s)

    # ---- routes ----
    def blueprint(self, web_ui: WebUI) -> Blueprint:
        bp = Blueprint("loadtest", __name__)
        auth = web_ui.auth_required_if_enabled

        def pick_run() -> Path | None:
            return self.run_dir(request.args.get("run"))

        @bp.route("/")
        @auth
        def index() -> Response:
            return _page("Load test runs", self._index_html())

        @bp.route("/report")
        @auth
        def report() -> ResponseReturnValue:
            run_dir = pick_run()
            if run_dir is None:
                return _page("No run yet", "<p>No test has been started in this session yet: start one from the form, then come back.</p>", 404)
            try:
                warmup_s = config.parse_duration(request.args.get("warmup") or os.environ.get(WARMUP_ENV) or 0)
            except ValueError as e:
                return _page("Bad warmup", f"<p>warmup: {html.escape(str(e))}</p>", 400)
            path, why = self.report_path(run_dir, bool(request.args.get("rebuild")), warmup_s)
            if path is None:
                return _page("No report", f"<pre>{html.escape(why)}</pre>" + self._links_html(run_dir), 503)
            try:
                rel = path.resolve().relative_to(run_dir.resolve()).as_posix()
            except ValueError:
                return make_response(path.read_bytes(), 200, {"Content-Type": "text/html; charset=utf-8"})
            return redirect(url_for("loadtest.run_file", run_id=run_dir.name, name=rel))

        @bp.route("/runs/<run_id>/<path:name>")
        @auth
        def run_file(run_id: str, name: str) -> Response:
            run_dir = self.run_dir(run_id)
            if run_dir is None:
                return _page("Unknown run", f"<p>No run {html.escape(run_id)} in this session.</p>", 404)
            response = send_from_directory(run_dir.resolve(), name, max_age=0)
            response.headers["Cache-Control"] = "no-store"
            return response

        def csv_route(pattern: str, label: str) -> None:
            def view() -> Response:
                run_dir = pick_run()
                if run_dir is None or not any(run_dir.glob(pattern)):
                    return _page("No data", f"<p>No {label} yet: start a test first.</p>", 404)
                files = sorted(run_dir.glob(pattern))
                return Response(
                    complete_csv_rows(files),
                    mimetype="text/csv",
                    headers={"Content-Disposition": f"attachment; filename={run_dir.name}-{label}", "Cache-Control": "no-store"},
                )

            view.__name__ = label.replace(".", "_")
            bp.route(f"/{label}")(auth(view))

        csv_route(records.REQUESTS_GLOB, records.REQUESTS_CSV)
        csv_route(records.CONVERSATIONS_GLOB, records.CONVERSATIONS_CSV)

        @bp.route("/live.json")
        @auth
        def live_json() -> ResponseReturnValue:
            rows = self._frozen if self._frozen is not None and not self._running() else self._compute_rows()
            current = self.run_dir()
            return {"running": self._running(), "run_dir": str(current) if current else None, "snapshot": rows["snapshot"], "extended_stats": rows["stats"]}

        @bp.route("/history.json")
        @auth
        def history_json() -> Response:
            response = make_response(self.history_json())
            response.headers["Cache-Control"] = "no-store"
            return response

        @bp.route("/regions-chart.js")
        @auth
        def chart_script() -> Response:
            return Response(CHART_SCRIPT.read_text(), mimetype="text/javascript", headers={"Cache-Control": "no-store"})

        return bp

    def _links_html(self, run_dir: Path) -> str:
        q = f"?run={run_dir.name}"
        return (
            f'<p><a href="report{q}">report</a> · <a href="requests.csv{q}">requests.csv</a> · '
            f'<a href="conversations.csv{q}">conversations.csv</a> · <a href="./">all runs</a> · '
            f'<a href="../">back to the test</a></p>'
        )

    def _index_html(self) -> str:
        if not self.runs:
            return "<p>No test has been started in this session yet.</p><p><a href='../'>back</a></p>"
        rows = []
        for d in reversed(self.runs):
            meta = runfolder.read_run_json(d)
            status = "running" if self.is_current(d) else meta.get("status", "?")
            started = time.strftime("%H:%M:%S", time.localtime(meta["started"])) if meta.get("started") else ""
            q = f"?run={html.escape(d.name)}"
            rows.append(
                f"<tr><td>{html.escape(d.name)}</td><td>{html.escape(str(status))}</td>"
                f"<td>{started}</td><td><code>{html.escape(str(d.resolve()))}</code></td>"
                f"<td><a href='report{q}'>report</a> · <a href='requests.csv{q}'>requests.csv</a>"
                f" · <a href='conversations.csv{q}'>conversations.csv</a>"
                f" · <a href='runs/{html.escape(d.name)}/{records.RUN_JSON}'>run.json</a></td></tr>"
            )
        return (
            "<table><tr><th>Run</th><th>Status</th><th>Started</th><th>Folder</th><th></th></tr>"
            + "".join(rows)
            + "</table><p><a href='../'>back to the test</a></p>"
        )


# ---- helpers --------------------------------------------------------------------------------

_BUILD_SCRIPT = """\
import sys
from pathlib import Path
from analysis.report import build_report
print(build_report(Path(sys.argv[1]), warmup_s=float(sys.argv[2])))
"""


def build_report_in_child(run_dir: Path, warmup_s: float = 0.0, timeout: float = REPORT_BUILD_TIMEOUT_S) -> tuple[Path | None, str]:
    """Run `analysis.report.build_report` in a child process: (path, "") or (None, why)."""
    try:
        import analysis.report  # noqa: F401  (cheap check before spawning)
    except ImportError as e:
        return None, f"The report builder (analysis.report) is not available: {e}."
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLYAI_")}
    # Spawned like every child: it ends with this Locust, however Locust ends.
    proc = processes.spawn(
        [sys.executable, "-c", _BUILD_SCRIPT, str(run_dir), f"{warmup_s:g}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return None, f"Building the report took longer than {timeout:.0f} s."
    if proc.returncode != 0:
        tail = (stderr or stdout).strip().splitlines()[-12:]
        return None, "Building the report failed:\n" + "\n".join(tail)
    lines = stdout.strip().splitlines()
    path = Path(lines[-1]) if lines else run_dir / records.REPORT_HTML
    if not path.is_absolute():
        path = Path.cwd() / path
    if not path.exists():
        return None, f"The report builder said it wrote {path}, which does not exist."
    return path, ""


def _data_files(run_dir: Path) -> list[Path]:
    files = [*run_dir.glob(records.REQUESTS_GLOB), *run_dir.glob(records.CONVERSATIONS_GLOB)]
    run_json = run_dir / records.RUN_JSON
    return files + ([run_json] if run_json.exists() else [])


def complete_csv_rows(files: Iterable[Path]) -> Iterator[bytes]:
    """The files as one CSV: one header, and only rows complete when the download began.

    Files still being written (a running test) end at their last complete row
    (:func:`analysis.records.complete_rows`: a line end inside a quoted, multi-line ``error``
    field is not a row end); the header of every file after the first is skipped (workers'
    requests-workerN.csv).
    """
    for i, path in enumerate(files):
        size = path.stat().st_size
        with open(path, "rb") as f:
            header = f.readline()
            if i == 0:
                yield header
            pos, carry = f.tell(), b""
            while pos < size:
                chunk = f.read(min(CSV_CHUNK, size - pos))
                if not chunk:
                    break
                pos += len(chunk)
                data = carry + chunk
                cut = records.complete_rows(data)
                if cut:
                    yield data[:cut]
                carry = data[cut:]


def _page(title: str, body: str, status: int = 200) -> Response:
    text = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}"
        "td,th{padding:.3em .8em;text-align:left;border-bottom:1px solid #ddd}"
        "pre,code{white-space:pre-wrap}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{body}"
        "</body></html>"
    )
    return make_response(text, status, {"Content-Type": "text/html; charset=utf-8"})


_extension: WebUIExtension | None = None


def install(events: Events, plugin: Any) -> WebUIExtension:
    """Register the web UI extension (once per process; called by `plugin.install`)."""
    global _extension
    if _extension is None:
        _extension = WebUIExtension(plugin)
        events.init.add_listener(_extension.on_init)
    return _extension
