"""The baseline of bench_generator.py and bench_floor.py: a bare FastHttpUser, same three calls.

create → respond × BARE_TURNS → close, no validation beyond reading the new conversation_id,
no CSV of ours, no live statistics, no plugin. Host: `-H BASE_URL`. By default no think
time (bench_generator.py). bench_floor.py sets BARE_THINK=SECONDS (a pause before each
respond and between conversations, as our user's think time) and BARE_LATENCY_FILE=PATH
(the respond response times Locust measured, one per line in ms, written at exit).

    locust -f benchmarks/bare_locustfile.py --headless -H http://127.0.0.1:PORT -u 50 -r 50 -t 15s
"""

import json
import os

import gevent
from locust import FastHttpUser, constant, events, task

from loadtest import api

TURNS = int(os.environ.get("BARE_TURNS", "3"))
THINK = float(os.environ.get("BARE_THINK", "0"))
LATENCY_FILE = os.environ.get("BARE_LATENCY_FILE")
MESSAGE = "I'd like to change my booking please"
HEADERS = api.headers(os.environ.get(api.API_KEY_ENV, api.DUMMY_API_KEY), os.environ.get(api.TOKEN_ENV, api.DUMMY_TOKEN))
PATHS = {e: api.path(e) for e in api.ENDPOINTS}

if LATENCY_FILE:
    _respond_ms: list[float] = []

    @events.request.add_listener
    def _keep(name, response_time, exception=None, **_kw):
        if name == "respond" and exception is None:
            _respond_ms.append(response_time)

    @events.quit.add_listener
    def _write(**_kw):
        with open(LATENCY_FILE, "w") as f:
            f.write("".join(f"{x:.6f}\n" for x in _respond_ms))


class BareUser(FastHttpUser):
    wait_time = constant(THINK)
    max_retries = 0

    @task
    def conversation(self) -> None:
        r = self.client.post(PATHS["create"], data=json.dumps(api.create_body()), headers=HEADERS, name="create")
        conversation_id = json.loads(r.content)["conversation_id"]
        for _ in range(TURNS):
            if THINK:
                gevent.sleep(THINK)
            self.client.post(PATHS["respond"], data=json.dumps(api.respond_body(conversation_id, MESSAGE)), headers=HEADERS, name="respond")
        self.client.put(PATHS["close"], data=json.dumps(api.close_body(conversation_id)), headers=HEADERS, name="close")
