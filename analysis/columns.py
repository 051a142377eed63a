"""The type of every column of the run folder's CSVs (`analysis.records` names the columns),
one table per file, for every reader: whole files are parsed by Arrow with these types
(`analysis.load`); rows read piecemeal from a growing run folder
(`loadtest.runtail`) are typed by `typed_text` from the same tables. Strings that repeat are
dictionary-encoded (pandas categoricals)."""

from __future__ import annotations

from typing import Sequence

import pandas as pd
import pyarrow as pa

from analysis.records import ARRIVAL_COLUMNS, CONVERSATION_COLUMNS, REQUEST_COLUMNS

_DICT = pa.dictionary(pa.int32(), pa.string())

#: Arrow type of every request column (strings dictionary-encoded → pandas categoricals).
REQUEST_TYPES: dict[str, pa.DataType] = {
    "timestamp": pa.float64(),
    "region": _DICT,
    "variant": _DICT,
    "endpoint": _DICT,
    "name": _DICT,
    "response_time_ms": pa.float64(),
    "status": pa.int32(),
    "ok": pa.int8(),
    "error_kind": _DICT,
    "error": _DICT,
    "bytes": pa.int64(),
    "conversation_id": pa.string(),  # high cardinality: a dictionary would cost more than it saves
    "turn": pa.int32(),
    "user": _DICT,
    "worker": _DICT,
}
assert set(REQUEST_TYPES) == set(REQUEST_COLUMNS)

#: Columns that must have a value on every row.
REQUIRED_VALUES = ("timestamp", "response_time_ms", "ok")
#: Defaults for numeric columns left empty.
NUMERIC_DEFAULTS = {"status": 0, "bytes": 0, "turn": -1}

CONVERSATION_TYPES: dict[str, pa.DataType] = {
    "conversation_id": pa.string(),
    "region": _DICT,
    "variant": _DICT,
    "started": pa.float64(),
    "ended": pa.float64(),
    "duration_s": pa.float64(),
    "turns": pa.int32(),
    "ended_by": _DICT,
    "ok": pa.int8(),
}
assert set(CONVERSATION_TYPES) == set(CONVERSATION_COLUMNS)

ARRIVAL_TYPES: dict[str, pa.DataType] = {
    "planned": pa.float64(),
    "region": _DICT,
    "variant": _DICT,
    "started": pa.float64(),
    "lag_ms": pa.float64(),
    "dropped": pa.int8(),
    "reason": _DICT,
}
assert set(ARRIVAL_TYPES) == set(ARRIVAL_COLUMNS)


def typed_text(df: pd.DataFrame, types: dict[str, pa.DataType], required: Sequence[str] = ()) -> pd.DataFrame:
    """Columns read as text (CSV rows read piecemeal, `loadtest.runtail`) typed by one of the
    tables above, as whole files are through Arrow: numbers parsed (one that does not parse is
    empty), empty integers their default (`NUMERIC_DEFAULTS`, else 0), text as str; rows with
    an empty `required` value dropped."""
    out = {}
    for c in df.columns:
        kind = types[c]
        if pa.types.is_floating(kind):
            out[c] = pd.to_numeric(df[c], errors="coerce").astype(kind.to_pandas_dtype())
        elif pa.types.is_integer(kind):
            out[c] = pd.to_numeric(df[c], errors="coerce").fillna(NUMERIC_DEFAULTS.get(c, 0)).astype(kind.to_pandas_dtype())
        else:
            out[c] = df[c].fillna("").astype(str)
    typed = pd.DataFrame(out, index=df.index)
    return typed.dropna(subset=[c for c in required if c in typed.columns])
