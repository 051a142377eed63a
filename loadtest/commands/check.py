"""`loadtest check`: one conversation per region (create → respond → close) before a load test.

Prints what each call saw and how long it took; on 401/403/404 it explains the likely cause
(the region's host vs the workspace's region, account/project ids, the credentials).
Exit code 0 when every region answered correctly, 3 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from loadtest import api, children, config, safety, tls
from loadtest.commands import run as runner
from loadtest.commands.arguments import add_scenario_arguments, scenario_from_args
from loadtest.config import load_corpus
from loadtest.exitcodes import EXIT_OK, EXIT_RUN_FAILED

HINTS = {
    401: "credentials rejected: check POLYAI_API_KEY (X-API-KEY) and POLYAI_TOKEN (X-TOKEN); "
    "the connector token is provisioned per client environment (live, pre-release, sandbox)",
    403: "credentials valid but not allowed here: the connector may belong to another project or environment; ask your PolyAI representative",
    404: "not found: a workspace lives in one region, so check that --regions matches your Studio "
    "host (studio.uk.poly.ai → uk), that --account is the workspace id (ws-… or the slug) "
    "and --project the project id (PROJECT-… or the slug), and --api-version",
    405: "method not allowed: the path is probably wrong (check --api-version)",
    415: "the server wants Content-Type: application/json",
    422: "a field was rejected: check --variants (a variant_id unknown to the project?) and --integration-attributes",
    429: "rate limited: lower the load or add --max-rps",
}


def connection_hint(error: httpx.HTTPError, base_url: str, timeout_s: float) -> str:
    """What to check when a call got no response at all."""
    if tls.is_cert_failure(error):
        return tls.CERT_HINT
    host = urlsplit(base_url).hostname or base_url
    text = str(error).lower()
    if isinstance(error, httpx.ConnectError) and any(
        s in text for s in ("name or service not known", "nodename nor servname", "name resolution", "no address associated", "getaddrinfo")
    ):
        return (
            f"the host name {host} did not resolve: check its spelling (--base-urls), that the "
            "region exists (--regions), and this machine's DNS and network (VPN, proxy)"
        )
    if isinstance(error, httpx.ConnectError) and "refused" in text:
        return f"nothing accepts connections at {base_url}: check the host and port in --base-urls and that the server is running"
    if isinstance(error, httpx.TimeoutException):
        return f"no answer within --request-timeout {timeout_s:g}s: check that {host} is reachable from here (firewall, proxy) or raise --request-timeout"
    return f"could not talk to {base_url}: check the URL (--base-urls), the network and any proxy"


def check_region(client: httpx.Client, scenario: config.Scenario, region: str, base_url: str, message: str, redact: Callable[[str], str]) -> bool:
    variant = next(iter(scenario.variants), None)
    steps = [
        ("create", lambda cid: api.create_body(variant, scenario.integration_attributes or None)),
        ("respond", lambda cid: api.respond_body(cid, message)),
        ("close", lambda cid: api.close_body(cid)),
    ]
    print(f"{region}  {base_url}" + (f"  variant {variant}" if variant else ""))
    conversation_id = ""
    for endpoint, body in steps:
        url = base_url + api.path(endpoint, scenario.api_version, scenario.account, scenario.project)
        started = time.perf_counter()
        try:
            resp = client.request(api.METHODS[endpoint], url, json=body(conversation_id))
        except httpx.HTTPError as e:
            print(f"  {endpoint:<8} no response: {type(e).__name__}: {redact(str(e))}")
            print(f"           hint: {connection_hint(e, base_url, scenario.request_timeout)}")
            return False
        ms = (time.perf_counter() - started) * 1000
        if resp.status_code != 200:
            print(f"  {endpoint:<8} HTTP {resp.status_code} in {ms:.1f} ms: {redact(resp.text[:200])}")
            if resp.status_code in HINTS:
                print(f"           hint: {HINTS[resp.status_code]}")
            return False
        try:
            reply = api.parse_reply(endpoint, resp.json())
        except ValueError as e:
            print(f"  {endpoint:<8} 200 in {ms:.1f} ms but the body breaks the documented shape: {e}")
            return False
        said = f" — “{reply.response[:70]}”" if reply else ""
        extra = ""
        if reply and endpoint == "respond":
            extra = " (agent ended it)" if reply.end_conversation else ""
            extra += f" (handoff to {reply.handoff.destination})" if reply.handoff else ""
        print(f"  {endpoint:<8} 200 in {ms:7.1f} ms{said}{extra}")
        if reply and endpoint == "create":
            conversation_id = reply.conversation_id
    return True


def run_check(scenario: config.Scenario, base_urls: dict[str, str]) -> int:
    key, token = safety.credentials(required=scenario.target == "real")
    redact = safety.redactor(key, token)
    message = load_corpus(scenario.corpus)[0]
    ok = True
    policy = config.tls_policy(scenario)
    if policy.insecure:
        print(tls.INSECURE_WARNING, file=sys.stderr)
    with httpx.Client(headers=api.headers(key, token), timeout=scenario.request_timeout, verify=policy.context()) as client:
        for region, base_url in base_urls.items():
            ok &= check_region(client, scenario, region, base_url, message, redact)
    print("All regions answered correctly." if ok else "Some regions failed; see the hints above.")
    return EXIT_OK if ok else EXIT_RUN_FAILED


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_scenario_arguments(parser)


def check_command(args: argparse.Namespace) -> int:
    """`loadtest check`: returns the exit code."""
    return check(scenario_from_args(args))


def check(scenario: config.Scenario) -> int:
    runner.preflight(scenario)
    if runner.needs_mock(scenario):
        with tempfile.TemporaryDirectory() as tmp, children.mock_server(scenario, Path(tmp) / "mock.log") as mock_urls:
            return run_check(scenario, runner.resolve_base_urls(scenario, mock_urls))
    return run_check(scenario, config.base_urls(scenario))


if __name__ == "__main__":
    sys.exit(check(config.resolve()))
