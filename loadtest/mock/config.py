"""MockConfig: every knob of the mock Chat API, and loading it from TOML.

Defaults are the documented ones (see :mod:`loadtest.mock.profiles` for the latency and
capacity table). A TOML file holds the same keys at its top level, or under a ``[mock]``
table (so the project's ``loadtest.toml`` can carry it); unknown keys are an error naming
the valid ones::

    seed = 7
    latency_scale = 1.0
    idle_timeout = 300            # seconds
    max_conversations = 200000
    max_body = 65536              # bytes
    end_after = 8                 # turns; 0 = never by count
    end_probability = 0.05        # per turn
    handoff_rate = 0.03           # per turn, times the variant's handoff_factor
    turn_growth = 0.03            # respond latency +3 % per turn
    overload_status = 503         # or 429 (then Retry-After: overload_retry_after)
    faults = ["respond:503:0.05", "uk.create:429:0.1:retry_after=2"]

    [regions.uk]                  # partial: unspecified fields keep their defaults
    slots = 48
    queue_limit = 96
    respond = { median_ms = 140, p99_ms = 450 }

    strict_variants = false       # true: an undeclared variant_id is a 422
    versions = ["v1"]             # API versions served (other path versions are 404)

    [variants.b]                  # a new name adds a variant
    brand = "Acme Rentals"
    latency_factor = 1.3
    handoff_factor = 2.5
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from loadtest import api
from loadtest.mock.faults import Fault, parse_faults
from loadtest.mock.profiles import LogNormal, RegionProfile, Variant, default_regions, default_variants


@dataclass
class MockConfig:
    """Everything that shapes the mock's behaviour. Safe to share between regions."""

    seed: int | None = 1
    latency_scale: float = 1.0
    idle_timeout: float = 300.0
    max_conversations: int = 200_000
    max_body: int = 64 * 1024
    end_after: int = 8
    end_probability: float = 0.05
    handoff_rate: float = 0.03
    turn_growth: float = 0.03
    faults: tuple[Fault, ...] = ()
    regions: dict[str, RegionProfile] = field(default_factory=default_regions)
    variants: dict[str, Variant] = field(default_factory=default_variants)
    # Overload (capacity queue full): 503, or 429 with Retry-After.
    overload_status: int = 503
    overload_retry_after: float = 1.0
    # Credentials; None: env POLYAI_API_KEY / POLYAI_TOKEN, else the dummy pair in loadtest.api.
    api_key: str | None = None
    token: str | None = None
    # An unknown variant_id on create: 422 when strict, else served with the base profile.
    strict_variants: bool = False
    # Accepted path segments (others are 404); None accepts any. The API documents v1.
    versions: tuple[str, ...] | None = (api.DEFAULT_VERSION,)
    accounts: tuple[str, ...] | None = None
    projects: tuple[str, ...] | None = None
    # HTTP front end: "fast" (asyncio protocol on httptools, loadtest.mock.protocol) or "aiohttp".
    engine: str = "fast"

    def __post_init__(self) -> None:
        self.faults = parse_faults(self.faults)
        if self.latency_scale < 0:
            raise ValueError("latency_scale must be >= 0")
        if self.idle_timeout <= 0:
            raise ValueError("idle_timeout must be > 0 seconds")
        if self.max_conversations < 1:
            raise ValueError("max_conversations must be >= 1")
        if self.max_body < 1:
            raise ValueError("max_body must be >= 1 byte")
        if self.end_after < 0:
            raise ValueError("end_after must be >= 0 (0 = never end by turn count)")
        for name in ("end_probability", "handoff_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.overload_status not in (429, 503):
            raise ValueError("overload_status must be 429 or 503")
        if self.engine not in ("fast", "aiohttp"):
            raise ValueError("engine must be 'fast' or 'aiohttp'")
        unknown = [r for r in self.regions if r not in api.REGIONS]
        if unknown:
            raise ValueError(f"unknown region(s) {', '.join(unknown)}; known: {', '.join(api.REGIONS)} (add a region to loadtest/api.py REGIONS)")
        # Regions added to api.REGIONS after this config was built still get a profile.
        defaults = default_regions()
        for name in api.REGIONS:
            self.regions.setdefault(name, defaults[name])

    def credentials(self) -> tuple[str, str]:
        """The (api key, token) the mock accepts."""
        key = self.api_key if self.api_key is not None else os.environ.get(api.API_KEY_ENV) or api.DUMMY_API_KEY
        token = self.token if self.token is not None else os.environ.get(api.TOKEN_ENV) or api.DUMMY_TOKEN
        return key, token

    def replace(self, **changes: Any) -> "MockConfig":
        return dataclasses.replace(self, **changes)


_SCALARS = {f.name for f in dataclasses.fields(MockConfig)} - {"regions", "variants", "faults"}
_REGION_KEYS = {"create", "respond", "close", "slots", "queue_limit"}
_LATENCY_KEYS = {"median_ms", "p99_ms"}
_VARIANT_KEYS = {f.name for f in dataclasses.fields(Variant)}


def _unknown(where: str, keys: Iterable[str], valid: Iterable[str]) -> None:
    bad = sorted(set(keys) - set(valid))
    if bad:
        raise ValueError(f"unknown key(s) {', '.join(map(repr, bad))} in {where}; valid: {', '.join(sorted(valid))}")


def config_from_dict(data: Mapping[str, Any], base: MockConfig | None = None) -> MockConfig:
    """A MockConfig from plain data (as parsed from TOML), over ``base`` or the defaults."""
    if "mock" in data and isinstance(data["mock"], Mapping):
        data = data["mock"]
    _unknown("mock config", data, _SCALARS | {"regions", "variants", "faults"})
    base = base or MockConfig()
    changes: dict[str, Any] = {k: v for k, v in data.items() if k in _SCALARS}
    for key in ("versions", "accounts", "projects"):
        if key in changes and changes[key] is not None:
            changes[key] = tuple(changes[key])

    regions = dict(base.regions)
    for name, table in data.get("regions", {}).items():
        if name not in api.REGIONS:
            raise ValueError(f"unknown region {name!r} in [regions]; known: {', '.join(api.REGIONS)}")
        _unknown(f"[regions.{name}]", table, _REGION_KEYS)
        profile = regions[name]
        updates: dict[str, Any] = {}
        for endpoint in api.ENDPOINTS:
            if endpoint in table:
                _unknown(f"[regions.{name}].{endpoint}", table[endpoint], _LATENCY_KEYS)
                old = profile.latency(endpoint)
                updates[endpoint] = LogNormal(float(table[endpoint].get("median_ms", old.median_ms)), float(table[endpoint].get("p99_ms", old.p99_ms)))
        if "slots" in table:
            updates["slots"] = int(table["slots"])
            updates.setdefault("queue_limit", 2 * updates["slots"])
        if "queue_limit" in table:
            updates["queue_limit"] = int(table["queue_limit"])
        regions[name] = dataclasses.replace(profile, **updates)
        if regions[name].slots < 1 or regions[name].queue_limit < 0:
            raise ValueError(f"[regions.{name}]: slots must be >= 1 and queue_limit >= 0")
    changes["regions"] = regions

    variants = dict(base.variants)
    for name, table in data.get("variants", {}).items():
        _unknown(f"[variants.{name}]", table, _VARIANT_KEYS)
        if name in variants:
            variants[name] = dataclasses.replace(variants[name], **table)
        else:
            if "brand" not in table:
                raise ValueError(f"[variants.{name}] needs a brand")
            variants[name] = Variant(**table)
    changes["variants"] = variants

    if "faults" in data:
        changes["faults"] = tuple(base.faults) + parse_faults(data["faults"])
    return dataclasses.replace(base, **changes)


def load_config(path: str | os.PathLike, base: MockConfig | None = None) -> MockConfig:
    """Read a TOML file (see the module docstring); ValueError on unknown keys or bad values."""
    with open(path, "rb") as f:
        try:
            data = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{path}: not valid TOML: {e}") from None
    try:
        return config_from_dict(data, base)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from None
