"""The generator's request listener (`Plugin.on_request`): the hot path of every request.

It passes Locust's arguments on positionally (`Recorder.row`) for speed; these tests hold it
to the same requests.csv lines as the recorder's own keyword listener, quoting included, and
to the live statistics it feeds.
"""

import types

import pytest

from analysis import records
from loadtest.inlocust import plugin as plugin_module
from loadtest.inlocust.live import LiveStats
from loadtest.inlocust.recorder import Recorder


class Sink:
    closed = False

    def __init__(self):
        self.lines = []

    def write(self, line):
        self.lines.append(line)
        return len(line)

    def flush(self):
        pass

    def close(self):
        self.closed = True


def recorder():
    return Recorder(Sink(), Sink(), Sink(), "local")


def events():
    """Request events as Locust fires them: a success, a failure, a field that needs quoting."""
    ok = {"region": "uk", "variant": "a", "endpoint": "respond", "conversation_id": "c1", "turn": 2, "error_kind": "", "user": 7}
    bad = dict(ok, error_kind="http", turn=3)
    quoted = dict(ok, endpoint="close", turn=4, conversation_id='odd,"id"')
    response = types.SimpleNamespace(status_code=200)
    return [
        dict(
            request_type="POST",
            name="uk · a · respond",
            response_time=12.3456,
            response_length=80,
            response=response,
            context=ok,
            exception=None,
            start_time=1000.5,
            url="http://x/respond",
        ),
        dict(
            request_type="POST",
            name="uk · a · respond",
            response_time=3.0,
            response_length=10,
            response=types.SimpleNamespace(status_code=503),
            context=bad,
            exception=RuntimeError("HTTP 503: busy"),
            start_time=1001.25,
            url="http://x/respond",
        ),
        dict(
            request_type="PUT",
            name="uk · a · close",
            response_time=1.5,
            response_length=16,
            response=response,
            context=quoted,
            exception=None,
            start_time=1002.0,
            url="http://x/close",
        ),
    ]


@pytest.fixture
def listener(tmp_path):
    plug = plugin_module.Plugin()
    live = LiveStats()
    rec = recorder()
    plug.live = live
    plug.run = types.SimpleNamespace(recorder=rec, forward_live=False)
    return plug, rec, live


def test_plugin_listener_writes_the_recorders_own_lines(listener):
    plug, rec, live = listener
    reference = recorder()
    for event in events():
        plug.on_request(**event)
        reference.on_request(**event)
    lines = rec._requests_file.lines
    assert lines == reference._requests_file.lines
    assert len(lines) == 3 and rec.rows == 3
    assert lines[0] == "1000.500000,uk,a,respond,uk · a · respond,12.346,200,1,,,80,c1,2,7,local\n"
    assert lines[1].split(",")[6:10] == ["503", "0", "http", "HTTP 503: busy"]
    assert lines[2].count('"') == 6  # the odd id quoted by the csv module, the row stays whole
    assert len(lines[0].split(",")) == len(records.REQUEST_COLUMNS)


def test_plugin_listener_feeds_live_statistics(listener):
    plug, _rec, live = listener
    for event in events():
        plug.on_request(**event)
    assert live.count == {("uk", "a", "respond"): 2, ("uk", "a", "close"): 1}
    assert live.failures == {("uk", "a", "respond"): 1}


def test_plugin_listener_without_a_test_records_nothing(listener):
    plug, rec, live = listener
    plug.run = None
    plug.on_request(**events()[0])
    assert rec._requests_file.lines == [] and not live.count
