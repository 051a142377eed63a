"""A locustfile for tests/test_dies_cleanly.py: the packaged users, and a Locust that says a lot.

Three seconds into the test the master (or the single process) prints one line of
$BIG_OUTPUT_BYTES bytes: more than a file of the run may hold, it makes locust.log, written by
`loadtest` from Locust's output, the first file of the run that cannot be written.
"""

import os
import sys

import gevent
from locust import events
from locust.runners import WorkerRunner

from loadtest.inlocust.locustfile import ChatUser

__all__ = ["ChatUser"]  # the users of this locustfile

AFTER_S = 3.0
LINE = "x" * int(os.environ["BIG_OUTPUT_BYTES"]) + "\n"


def _say_a_lot() -> None:
    gevent.sleep(AFTER_S)
    sys.stdout.write(LINE)
    sys.stdout.flush()


@events.test_start.add_listener
def _on_test_start(environment, **_kw):
    if not isinstance(environment.runner, WorkerRunner):
        gevent.spawn(_say_a_lot)
