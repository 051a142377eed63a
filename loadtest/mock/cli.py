"""``loadtest mock``: run the mock Chat API until SIGTERM/SIGINT/SIGHUP.

    loadtest mock                              # us, uk, eu, self-serve on 8700..8703
    loadtest mock --port 0 --ready-file r.json # free ports; r.json once listening
    loadtest mock --region uk --port 9000 --fault respond:503:0.05 --fault '*:spike:0.02:2000ms'

The top-level CLI wires :func:`add_arguments` and :func:`run`; ``python -m
loadtest.mock.cli`` runs it standalone. Flags override ``--config FILE`` (TOML, see
:mod:`loadtest.mock.config`), which overrides the defaults. The ready file is written
atomically once every port listens — ``{"regions": {"us": "http://127.0.0.1:8700", ...},
"pid": 1234}`` — and removed on exit.

Started by ``loadtest run|ui|capacity|check`` (through :func:`loadtest.processes.spawn`), the
mock watches its lifeline: when that ``loadtest`` process ends, however it ends, the mock
serves its last clients (Locust, stopping too) for at most ``PARENT_LOST_GRACE_S`` and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import ssl
import sys
import tempfile
from collections.abc import Iterable

from loadtest import api, processes
from loadtest.mock.config import MockConfig, load_config
from loadtest.mock.faults import SYNTAX, Fault, parse_faults
from loadtest.mock.server import AsyncMockServer, new_event_loop
from loadtest.mock.tls import server_context

DEFAULT_PORT = api.MOCK_DEFAULT_PORT
# After the loadtest process that started the mock is gone: how long its clients (a Locust
# closing its conversations as it stops) may still be served before the mock exits.
PARENT_LOST_GRACE_S = 3.0


def _faults(text: str) -> tuple[Fault, ...]:
    """One --fault value: a spec, or several separated by commas."""
    try:
        return parse_faults(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``loadtest mock`` flags."""
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"first port; regions get PORT, PORT+1, ... (0: each a free port; default {DEFAULT_PORT})"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback only)")
    parser.add_argument(
        "--region",
        action="append",
        choices=list(api.REGIONS),
        metavar="REGION",
        help=f"serve only this region (repeatable; default all: {', '.join(api.REGIONS)})",
    )
    parser.add_argument("--ready-file", metavar="PATH", help='write {"regions": {region: base URL}} here (atomically) once listening')
    parser.add_argument("--config", metavar="FILE", help="TOML file with profiles, variants, capacity, faults")
    parser.add_argument(
        "--fault",
        "--faults",
        action="append",
        type=_faults,
        default=[],
        metavar="SPEC",
        help=f"inject a fault, {SYNTAX}, e.g. respond:503:0.05 (repeatable, or several separated by commas)",
    )
    parser.add_argument("--seed", type=int, help="seed of latencies, faults and replies (default 1)")
    parser.add_argument("--latency-scale", type=float, metavar="X", help="multiply every latency profile (0 = no injected delay; default 1)")
    parser.add_argument("--idle-timeout", type=float, metavar="SECONDS", help="expire conversations idle this long (default 300)")
    parser.add_argument("--max-conversations", type=int, metavar="N", help="open conversations per region before the oldest is evicted (default 200000)")
    parser.add_argument("--end-after", type=int, metavar="TURNS", help="the agent ends the conversation on this turn (0 = never; default 8)")
    parser.add_argument("--end-probability", type=float, metavar="P", help="per-turn probability that the agent ends the conversation (default 0.05)")
    parser.add_argument("--handoff-rate", type=float, metavar="P", help="per-turn handoff probability, times the variant's factor (default 0.03)")
    parser.add_argument("--overload-status", type=int, choices=(503, 429), help="status when a region's queue is full (default 503; 429 adds Retry-After)")
    parser.add_argument(
        "--api-version",
        action="append",
        metavar="VERSION",
        help=f"serve this API version path segment (repeatable; default {api.DEFAULT_VERSION}; others are 404)",
    )
    parser.add_argument("--engine", choices=("fast", "aiohttp"), help="HTTP front end (default fast)")
    parser.add_argument("--tls", action="store_true", help="serve HTTPS with a certificate from a throwaway CA made at start")
    parser.add_argument(
        "--tls-ca-file",
        metavar="PATH",
        help="with --tls: write the CA certificate (PEM) here for clients' --ca-bundle (default: mock-ca-PID.pem in the temp folder, removed on exit)",
    )
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")


_FLAG_FIELDS = {
    "seed": "seed",
    "latency_scale": "latency_scale",
    "idle_timeout": "idle_timeout",
    "max_conversations": "max_conversations",
    "end_after": "end_after",
    "end_probability": "end_probability",
    "handoff_rate": "handoff_rate",
    "overload_status": "overload_status",
    "engine": "engine",
}


