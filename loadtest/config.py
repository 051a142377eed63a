"""The scenario: every setting of a load test, in one table.

Each setting is declared once in `SETTINGS`; from that table come the `loadtest run` flags,
the options registered with Locust's parser (so they appear in the web UI start form and work
in `locust.conf`), the `loadtest.toml` keys and the `LOADTEST_*` environment variables.

Layering, lowest first: defaults < scenario file < environment < command-line flags.
Values are validated before any traffic; a bad one raises `ConfigError` naming the setting,
the value and what to do.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtest import api, tls

DEFAULT_CORPUS = Path(__file__).parent / "data" / "messages.txt"


class ConfigError(ValueError):
    """A setting is invalid. The message names it and says what to do."""


# ---- value parsers: strings (flags, env, web form) or TOML values → typed values ----------

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|h|m|s)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any) -> float:
    """Seconds from '30s', '2m', '1h30m', '250ms' or plain seconds (90, '1.5')."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value).strip().lower().replace(" ", "")
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise ValueError(f"'{value}' is not a duration; use e.g. 45, 30s, 2m, 1h30m, 250ms") from None
            seconds = sum(float(n) * _UNIT_S[u] for n, u in parts)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"'{value}' must be a finite, non-negative duration")
    return seconds


def parse_int_range(value: Any) -> tuple[int, int]:
    """'3' → (3, 3); '2-6' → (2, 6)."""
    low, _, high = str(value).strip().partition("-")
    try:
        lo, hi = int(low), int(high or low)
    except ValueError:
        raise ValueError(f"'{value}' is not a number or a range like 2-6") from None
    if lo < 0 or hi < lo:
        raise ValueError(f"'{value}': need 0 <= low <= high")
    return lo, hi


def parse_duration_range(value: Any) -> tuple[float, float]:
    """'1s' → (1, 1); '0.5-2' or '500ms-2s' → (0.5, 2.0) seconds."""
    if isinstance(value, (int, float)):
        return parse_duration(value), parse_duration(value)
    if str(value).strip().startswith("-"):
        raise ValueError(f"'{value}' is negative; use seconds >= 0: 1, 0.5-2 or 500ms-2s")
    low, _, high = str(value).strip().partition("-")
    lo, hi = parse_duration(low), parse_duration(high or low)
    if hi < lo:
        raise ValueError(f"'{value}': need low <= high")
    return lo, hi


def parse_weights(value: Any) -> dict[str, float]:
    """'us,uk' → {us: 1, uk: 1}; 'us:3,uk:1' → weights; a TOML table or list works too."""
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, (list, tuple)):
        items = [(str(v), 1.0) for v in value]
    else:
        items = []
        for part in filter(None, (p.strip() for p in str(value).split(","))):
            name, _, weight = part.partition(":")
            items.append((name.strip(), weight.strip() or 1.0))
    weights: dict[str, float] = {}
    for name, weight in items:
        try:
            w = float(weight)
        except (TypeError, ValueError):
            raise ValueError(f"weight '{weight}' of '{name}' is not a number") from None
        if not name or w <= 0:
            raise ValueError(f"'{name}:{weight}': names must be non-empty and weights positive")
        weights[name] = w
    return weights


def parse_mapping(value: Any) -> dict[str, str]:
    """'uk=http://127.0.0.1:8081,us=…' or a TOML table → {uk: url, …}."""
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    mapping = {}
    for part in filter(None, (p.strip() for p in str(value).split(","))):
        key, sep, val = part.partition("=")
        if not sep or not key.strip() or not val.strip():
            raise ValueError(f"'{part}' is not KEY=VALUE")
        mapping[key.strip()] = val.strip()
    return mapping


def parse_json_object(value: Any) -> dict:
    """Integration attributes: a TOML table, a JSON object, or 'k=v,k2=v2'."""
    if isinstance(value, dict):
        return value
    text = str(value).strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"not valid JSON: {e.msg} at column {e.colno}") from None
        if not isinstance(parsed, dict):
            raise ValueError("must be a JSON object")
        return parsed
    return parse_mapping(text)


