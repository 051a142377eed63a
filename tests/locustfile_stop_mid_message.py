"""A locustfile for tests/test_dies_cleanly.py: the packaged users, with `loadtest`'s stop
signal arriving at the worst instant.

In a Locust master, the first message sent to a worker after a write of the run folder failed
(the order to send nothing more) goes out frame by frame with a SIGINT to this process between
its two frames: what `loadtest` sends when locust.log fails on the very line where Locust
reports the failure, landing in the middle of that message. Python's own SIGINT handler would
raise KeyboardInterrupt there, leaving half a message on the socket and the stop undone.
"""

import os
import signal

import zmq.green as zmq
from locust import events
from locust.runners import MasterRunner

from loadtest.inlocust.locustfile import ChatUser
from loadtest.inlocust.plugin import plugin as loadtest_plugin

__all__ = ["ChatUser"]  # the users of this locustfile


class _StopSignalMidMessage:
    """Locust's master socket, sending the first message after a write failure in two steps."""

    def __init__(self, socket):
        self._socket = socket
        self.signalled = False

    def send_multipart(self, parts, *args, **kwargs):
        if self.signalled or loadtest_plugin.write_failure is None:
            return self._socket.send_multipart(parts, *args, **kwargs)
        self.signalled = True
        self._socket.send(parts[0], zmq.SNDMORE)
        os.kill(os.getpid(), signal.SIGINT)
        self._socket.send(parts[1])

    def __getattr__(self, name):
        return getattr(self._socket, name)


@events.init.add_listener
def _signal_mid_message(environment, **_kw):
    if isinstance(environment.runner, MasterRunner):
        environment.runner.server.socket = _StopSignalMidMessage(environment.runner.server.socket)
