"""Shared test set-up.

Importing locust monkey-patches the whole process with gevent, which would turn the
in-process mock's background thread into a greenlet. The test process imports locust once,
unpatched; child processes (real runs) are unaffected and patch themselves as usual.
"""

import os

os.environ["LOCUST_SKIP_MONKEY_PATCH"] = "1"
import locust  # noqa: E402,F401

del os.environ["LOCUST_SKIP_MONKEY_PATCH"]