def parse_rate(value: Any) -> dict[str, float]:
    """Open-model arrival rate, conversations/s: '' (closed model), '5' (total) or 'us:2,uk:3'."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {"*": float(value)} if value > 0 else {}
    text = str(value).strip()
    if not text:
        return {}
    try:
        total = float(text)
    except ValueError:
        return parse_weights(text)
    if total <= 0:
        raise ValueError(f"'{value}' must be positive (or empty for the closed model)")
    return {"*": total}


def parse_arrival_steps(value: Any) -> dict[str, float]:
    """The open model's staircase: 'step=2,every=15s,max=20' (conversations/s), or '' for none.

    From --arrival-rate (the first level, total over regions) the total rate rises by `step`
    every `every` up to `max`; each region keeps its share. Arrivals stop after the last level.
    """
    if isinstance(value, dict):
        fields = {str(k): v for k, v in value.items()}
    else:
        text = str(value).strip()
        if not text:
            return {}
        fields = parse_mapping(text)
    usage = "use step=RATE,every=DURATION,max=RATE, e.g. step=2,every=15s,max=20"
    unknown = set(fields) - {"step", "every", "max"}
    if unknown or len(fields) != 3:
        raise ValueError(f"'{value}': {usage}")
    try:
        out = {"step": float(fields["step"]), "every": parse_duration(fields["every"]), "max": float(fields["max"])}
    except ValueError as e:
        raise ValueError(f"'{value}': {e}; {usage}") from None
    if out["step"] <= 0 or out["every"] <= 0 or out["max"] <= 0:
        raise ValueError(f"'{value}': step, every and max must be positive; {usage}")
    return out


def arrival_levels(rate: dict[str, float], steps: dict[str, float]) -> list[float]:
    """The total arrival rates of the staircase, first to last (one level without steps)."""
    start = sum(rate.values())
    if not steps:
        return [start]
    n = int(math.floor((steps["max"] - start) / steps["step"] + 1e-9))
    levels = [round(start + i * steps["step"], 9) for i in range(n + 1)]
    return levels + ([steps["max"]] if levels[-1] < steps["max"] - 1e-9 else [])


def parse_list(value: Any) -> list[str]:
    """'x,y' or ['x', 'y,z'] (repeated flags, TOML) → ['x', 'y', 'z']."""
    items = value if isinstance(value, (list, tuple)) else [value]
    return [p.strip() for item in items for p in str(item).split(",") if p.strip()]


def parse_slo_list(value: Any) -> list[str]:
    """SLO expressions. In a scenario file an entry may also be a table, like k6's threshold
    objects: {expr = "error_rate < 1%", abort_on_fail = true, abort_grace = "10s"}, which
    becomes the expression 'error_rate < 1% abort-on-fail=10s' (see loadtest.slo)."""
    items = value if isinstance(value, (list, tuple)) else parse_list(value)
    out = []
    for item in items:
        if not isinstance(item, dict):
            out.append(str(item))
            continue
        unknown = sorted(set(item) - {"expr", "abort_on_fail", "abort_grace"})
        if unknown or "expr" not in item:
            raise ValueError(
                f'SLO table {item}: use {{expr = "error_rate < 1%", abort_on_fail = '
                f'true, abort_grace = "10s"}}' + (f"; unknown key(s) {', '.join(unknown)}" if unknown else "; expr is missing")
            )
        text = str(item["expr"]).strip()
        if parse_bool(item.get("abort_on_fail", False)):
            grace = item.get("abort_grace")
            text += " abort-on-fail" + ("" if grace in (None, "") else f"={grace}")
        elif "abort_grace" in item:
            raise ValueError(f"SLO table {item}: abort_grace needs abort_on_fail = true")
        out.append(text)
    return out


def _non_negative(kind: type, noun: str) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:  # a `kind`: the annotation is set below
        try:
            x = kind(value)
        except (TypeError, ValueError):
            raise ValueError(f"'{value}' is not {noun}") from None
        if x < 0:
            raise ValueError(f"'{value}' is negative")
        return x

    parse.__annotations__["return"] = kind.__name__  # the Scenario attribute's type
    return parse


_positive_int = _non_negative(int, "a whole number")
_positive_float = _non_negative(float, "a number")


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if str(value) not in choices:
            raise ValueError(f"'{value}' is not one of {', '.join(choices)}")
        return str(value)

    return parse


def parse_bool(value: Any) -> bool:
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"'{value}' is not true or false")


def _text(value: Any) -> str:
    return str(value)


# ---- the settings table --------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    name: str  # python name; flag is --name-with-dashes, env LOADTEST_NAME
    default: Any  # in its string form, as a user would type it
    parse: Callable[[Any], Any]
    help: str
    locust: bool = True  # registered with Locust's parser (in the web UI form)
    #: Part of the scenario (the load it describes), so in the config hash that decides
    #: whether a baseline is comparable; False for where results go and how they are judged.
    scenario: bool = True

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "LOADTEST_" + self.name.upper()


SETTINGS: tuple[Setting, ...] = (
    # what to hit
    Setting("target", "mock", _choice("mock", "real"), "mock: the embedded mock on loopback; real: PolyAI's hosts (needs credentials and --yes)"),
    Setting("yes", "false", parse_bool, "confirm that --target real may send load to PolyAI's hosts"),
    Setting("regions", ",".join(api.REGIONS), parse_weights, "regions and optional weights, e.g. us,uk or us:3,uk:1"),
    Setting(
        "base_urls",
        "",
        parse_mapping,
        "per-region base URL overrides, e.g. uk=http://127.0.0.1:8081 (default: PolyAI's host "
        f"for --target real, `loadtest mock` on port {api.MOCK_DEFAULT_PORT}+ for the mock)",
    ),
    Setting("api_version", api.DEFAULT_VERSION, _text, "API version path segment"),
    Setting("account", api.DEFAULT_ACCOUNT, _text, "account_id (workspace slug or ws-…)"),
    Setting("project", api.DEFAULT_PROJECT, _text, "project_id (slug or PROJECT-…)"),
    # what a customer does
    Setting("variants", "a,b", parse_weights, "variant_id values and optional weights, e.g. a,b or control:9,new:1; empty for none"),
    Setting("turns", "2-6", parse_int_range, "respond turns per conversation: 3 or a range 2-6"),
    Setting("think_time", "0.5-1.5", parse_duration_range, "pause between turns, seconds: 1, 0.5-2 or 500ms-2s"),
    Setting(
        "corpus",
        "",
        _text,
        "file of customer messages, one per line (default: the packaged loadtest/data/messages.txt; in a fleet the file must exist on every worker)",
    ),
    Setting("integration_attributes", "", parse_json_object, "create's integration_attributes: JSON object or k=v,k2=v2"),
    Setting("request_timeout", "10s", parse_duration, "client timeout per request"),
    Setting("retry_429", "0", _positive_int, "retry a 429 up to N times after its Retry-After (each try is its own row)"),
    Setting("max_rps", "0", _positive_float, "cap on requests/s per process (0 = none; a real target defaults to 20)"),
    # how connections are made
    Setting("ca_bundle", "", tls.check_bundle, "PEM file of CA certificates to verify servers against (default: the system trust store)"),
    Setting("insecure", "false", parse_bool, "do not verify TLS certificates (prints a warning; never with production credentials)"),
    Setting(
        "connections",
        "per-conversation",
        _choice("per-conversation", "per-user"),
        "per-conversation: a new connection (and TLS handshake) for each conversation, like a "
        "new customer; per-user: each user keeps its connection across conversations",
    ),
    # how much load, for how long (loadtest run flags; Locust has its own for these)
    Setting("users", "16", _positive_int, "concurrent users (customers)", locust=False),
    Setting("spawn_rate", "8", _positive_float, "users started per second", locust=False),
    Setting("duration", "45s", parse_duration, "run time, e.g. 30s, 2m", locust=False),
    Setting("stop_timeout", "10s", parse_duration, "on stop, time to close open conversations", locust=False),
    Setting("arrival_rate", "", parse_rate, "open model: new conversations/s, total (5) or per region (us:2,uk:3); empty = closed model"),
    Setting("arrival", "poisson", _choice("poisson", "constant"), "open model arrivals: poisson or constant spacing"),
    Setting("arrival_steps", "", parse_arrival_steps, "open model staircase from --arrival-rate: step=RATE,every=DURATION,max=RATE (conversations/s, total)"),
    Setting("processes", "0", _positive_int, "Locust worker processes on this machine (0 = one process)", locust=False),
    Setting(
        "workers",
        "0",
        _positive_int,
        "run as the master of N workers started elsewhere with `loadtest worker --master-host "
        "THIS_HOST`; the test starts once all N are connected (0 = no fleet)",
        locust=False,
    ),
    Setting("master_bind_host", "*", _text, "with --workers: the interface the master listens on for workers (* = all)", locust=False),
    Setting("master_bind_port", "5557", _positive_int, "with --workers: the port the master listens on for workers", locust=False),
    Setting("shape", "", _text, "load shape, e.g. ramp:users=50,ramp=30s,hold=1m"),
    Setting("slos", "", parse_slo_list, "SLO expressions, e.g. 'respond.p95 < 800ms'", locust=False, scenario=False),
    Setting(
        "abort_on_fail",
        "false",
        parse_bool,
        "judge the SLOs live over a trailing window; the first breach stops the run (status aborted, exit code 1)",
        locust=False,
        scenario=False,
    ),
    Setting("abort_grace", "30s", parse_duration, "no live SLO verdict before this time into the run (k6's delayAbortEval)", locust=False, scenario=False),
    Setting("abort_window", "30s", parse_duration, "the trailing window of requests the live SLO verdict is judged on", locust=False, scenario=False),
    # the mock
    Setting("faults", "", parse_list, "mock fault specs, e.g. respond:503:0.05", locust=False),
    Setting("mock_config", "", _text, "TOML file of the mock's profiles, variants, capacity, faults", locust=False),
    Setting("mock_seed", "1", _positive_int, "seed of the mock's latencies and replies", locust=False),
    Setting("mock_latency_scale", "1", _positive_float, "multiply the mock's latency profiles (0 = no delay)", locust=False),
    Setting("mock_tls", "false", parse_bool, "serve the mock over HTTPS with a throwaway CA (its bundle is handed to the users)", locust=False),
    # where results go
    Setting("out", "reports", _text, "folder for run folders", locust=False, scenario=False),
    Setting("warmup", "0s", parse_duration, "exclude the first N seconds from the report", locust=False, scenario=False),
    # the regression gate: this run against an earlier one
    Setting(
        "baseline",
        "",
        _text,
        "an earlier run folder of the same scenario to compare with in the report; with --fail-on-regression, the gate's baseline",
        locust=False,
        scenario=False,
    ),
    Setting(
        "fail_on_regression",
        "false",
        parse_bool,
        "exit 1 when a region × variant × endpoint regressed against --baseline beyond a threshold, the whole 95%% interval of the change beyond it",
        locust=False,
        scenario=False,
    ),
    Setting(
        "regressions",
        "",
        parse_list,
        "regression thresholds [SCOPE.]METRIC:+LIMIT, e.g. 'p95:+10%%' or 'uk.respond.p99:+20%%' (default: p95:+10%%, p99:+15%%, error_rate:+1pt)",
        locust=False,
        scenario=False,
    ),
    Setting(
        "baseline_any_config",
        "false",
        parse_bool,
        "compare with a --baseline even when it ran a different scenario (config hash differs)",
        locust=False,
        scenario=False,
    ),
)
SETTINGS_BY_NAME = {s.name: s for s in SETTINGS}
LIST_SETTINGS = {"slos", "faults", "regressions"}
#: Settings that say where results go and how they are judged, not what load is sent.
NOT_SCENARIO = frozenset(s.name for s in SETTINGS if not s.scenario) | {"yes"}


def value_type(setting: Setting) -> str:
    """The type of a setting's parsed value, as written in `Scenario`: its parser's return annotation."""
    return str(inspect.signature(setting.parse).return_annotation).replace("typing.", "")


def fields_source() -> str:
    """`Scenario`'s typed attributes, one per setting, in the table's order (the block below)."""
    return "".join(f"    {s.name}: {value_type(s)}\n" for s in SETTINGS)


_FIELDS_BEGIN = "    # -- generated from SETTINGS by `python -m loadtest.config`; tests/test_config.py checks it --\n"
_FIELDS_END = "    # -- end of generated attributes --\n"


class Scenario:
    """Resolved, typed settings: one attribute per setting of `SETTINGS`. Build with `resolve()`.

    The attributes are declared (generated from the table) so that editors and type checkers
    know them; their values live in `values`, which run.json records.
    """

    # -- generated from SETTINGS by `python -m loadtest.config`; tests/test_config.py checks it --
    target: str
    yes: bool
    regions: dict[str, float]
    base_urls: dict[str, str]
    api_version: str
    account: str
    project: str
    variants: dict[str, float]
    turns: tuple[int, int]
    think_time: tuple[float, float]
    corpus: str
    integration_attributes: dict
    request_timeout: float
    retry_429: int
    max_rps: float
    ca_bundle: str
    insecure: bool
    connections: str
    users: int
    spawn_rate: float
    duration: float
    stop_timeout: float
    arrival_rate: dict[str, float]
    arrival: str
    arrival_steps: dict[str, float]
    processes: int
    workers: int
    master_bind_host: str
    master_bind_port: int
    shape: str
    slos: list[str]
    abort_on_fail: bool
    abort_grace: float
    abort_window: float
    faults: list[str]
    mock_config: str
    mock_seed: int
    mock_latency_scale: float
    mock_tls: bool
    out: str
    warmup: float
    baseline: str
    fail_on_regression: bool
    regressions: list[str]
    baseline_any_config: bool
    # -- end of generated attributes --

    values: dict[str, Any]
    sources: dict[str, str]  # name → default|file|env|flag
    notes: list[str]  # decisions taken for the user, to print

    def __init__(self, values: dict[str, Any] | None = None, sources: dict[str, str] | None = None, notes: list[str] | None = None) -> None:
        self.values = {} if values is None else values
        self.sources = {} if sources is None else sources
        self.notes = [] if notes is None else notes

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __repr__(self) -> str:
        return f"Scenario({self.values!r})"

    def raw(self) -> dict[str, Any]:
        """JSON-able view for run.json (no secrets live in the scenario)."""
        out = {}
        for key, value in self.values.items():
            out[key] = list(value) if isinstance(value, tuple) else value
        return out


def _parse(setting: Setting, value: Any, source: str) -> Any:
    try:
        return setting.parse(value)
    except ValueError as e:
        where = {"file": f"key '{setting.name}' in the scenario file", "env": f"environment variable {setting.env}", "flag": f"flag {setting.flag}"}.get(
            source, setting.name
        )
        raise ConfigError(f"{where}: {e}") from None


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a loadtest.toml: top-level keys are setting names (dashes or underscores)."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"scenario file {p} does not exist; pass an existing --config FILE") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"scenario file {p} is not valid TOML: {e}") from None
    out = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in SETTINGS_BY_NAME:
            raise ConfigError(f"scenario file {p}: unknown key '{key}'. Known keys: " + ", ".join(sorted(SETTINGS_BY_NAME)))
        out[name] = value
    return out


def resolve(file_values: dict[str, Any] | None = None, flags: dict[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> Scenario:
    """defaults < file < environment < flags, each parsed and then validated together."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    scenario = Scenario()
    for s in SETTINGS:
        value, source = s.default, "default"
        if file_values and s.name in file_values:
            value, source = file_values[s.name], "file"
        if s.env in env:
            value, source = env[s.env], "env"
        if flags and flags.get(s.name) is not None:
            value, source = flags[s.name], "flag"
        scenario.values[s.name] = _parse(s, value, source)
        scenario.sources[s.name] = source
    validate(scenario)
    return scenario


