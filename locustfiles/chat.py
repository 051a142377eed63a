"""`locust -f locustfiles/chat.py` from a checkout: the packaged users, re-exported.

The users and all their machinery live in the installed package (`loadtest/inlocust/locustfile.py`);
this file only makes them visible to Locust under the path people know.
"""

from loadtest.inlocust.locustfile import ChatUser  # noqa: F401
