"""`loadtest capacity`: per region, the highest load that stays within SLO (the knee).

    loadtest capacity --regions us,uk --start 8 --step 8 --max 128 --hold 15s

For each region in turn, one Locust run climbs a staircase of concurrent conversations
(users) with the `steps:` load shape: `start`, `start + step`, … up to `max`, each level held
for `hold`. Step boundaries are taken from Locust's own log of each shape change (the shape
ticks once a second, so a step starts up to a second after its nominal time). The first
`settle` part of every step (default 30 %, at least 0.5 s) is ramp-up and is ignored; the
rest is the step's stable window. As soon as a step ends, its window is read from the growing
requests.csv and judged with `loadtest.slo.evaluate`; after `confirm` failing steps in a row
(default 2) that region's Locust is stopped gracefully (SIGINT, see `processes.stop_locust`), so the
search costs one step past the first failure and no more. One mock serves all regions
(started once). Ctrl-C stops the current region gracefully and still writes the outputs.

**By arrival rate** (`--arrival-rate-start/--arrival-rate-step/--arrival-rate-max`, the
open model): the staircase is of conversations/s per region instead of users. Arrivals are
planned whatever the response times (no coordinated omission), from a pool of users large
enough for the highest rate (`--users` to choose it); the step boundaries are the level
changes logged by `loadtest.inlocust.arrivals` (exact epochs). Each step is also judged on delivering
its rate: the share of planned conversations dropped for want of a free user
(`--max-dropped`, default 1 %) and the p95 schedule lag (`--max-lag`, default 1 s), from
arrivals.csv; a step that cannot start its conversations on time did not offer its rate.

The knee of a region is the highest level that passed before that confirmed failure,
reported in users and in conversations per second (successful creates/s measured in that
step's window). Why two failures: a single step's p95 over a few seconds of data can be
knocked over by one GC pause or a noisy neighbour on the load generator; a real capacity
limit fails the next, higher step too. An isolated failure is listed, not taken as the knee.
When the run ends at `max` the trailing failure counts without confirmation.

SLOs: the `--slo` expressions (scoped to other regions are skipped for a region), or by
default, per region:

    error_rate < 1%
    respond.p95 < max(2 × B, B + 50 ms)      B = respond p95 of the region at light load

B is the p95 of the successful respond calls of the first step, pooled with the next steps
(up to 3, while they pass the error SLO and their p95 is within 2 × that of the pool so far:
a step already queueing is not light load) until there are 100 of them: a p95 of a dozen
values would make a noisy threshold. Steps pooled into B are judged live on errors only, and on
everything in the final table.

"Latency doubled since light load" marks the onset of queueing on any service without
knowing its absolute latency; the +50 ms floor keeps millisecond-fast targets from failing
on the load generator's own jitter. This needs the first steps to be a light load (keep
`--start` small).

Windows are defined by request *completion* time (start + latency), so a window is complete
about a second (the recorder's flush) after it ends; the final table is recomputed from the
complete run folders after Locust exits. Latency columns (p50/p95/p99) are of successful
respond calls, the customer-facing turn.

Output, in one capacity folder `<out>/<id>/` (`<out>/latest` points to it): a normal run
folder per region (`<id>/<region>/`, reportable with `loadtest report`), `capacity.csv`
(one row per measured step), `capacity.json` (plan, SLOs, steps, knees), `capacity.md`,
`capacity.png` and a self-contained `capacity.html`.

Exit codes: 0 every region has a knee (or passed up to --max: the knee is at least max),
1 some region failed its SLOs already at --start, 2 usage error, 3 a run failed.

The package, by concern: `plan` (the staircase, the SLO rules, the knee rule), `steps` (one
step's statistics and verdict, a region's result), `search` (the loop, running Locust through
the process layer), `outputs` (CSV, JSON, Markdown, HTML, the chart), `command` (the flags and
the entry point, `capacity_command`).
"""

from loadtest.commands.capacity.command import add_arguments, capacity_command, plan_from_args
from loadtest.commands.capacity.outputs import CSV_COLUMNS, write_outputs
from loadtest.commands.capacity.plan import Knee, Plan, default_latency_slo, find_knee, region_slos, should_stop
from loadtest.commands.capacity.search import search, search_region, set_baseline
from loadtest.commands.capacity.steps import RegionResult, judge_delivery, measure_step

__all__ = [
    "CSV_COLUMNS",
    "Knee",
    "Plan",
    "RegionResult",
    "add_arguments",
    "capacity_command",
    "default_latency_slo",
    "find_knee",
    "judge_delivery",
    "measure_step",
    "plan_from_args",
    "region_slos",
    "search",
    "search_region",
    "set_baseline",
    "should_stop",
    "write_outputs",
]