def validate(scenario: Scenario) -> None:
    unknown = [r for r in scenario.regions if r not in api.REGIONS]
    if unknown:
        raise ConfigError(f"unknown region(s) {', '.join(unknown)}; known: {', '.join(api.REGIONS)}")
    if not scenario.regions:
        raise ConfigError("no regions selected; pass e.g. --regions us,uk")
    stray = [r for r in scenario.base_urls if r not in api.REGIONS]
    if stray:
        raise ConfigError(f"--base-urls names unknown region(s) {', '.join(stray)}; known: {', '.join(api.REGIONS)}")
    for region, url in scenario.base_urls.items():
        if not re.match(r"^https?://[^/\s]+", url):
            raise ConfigError(f"base URL for {region} '{url}' is not an http(s) URL")
    for name in ("api_version", "account", "project"):
        if not re.fullmatch(r"[A-Za-z0-9._~-]+", scenario.values[name]):
            raise ConfigError(f"{name} '{scenario.values[name]}' is not a valid path segment")
    _arrival_regions(scenario)
    if scenario.target == "real" and scenario.sources.get("variants") == "default" and scenario.variants:
        # The mock's demo variants mean nothing to a real project: send one only when asked.
        scenario.values["variants"] = {}
        scenario.notes.append("real target: no variant_id is sent (pass --variants to send one)")
    if scenario.arrival_steps:
        if not scenario.arrival_rate:
            raise ConfigError("--arrival-steps climbs from --arrival-rate: set --arrival-rate too (the first level, conversations/s)")
        start = sum(scenario.arrival_rate.values())
        if scenario.arrival_steps["max"] < start:
            raise ConfigError(f"--arrival-steps max={scenario.arrival_steps['max']:g} is below --arrival-rate {start:g}; raise max or lower the rate")
    if scenario.turns[1] < 1:
        raise ConfigError("--turns must allow at least one respond turn")
    if scenario.workers and scenario.processes:
        raise ConfigError(
            "--workers and --processes exclude each other: --processes N starts N workers "
            "on this machine, --workers N waits for N started with `loadtest worker`; "
            "pass one of them (a worker machine can use `loadtest worker --processes N`)"
        )
    if not scenario.baseline and (scenario.fail_on_regression or scenario.regressions):
        what = "--fail-on-regression" if scenario.fail_on_regression else "--regression"
        raise ConfigError(f"{what} needs --baseline RUN_DIR: the earlier run to compare with (e.g. the last run of your main branch)")
    _load_limits(scenario)


