"""How the report pages and tables write numbers, durations, times and settings: one dash for
a missing value, units that fit the magnitude, signed deltas, and secrets never shown."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

from analysis.stats import ALL

#: Keys whose values are never shown (matched anywhere in the key, case-insensitive).
SECRET_KEY = re.compile(r"key|token|secret|passw|pwd|auth|credential|cookie|session|bearer|private", re.I)
REDACTED = "••• (redacted)"


DASH = "–"  # what a missing or non-numeric value shows


def _number(v: Any) -> float | None:
    """v as a float, or None when it is missing, not a number, or NaN."""
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return None if v != v else v


def _sign(v: float) -> str:
    return "+" if v > 0 else "−" if v < 0 else "±"


def fmt_ms(v: Any) -> str:
    if (v := _number(v)) is None:
        return DASH
    if abs(v) >= 10_000:
        return f"{v / 1000:,.1f} s"
    if abs(v) >= 100:
        return f"{v:,.0f} ms"
    if abs(v) >= 10:
        return f"{v:,.1f} ms"
    return f"{v:,.2f} ms"


def fmt_num(v: Any) -> str:
    if (v := _number(v)) is None:
        return DASH
    return f"{v:,.0f}" if abs(v) >= 100 or v == int(v) else f"{v:,.1f}"


def fmt_rate(v: Any, digits: int = 1) -> str:
    if (v := _number(v)) is None:
        return DASH
    if 0 < v < 0.001:
        return "<0.1%"
    return f"{v:.{digits}%}"


def fmt_signed_ms(v: float) -> str:
    return DASH if v != v else _sign(v) + fmt_ms(abs(v))


def fmt_signed_pct(v: float, digits: int = 0) -> str:
    return DASH if v != v else _sign(v) + f"{abs(v):.{digits}%}"


def fmt_pt(v: float) -> str:
    return DASH if v != v else _sign(v) + f"{abs(v) * 100:.2f} pt"


def fmt_duration(s: Any) -> str:
    if (s := _number(s)) is None:
        return DASH
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    if h:
        return f"{h} h {m:02d} min"
    if m:
        return f"{m} min {sec:02d} s" if sec else f"{m} min"
    return f"{sec} s"


def fmt_time(epoch: Any) -> str:
    try:
        return dt.datetime.fromtimestamp(float(epoch), dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (TypeError, ValueError, OverflowError, OSError):
        return "–"


def label(v: str) -> str:
    if v == ALL:
        return "all"
    return v if v else "–"


# --------------------------------------------------------------------------- config


def redact(obj: Any, key: str = "") -> Any:
    """A copy of `obj` with the value of every secret-looking key replaced."""
    if key and SECRET_KEY.search(str(key)) and not isinstance(obj, (dict, list)):
        return REDACTED if obj not in (None, "", False) else obj
    if isinstance(obj, dict):
        return {
            k: (REDACTED if SECRET_KEY.search(str(k)) and not isinstance(v, (dict, list)) and v not in (None, "", False) else redact(v, k))
            for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [redact(v, key) for v in obj]
    return obj


def flatten(obj: Any, prefix: str = "", limit: int = 400) -> list[tuple[str, str]]:
    """Nested config → [(dotted.key, value text)], values truncated, at most `limit` rows."""
    out: list[tuple[str, str]] = []

    def walk(o: Any, p: str) -> None:
        if len(out) >= limit:
            return
        if isinstance(o, dict) and o:
            for k, v in o.items():
                walk(v, f"{p}.{k}" if p else str(k))
        else:
            text = json.dumps(o, default=str, ensure_ascii=False) if not isinstance(o, str) else o
            out.append((p or "(value)", text if len(text) <= 300 else text[:299] + "…"))

    walk(obj, prefix)
    return out


# --------------------------------------------------------------------------- view model
