"""Shared test set-up.

Importing locust monkey-patches the whole process with gevent, which would turn the
in-process mock's background thread into a greenlet. The test process imports locust once,
unpatched; child processes (real runs) are unaffected and patch themselves as usual.
"""

import os

os.environ["LOCUST_SKIP_MONKEY_PATCH"] = "1"
import locust  # noqa: E402,F401

del os.environ["LOCUST_SKIP_MONKEY_PATCH"]

import pytest  # noqa: E402

# A developer's real credentials or LOADTEST_* settings must not change what tests see (the
# mock would answer 401 to every in-process test, a LOADTEST_USERS would change every run).
ISOLATED_PREFIXES = ("POLYAI_", "LOADTEST_")


@pytest.fixture(autouse=True, scope="session")
def isolated_environment():
    """Every test (and every child process it starts) runs without POLYAI_*/LOADTEST_*."""
    saved = {k: v for k, v in os.environ.items() if k.startswith(ISOLATED_PREFIXES)}
    for key in saved:
        del os.environ[key]
    yield
    os.environ.update(saved)