def _load_limits(scenario: Scenario) -> None:
    """Values that parse but cannot make a test: refused before anything starts."""
    if scenario.users < 1:
        raise ConfigError(f"--users {scenario.users}: need at least 1 user (concurrent customers, or the open model's pool)")
    if scenario.spawn_rate <= 0:
        raise ConfigError(f"--spawn-rate {scenario.spawn_rate:g}: users would never start; use a positive rate, e.g. 8")
    if scenario.request_timeout <= 0:
        raise ConfigError("--request-timeout must be more than 0, e.g. 10s")
    if scenario.shape:  # a shape decides users and run time itself
        return
    if scenario.duration <= 0:
        raise ConfigError(f"--duration {scenario.duration:g}s: a test needs time; use e.g. 30s or 2m")
    if scenario.warmup >= scenario.duration:
        raise ConfigError(
            f"--warmup {scenario.warmup:g}s is not shorter than --duration {scenario.duration:g}s: nothing would be left to report; shorten the warm-up"
        )


def _arrival_regions(scenario: Scenario) -> None:
    """Per-region arrival rates and the run's regions must agree: a region without a rate
    would silently get no load. Without --regions, the rates' regions are the run's."""
    rates = scenario.arrival_rate
    if not rates or "*" in rates:
        return
    unknown = [r for r in rates if r not in api.REGIONS]
    if unknown:
        raise ConfigError(f"--arrival-rate names unknown region(s) {', '.join(unknown)}; known: {', '.join(api.REGIONS)}")
    if scenario.sources.get("regions") == "default":
        scenario.values["regions"] = {r: 1.0 for r in rates}
        scenario.notes.append(f"open model: regions {', '.join(rates)} (those --arrival-rate names)")
        return
    stray = [r for r in rates if r not in scenario.regions]
    if stray:
        raise ConfigError(f"--arrival-rate names region(s) {', '.join(stray)} that are not in --regions")
    missing = [r for r in scenario.regions if r not in rates]
    if missing:
        raise ConfigError(
            f"--arrival-rate gives no rate for region(s) {', '.join(missing)} of --regions; "
            "give each region a rate (e.g. us:2,uk:3), or one total rate split by the "
            "region weights (e.g. 5)"
        )


