"""PolyAI Chat API users: the locustfile of `loadtest run` (`locust -f "$(loadtest locustfile)"`).

One user is one customer holding conversations, one after another, with an agent in one
region (and variant): create → respond × N, with think time → close. Regions, variants,
turns, think time, messages and credentials come from the options (see `--help`, the web UI
form, or `loadtest run --help`); the machinery lives in the `loadtest` package.
"""

import random

import gevent
from locust import FastHttpUser, events, task
from locust.exception import StopUser

from loadtest.inlocust import plugin
from loadtest.inlocust.chat import ChatClient, next_user_id

plugin.install(events)


class ChatUser(FastHttpUser):
    # Requests use each region's absolute base URL (--regions, --base-urls); this is unused.
    host = "http://127.0.0.1"
    # A failed request is recorded as a failure, never retried behind our back.
    max_retries = 0
    # Certificates are verified (Locust's default is not to): these requests carry credentials.
    # The run's --ca-bundle / --insecure policy is applied at test start (loadtest.inlocust.plugin).
    insecure = False

    def wait_time(self) -> float:
        return self.chat.think_time()

    def context(self) -> dict:
        return {"user": self.user_id}

    def on_start(self) -> None:
        run = getattr(self.environment, "loadtest_run", None)
        if run is None:
            raise StopUser()
        self.user_id = next_user_id()
        self.chat = ChatClient(self, run)
        if not run.arrivals:  # (the open model's schedule spaces conversations itself)
            # Jitter, so that users spawned together don't fire in lockstep.
            gevent.sleep(random.uniform(0, run.think_time[1]))

    @task
    def conversation(self) -> None:
        with self.chat.conversation() as conversation:
            for message in conversation.turns():
                self.chat.think()  # the customer reads and types; a stopping test ends it here
                conversation.respond(message)
