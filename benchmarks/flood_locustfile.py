"""A synthetic flood of rows for benchmarks/bench_fleet.py: the master's ingest, not the mock's.

Run as master and as workers of one Locust fleet. The user is named `ChatUser` like the real
one (the master dispatches users by class name) but sends no HTTP: it fires Locust's
`request` event in a tight loop, with the context our users give, so every row goes through
the real worker path (plugin → recorder → outbox → shipper → Locust's message channel) to the
real master path (collector → the run folder's CSVs). One conversation row per five requests,
as in a conversation of three responds.

With FLOOD=lines in the environment the user skips the per-request work and appends
ready-made CSV lines straight to the worker's outbox, so that even a few workers on a shared
core offer the master many more rows than the generator could (~25x per core).
"""

import os
import time

import gevent
from locust import User, constant, events, task

from loadtest.inlocust import plugin

plugin.install(events)

BURST = 200
LINES = os.environ.get("FLOOD") == "lines"
REQUEST_LINE = "1795954234.560069,uk,a,respond,uk · a · respond,123.457,200,1,,,118,uk-8c0beafc72e276cfb3f2317f,2,7,worker0\n"
CONVERSATION_LINE = "uk-8c0beafc72e276cfb3f2317f,uk,a,1795954233.060069,1795954234.560069,1.500,3,end_conversation,1\n"


class _Response:
    status_code = 200


class ChatUser(User):
    wait_time = constant(0)

    @task
    def flood(self) -> None:
        run = getattr(self.environment, "loadtest_run", None)
        if run is None:
            gevent.sleep(0.1)
            return
        if LINES:
            outbox = plugin.plugin.shipper.outbox
            for i in range(BURST):
                outbox.add("requests", REQUEST_LINE)
                if i % 5 == 4:
                    outbox.add("conversations", CONVERSATION_LINE)
            gevent.sleep(0.001)
            return
        fire = self.environment.events.request.fire
        response = _Response()
        for i in range(BURST):
            now = time.time()
            cid = f"uk-{id(self):x}{i:08d}"
            fire(
                request_type="POST",
                name="uk · a · respond",
                response_time=123.456789,
                response_length=118,
                response=response,
                exception=None,
                start_time=now,
                context={"region": "uk", "variant": "a", "endpoint": "respond", "conversation_id": cid, "turn": i % 5, "user": "7"},
            )
            if i % 5 == 4:
                run.conversation_ended(
                    conversation_id=cid, region="uk", variant="a", started=now - 1.5, ended=now, turns=3, ended_by="end_conversation", ok=True
                )
        gevent.sleep(0)  # let the shipper, heartbeats and stats reports run
