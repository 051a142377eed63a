"""The side of the tool that runs inside Locust's processes (gevent monkey-patched): the user
(`locustfile.py`, what `locust -f` loads), the conversation client (`chat.py`), the plugin that
wires the tool into Locust's events (`plugin.py`), the recorder, live statistics, the open
model's arrivals, load shapes, the web UI extension, and the fleet's row channel.

Nothing outside this package imports its modules (the `loadtest` parent process must stay free
of Locust and gevent's monkey-patching; `tests/test_architecture.py` holds that). This
`__init__` imports nothing, so the parent may read `LOCUSTFILE`, the path it hands to Locust.
"""

from pathlib import Path

LOCUSTFILE = Path(__file__).resolve().with_name("locustfile.py")
