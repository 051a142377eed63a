"""Shared test set-up.

Importing locust monkey-patches the whole process with gevent, which would turn the
in-process mock's background thread into a greenlet. The test process imports locust once,
unpatched; child processes (real runs) are unaffected and patch themselves as usual.
"""

import functools
import os

os.environ["LOCUST_SKIP_MONKEY_PATCH"] = "1"
import locust  # noqa: E402,F401

del os.environ["LOCUST_SKIP_MONKEY_PATCH"]

import httpx._transports.default as httpx_transport  # noqa: E402
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


@pytest.fixture(autouse=True, scope="session")
def one_default_ssl_context():
    """httpx builds a new SSL context for every client, loading the whole CA bundle (~40 ms),
    even for one that only speaks plain HTTP to the mock: the quick suite made ~120 of them (5 s).
    Clients with the default verification share one, built once per CA setting of the
    environment; any other `verify=` (the TLS tests' own CAs) is built as usual."""
    build = getattr(httpx_transport, "create_ssl_context", None)
    if build is None:  # an httpx internal: a version without it just builds contexts as usual
        yield
        return

    @functools.cache
    def default_context(_cafile, _capath):  # keyed on what httpx reads from the environment
        return build()

    def shared(verify=True, cert=None, trust_env=True):
        if verify is True and cert is None and trust_env:
            return default_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
        return build(verify=verify, cert=cert, trust_env=trust_env)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(httpx_transport, "create_ssl_context", shared)
        yield
