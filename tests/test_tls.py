"""HTTPS like the real API: verified TLS by default, the TLS mock, and the connection policy.

Every test talks to a mock on loopback that serves HTTPS with a throwaway CA (trustme), in
this process (so its counters can be read directly) or started by `loadtest run --mock-tls`.
"""

import json
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from loadtest import api, tls
from loadtest.mock import MockConfig, MockServer
from loadtest.mock.tls import server_context
from runs import FAST, loadtest, read_csv, run_json

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tls_mock(tmp_path_factory):
    """The uk region of the mock over HTTPS; yields (mock, base URL, CA bundle path)."""
    context, ca_pem = server_context()
    ca_file = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca_file.write_bytes(ca_pem)
    with MockServer(MockConfig(latency_scale=0.2), regions=["uk"], ssl=context) as mock:
        yield mock, mock.base_urls["uk"], str(ca_file)


def requests_by_endpoint(mock) -> dict:
    return {k: v for k, v in mock.stats("uk")["requests"].items() if k in api.ENDPOINTS}


def short_run(out, url, *extra, users=3, duration="5s"):
    return loadtest(
        "run",
        "--regions",
        "uk",
        "--base-urls",
        f"uk={url}",
        "--variants",
        "a",
        "--users",
        str(users),
        "--duration",
        duration,
        "--turns",
        "1-2",
        "--out",
        str(out),
        *FAST,
        *extra,
    )


def only_run_dir(out):
    (run_dir,) = [p for p in out.iterdir() if p.is_dir() and not p.is_symlink()]
    return run_dir


@pytest.mark.slow
def test_mock_serves_https_with_its_throwaway_ca(tls_mock):
    mock, url, ca = tls_mock
    assert url.startswith("https://127.0.0.1:")
    verified = ssl.create_default_context(cafile=ca)
    reply = httpx.post(url + api.path("create"), json={}, verify=verified, headers=api.headers(api.DUMMY_API_KEY, api.DUMMY_TOKEN))
    assert reply.status_code == 200 and reply.json()["conversation_id"].startswith("uk-")
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.post(url + api.path("create"), json={})  # the system store does not know this CA


@pytest.mark.slow
def test_run_without_the_bundle_fails_every_request_and_sends_no_credentials(tls_mock, tmp_path):
    mock, url, _ = tls_mock
    before = requests_by_endpoint(mock)
    proc = short_run(tmp_path, url, users=2, duration="3s")
    assert proc.returncode == 0, proc.stderr
    rows = read_csv(only_run_dir(tmp_path) / "requests.csv")
    assert rows, "no rows recorded"
    assert {r["error_kind"] for r in rows} == {"connection"}
    assert {r["ok"] for r in rows} == {"0"}
    assert all(r["error"].startswith("certificate verify failed") and "--ca-bundle" in r["error"] for r in rows)
    # The handshake failed before any request: the mock never saw one, so no credentials left.
    assert requests_by_endpoint(mock) == before


@pytest.mark.slow
def test_per_conversation_opens_one_tls_connection_per_conversation(tls_mock, tmp_path):
    mock, url, ca = tls_mock
    opened = mock.stats("uk")["connections"]
    proc = short_run(tmp_path, url, "--ca-bundle", ca, "--connections", "per-conversation")
    assert proc.returncode == 0, proc.stderr
    run_dir = only_run_dir(tmp_path)
    rows = read_csv(run_dir / "requests.csv")
    assert rows and all(r["ok"] == "1" for r in rows), {r["error"] for r in rows}
    conversations = read_csv(run_dir / "conversations.csv")
    assert len(conversations) >= 3
    new_connections = mock.stats("uk")["connections"] - opened
    assert new_connections == len(conversations)
    handshakes = read_csv(run_dir / "connections.csv")
    assert len(handshakes) == len(conversations)
    assert {h["endpoint"] for h in handshakes} == {"create"}
    assert {h["conversation_id"] for h in handshakes} == {c["conversation_id"] for c in conversations}
    assert all(float(h["tls_handshake_ms"]) > 0 for h in handshakes)
    meta = run_json(run_dir)
    assert meta["connections"] == "per-conversation"
    assert meta["tls"] == {"verify": True, "ca_bundle": ca}
    page = (run_dir / "report.html").read_text()
    assert "TLS connections" in page and "create latency includes connecting" in page