def config_from_args(args: argparse.Namespace) -> MockConfig:
    """Defaults < --config FILE < flags. Raises ValueError with a clear message."""
    config = load_config(args.config) if getattr(args, "config", None) else MockConfig()
    changes = {field: getattr(args, flag) for flag, field in _FLAG_FIELDS.items() if getattr(args, flag, None) is not None}
    if getattr(args, "api_version", None):
        changes["versions"] = tuple(args.api_version)
    if getattr(args, "fault", None):
        changes["faults"] = tuple(config.faults) + tuple(f for specs in args.fault for f in specs)
    return config.replace(**changes) if changes else config


def write_ready_file(path: str, base_urls: dict[str, str], ca_bundle: str | None = None) -> None:
    """Write the region → base URL JSON atomically (temp file + rename)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    ready = {"regions": base_urls, "pid": os.getpid()}
    if ca_bundle:
        ready["ca_bundle"] = ca_bundle
    with open(tmp, "w") as f:
        json.dump(ready, f)
        f.write("\n")
    os.replace(tmp, path)


def format_table(base_urls: dict[str, str]) -> str:
    width = max(len("region"), *(len(r) for r in base_urls))
    lines = [f"{'region':<{width}}  base URL"]
    lines += [f"{region:<{width}}  {url}" for region, url in base_urls.items()]
    return "\n".join(lines)


def tls_setup(ca_file: str | None) -> tuple[ssl.SSLContext, str, bool]:
    """(server context, where the CA bundle was written, whether to remove it on exit)."""
    context, ca_pem = server_context()
    path = ca_file or os.path.join(tempfile.gettempdir(), f"mock-ca-{os.getpid()}.pem")
    with open(path, "wb") as f:
        f.write(ca_pem)
    return context, path, not ca_file


async def serve(
    config: MockConfig,
    regions: Iterable[str] | None,
    host: str,
    port: int,
    ready_file: str | None,
    quiet: bool = False,
    tls: bool = False,
    tls_ca_file: str | None = None,
) -> int:
    context, ca_bundle, remove_ca = tls_setup(tls_ca_file) if tls else (None, None, False)
    server = AsyncMockServer(config, regions, host, port, ssl=context)
    try:
        await server.start()
    except OSError as e:
        print(f"loadtest mock: error: cannot listen on {host}:{port}: {e.strerror or e}", file=sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    lifeline = processes.lifeline_fd()
    parent_lost = asyncio.Event()

    def on_parent_lost() -> None:
        if not parent_lost.is_set():
            parent_lost.set()
            if lifeline is not None:
                loop.remove_reader(lifeline)
            loop.create_task(_serve_last_clients(server, stop))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if lifeline is None:  # run by hand: a closed terminal stops it
        loop.add_signal_handler(signal.SIGHUP, stop.set)
    else:  # SIGHUP: the parent's death signal (see loadtest.processes)
        loop.add_signal_handler(signal.SIGHUP, on_parent_lost)
        loop.add_reader(lifeline, on_parent_lost)
    try:
        if not quiet:
            print(f"mock Chat API ({config.engine}, latency scale {config.latency_scale:g}, {len(config.faults)} fault(s)); stop with Ctrl-C", flush=True)
            print(format_table(server.base_urls), flush=True)
            if ca_bundle:
                print(f"HTTPS with a throwaway CA; clients trust it with: --ca-bundle {ca_bundle}", flush=True)
        if ready_file:
            write_ready_file(ready_file, server.base_urls, ca_bundle)
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        if lifeline is not None and not parent_lost.is_set():
            loop.remove_reader(lifeline)
        stats = server.stats()
        await server.stop()
        for path in (ready_file, ca_bundle if remove_ca else None):
            if path:
                try:
                    os.remove(path)
                except OSError:
                    pass
    if not quiet:
        try:  # stdout may be a log on a full disk, or a terminal that is gone
            for region, s in stats.items():
                print(
                    f"{region}: {sum(s['requests'].values())} requests, {s['created']} created, {s['closed']} closed, {s['open_conversations']} left open",
                    flush=True,
                )
        except OSError:
            pass
    return 0


async def _serve_last_clients(server: AsyncMockServer, stop: asyncio.Event) -> None:
    """The parent is gone: serve the clients still connected for a little while, then stop."""
    deadline = asyncio.get_running_loop().time() + PARENT_LOST_GRACE_S
    while server.open_connections and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)
    stop.set()


def run(args: argparse.Namespace) -> int:
    """Run ``loadtest mock`` with parsed arguments; returns the exit code."""
    try:
        config = config_from_args(args)
    except (OSError, ValueError) as e:
        print(f"loadtest mock: error: {e}", file=sys.stderr)
        return 2
    loop = new_event_loop()
    try:
        return loop.run_until_complete(serve(config, args.region, args.host, args.port, args.ready_file, args.quiet, args.tls, args.tls_ca_file))
    finally:
        loop.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loadtest mock", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