def base_urls(scenario: Scenario) -> dict[str, str]:
    """Region → base URL: an override, else PolyAI's host (real) or the default mock port."""
    defaults = api.REGIONS if scenario.target == "real" else api.mock_base_urls()
    return {r: scenario.base_urls.get(r, defaults[r]).rstrip("/") for r in scenario.regions}


def tls_policy(scenario: Scenario) -> tls.Policy:
    """How servers' certificates are verified (see `loadtest.tls`)."""
    return tls.Policy(ca_bundle=scenario.ca_bundle, insecure=scenario.insecure)


def load_corpus(path: str | Path) -> list[str]:
    """Customer messages, one per line; blank lines and # comments ignored. An empty path is
    the packaged corpus (found on every machine of a fleet, wherever it is installed)."""
    path = path or DEFAULT_CORPUS
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ValueError(f"cannot read corpus {path}: {e.strerror}; pass a readable --corpus FILE") from None
    except UnicodeDecodeError:
        raise ValueError(f"corpus {path} is not UTF-8 text; pass a text file, one message per line") from None
    messages = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not messages:
        raise ValueError(f"corpus {path} has no messages; put one customer message per line")
    return messages


def _write_fields(path: Path = Path(__file__)) -> None:
    """Rewrite `Scenario`'s generated block from the settings table."""
    text = path.read_text()
    head, rest = text.split(_FIELDS_BEGIN, 1)
    _, tail = rest.split(_FIELDS_END, 1)
    path.write_text(head + _FIELDS_BEGIN + fields_source() + _FIELDS_END + tail)


if __name__ == "__main__":
    _write_fields()
