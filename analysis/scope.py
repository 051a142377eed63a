"""Scopes: the dotted names in front of a metric that narrow it to a region, a variant and/or
an endpoint, in any order.

One grammar for the SLOs (`uk.a.respond.p95 < 800ms`, `loadtest.slo`) and the regression
thresholds (`uk.respond.p95:+10%`, `analysis.regression`):

    names = split_names("uk.respond.p99.9")      # ["uk", "respond", "p99.9"]
    parse_scope(names[:-1], variants=["a", "b"]) # {"region": "uk", "endpoint": "respond"}

A name is a region if it is one of `records.REGIONS`, an endpoint if one of `records.ENDPOINTS`, and
otherwise a variant (checked against the run's variants when they are known).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from analysis.records import ENDPOINTS, REGIONS

#: The dimensions a scope can narrow, in the order its text is normalised to.
DIMENSIONS = ("region", "variant", "endpoint")

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")


def split_names(text: str) -> list[str]:
    """Split on dots, re-joining a percentile's decimals: "uk.p99.9" → ["uk", "p99.9"]."""
    out: list[str] = []
    for tok in text.replace(" ", "").split("."):
        if out and tok.isdigit() and re.match(r"^p\d+$", out[-1]):
            out[-1] = f"{out[-1]}.{tok}"
        else:
            out.append(tok)
    return out


def parse_scope(names: Sequence[str], variants: Iterable[str] | None = None) -> dict[str, str]:
    """{dimension: name} of a scope's names; ValueError saying which name is wrong.

    `variants`, when given, is the run's variant list: a name that is not a region, an
    endpoint or one of these is refused. When None, any other valid name is a variant.
    """
    known = None if variants is None else [str(v) for v in variants if v]
    scope: dict[str, str] = {}
    for name in names:
        if name in REGIONS:
            kind = "region"
        elif name in ENDPOINTS:
            kind = "endpoint"
        elif not _NAME_RE.match(name):
            raise ValueError(f"{name!r} is not a valid scope name")
        elif known is not None and name not in known:
            raise ValueError(
                f"unknown scope {name!r}: not a region ({', '.join(REGIONS)}), an endpoint "
                f"({', '.join(ENDPOINTS)}) or a variant of this run ({', '.join(known) or 'none'})"
            )
        else:
            kind = "variant"
        if kind in scope:
            raise ValueError(f"two {kind}s in scope: {scope[kind]!r} and {name!r}")
        scope[kind] = name
    return scope


def scope_text(region: str | None, variant: str | None, endpoint: str | None) -> str:
    """The scope as dotted names in region.variant.endpoint order; "all" when none."""
    return ".".join(p for p in (region, variant, endpoint) if p) or "all"