@pytest.mark.slow
def test_per_user_keeps_one_connection_per_user(tls_mock, tmp_path):
    mock, url, ca = tls_mock
    opened = mock.stats("uk")["connections"]
    proc = short_run(tmp_path, url, "--ca-bundle", ca, "--connections", "per-user", users=3)
    assert proc.returncode == 0, proc.stderr
    run_dir = only_run_dir(tmp_path)
    conversations = read_csv(run_dir / "conversations.csv")
    new_connections = mock.stats("uk")["connections"] - opened
    assert len(conversations) >= 2 * 3  # several conversations per user…
    assert new_connections == 3  # …on one connection each
    assert len(read_csv(run_dir / "connections.csv")) == 3


@pytest.mark.slow
def test_insecure_succeeds_warns_and_is_recorded(tls_mock, tmp_path):
    _, url, _ = tls_mock
    proc = short_run(tmp_path, url, "--insecure", users=2, duration="3s")
    assert proc.returncode == 0, proc.stderr
    assert tls.INSECURE_WARNING in proc.stderr
    run_dir = only_run_dir(tmp_path)
    rows = read_csv(run_dir / "requests.csv")
    assert rows and all(r["ok"] == "1" for r in rows)
    assert run_json(run_dir)["tls"]["verify"] is False
    assert run_json(run_dir)["config"]["insecure"] is True


@pytest.mark.slow
def test_check_over_tls_passes_with_the_bundle_and_explains_without(tls_mock):
    _, url, ca = tls_mock
    good = loadtest("check", "--regions", "uk", "--base-urls", f"uk={url}", "--ca-bundle", ca)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "All regions answered correctly" in good.stdout
    bad = loadtest("check", "--regions", "uk", "--base-urls", f"uk={url}")
    assert bad.returncode == 3
    assert "CERTIFICATE_VERIFY_FAILED" in bad.stdout and tls.CERT_HINT in bad.stdout


@pytest.mark.slow
def test_run_with_mock_tls_hands_the_ca_to_the_users(tmp_path):
    proc = loadtest("run", "--mock-tls", "--regions", "uk,eu", "--users", "4", "--duration", "4s", "--turns", "1-2", "--out", str(tmp_path), *FAST)
    assert proc.returncode == 0, proc.stderr
    run_dir = only_run_dir(tmp_path)
    meta = run_json(run_dir)
    assert all(u.startswith("https://127.0.0.1:") for u in meta["base_urls"].values())
    assert meta["tls"]["verify"] is True and meta["tls"]["ca_bundle"] == str(run_dir / "mock-ca.pem")
    rows = read_csv(run_dir / "requests.csv")
    assert rows and all(r["ok"] == "1" for r in rows), {r["error"] for r in rows}
    assert {r["region"] for r in rows} == {"uk", "eu"}
    assert meta["mock_open_conversations"] == {r: 0 for r in meta["mock_open_conversations"]}
    assert len(meta["mock_open_conversations"]) == 4  # read over HTTPS with the run's CA


@pytest.mark.slow
@pytest.mark.parametrize("bundle, problem", [("missing.pem", "does not exist"), ("empty.pem", "no usable PEM certificate")])
def test_a_bad_ca_bundle_is_a_usage_error(tmp_path, bundle, problem):
    (tmp_path / "empty.pem").write_text("not a certificate\n")
    proc = loadtest("run", "--ca-bundle", str(tmp_path / bundle), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert problem in proc.stderr and "--ca-bundle" in proc.stderr
    assert not (tmp_path / "out").exists()  # refused before anything started


def test_user_class_verifies_by_default():
    """Locust's FastHttpUser does not verify certificates; ours must, even before the plugin."""
    code = (
        "import runpy; from locust.contrib.fasthttp import FastHttpUser; "
        "user = runpy.run_path('locustfiles/chat.py')['ChatUser']; "
        "print(FastHttpUser.insecure, user.insecure)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.stdout.split() == ["True", "False"], out.stderr


def test_policy_contexts():
    assert tls.Policy().context().verify_mode == ssl.CERT_REQUIRED
    assert tls.Policy().context().check_hostname is True
    insecure = tls.Policy(insecure=True).context()
    assert insecure.verify_mode == ssl.CERT_NONE and insecure.check_hostname is False
    assert json.dumps(tls.Policy(insecure=True).record()) == '{"verify": false, "ca_bundle": null}'
