"""tests/synthetic.py writes the run folder a real `loadtest run` writes.

The analysis tests run on synthetic folders; they prove something about real runs only if a
synthetic folder has the same files, columns, dtypes, values' shapes and run.json keys. One
short real run (two worker processes, the open model, the TLS mock: every optional file) and
one synthetic run of the same kind go through the same loader and are compared.
"""

import json
import re

import pandas as pd
import pytest

from analysis import records
from analysis.load import load_run
from runs import FAST, loadtest
from synthetic import make_run

# Everything in a run folder that the analysis reads.
CONTRACT_FILES = {
    records.REQUESTS_CSV,
    records.CONVERSATIONS_CSV,
    records.ARRIVALS_CSV,
    records.CONNECTIONS_CSV,
    records.RUN_JSON,
    f"{records.LOCUST_CSV_PREFIX}_stats_history.csv",
}
CONVERSATION_ID = re.compile(r"(uk|eu)-[0-9a-f]{24}")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("contract")
    r = loadtest(
        "run",
        "--users",
        "6",
        "--duration",
        "3s",
        "--regions",
        "uk,eu",
        "--variants",
        "a,b",
        *FAST,
        "--processes",
        "2",
        "--arrival-rate",
        "4",
        "--mock-tls",
        "--out",
        str(base / "real"),
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    real = (base / "real" / "latest").resolve()
    synthetic = base / "synthetic"
    make_run(synthetic, rows=3000, regions={"uk": (4.9, 0.3), "eu": (5.0, 0.3)}, variants=["a", "b"], workers=2, open_model=True, tls=True, duration_s=30.0)
    return real, synthetic


def _dtypes(df):
    return {c: str(t) for c, t in df.dtypes.items()}


@pytest.mark.slow
def test_same_files_columns_and_dtypes_through_the_loader(folders):
    real, synthetic = folders
    names = [{p.name for p in folder.iterdir()} & CONTRACT_FILES for folder in folders]
    assert names[0] == names[1] == CONTRACT_FILES
    for name in CONTRACT_FILES - {records.RUN_JSON}:  # the same header line, byte for byte
        assert (real / name).open().readline() == (synthetic / name).open().readline(), name
    a, b = (load_run(folder, use_cache=False) for folder in folders)
    for table in ("requests", "conversations", "arrivals", "connections"):
        ra, rb = getattr(a, table), getattr(b, table)
        assert len(ra) and len(rb), table
        assert list(ra.columns) == list(rb.columns), table
        assert _dtypes(ra) == _dtypes(rb), table
    assert list(a.stats_history.columns) == list(b.stats_history.columns)
    # values of the same shape: workers' names, users, conversation ids, outcomes
    for folder, run in zip(folders, (a, b)):
        raw = pd.read_csv(folder / records.REQUESTS_CSV, dtype=str, keep_default_na=False)
        assert list(raw.columns) == list(records.REQUEST_COLUMNS)
        assert set(raw.worker) == {"worker0", "worker1"}
        assert raw.user.str.fullmatch(r"\d+").all()
        ids = raw.conversation_id
        assert ids[ids != ""].str.fullmatch(CONVERSATION_ID).all()
        assert set(run.conversations.ended_by.astype(str)) <= set(records.ENDED_BY)
    assert (b.conversations.ended_by.astype(str) == records.UNFINISHED).any()  # a real end cuts some


@pytest.mark.slow
def test_same_run_json_keys_and_config_hash(folders):
    real, synthetic = (json.loads((folder / records.RUN_JSON).read_text()) for folder in folders)
    assert set(real) == set(synthetic)
    assert set(real["config"]) == set(synthetic["config"])
    for meta in (real, synthetic):
        assert re.fullmatch(r"[0-9a-f]{12}", meta["config_hash"])
        assert meta["workers"] == ["worker0", "worker1"]
    worker_keys = [set(next(iter(meta["worker_rows"].values()))) for meta in (real, synthetic)]
    assert worker_keys[0] == worker_keys[1]


def test_a_single_process_run_names_its_worker_local(tmp_path):
    """`loadtest run` without --processes records worker `local` and keeps no worker accounts."""
    make_run(tmp_path, rows=300, turns=2)
    run = load_run(tmp_path, use_cache=False)
    assert set(pd.read_csv(tmp_path / records.REQUESTS_CSV, dtype=str).worker) == {"local"}
    assert "workers" not in run.meta and "worker_rows" not in run.meta
    assert [p.name for p in tmp_path.glob(records.REQUESTS_GLOB)] == [records.REQUESTS_CSV]
