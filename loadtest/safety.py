"""Credentials and target safety: the one place that handles secrets and decides where load may go.

Credentials come from the environment (`POLYAI_API_KEY`, `POLYAI_TOKEN`) or from a file named
by `POLYAI_CREDENTIALS_FILE` that only its owner can read (lines `POLYAI_API_KEY=…`). They are
never options, never arguments of a process, never written anywhere; `redactor()` scrubs them
from any text that might be written (error messages).

Load goes to loopback unless the user opts in: a base URL off this machine needs
`--target real` and `--yes`.
"""

from __future__ import annotations

import ipaddress
import os
import stat
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from loadtest import api
from loadtest.config import ConfigError

CREDENTIALS_FILE_ENV = "POLYAI_CREDENTIALS_FILE"
REAL_TARGET_DEFAULT_MAX_RPS = 20.0


def _from_file(path: str) -> dict[str, str]:
    p = Path(path)
    try:
        mode = p.stat().st_mode
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"{CREDENTIALS_FILE_ENV}={path}: cannot read it ({e.strerror})") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{CREDENTIALS_FILE_ENV}={path} is readable by others; run: chmod 600 {path}")
    values = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and not key.startswith("#"):
            values[key.strip()] = value.strip().strip("'\"")
    return values


def credentials(required: bool = False) -> tuple[str, str]:
    """(api_key, token): environment, then the credentials file, then the mock's dummy pair.
    With `required`, a missing value is an error saying how to provide it."""
    values = {}
    if os.environ.get(CREDENTIALS_FILE_ENV):
        values = _from_file(os.environ[CREDENTIALS_FILE_ENV])
    key = os.environ.get(api.API_KEY_ENV) or values.get(api.API_KEY_ENV)
    token = os.environ.get(api.TOKEN_ENV) or values.get(api.TOKEN_ENV)
    if required and not (key and token):
        missing = [n for n, v in ((api.API_KEY_ENV, key), (api.TOKEN_ENV, token)) if not v]
        raise ConfigError(f"a real target needs credentials: set {' and '.join(missing)} in the environment (or {CREDENTIALS_FILE_ENV}=FILE, mode 600)")
    return key or api.DUMMY_API_KEY, token or api.DUMMY_TOKEN


def redactor(*secret_values: str) -> Callable[[str], str]:
    """A function that replaces each secret value in a text by ***."""
    values = [v for v in secret_values if v and len(v) >= 4 and v not in (api.DUMMY_API_KEY, api.DUMMY_TOKEN)]

    def redact(text: str) -> str:
        for v in values:
            text = text.replace(v, "***")
        return text

    return redact


def is_loopback(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_target(target: str, base_urls: dict[str, str], yes: bool) -> None:
    """Refuse, before any traffic, to send load off this machine without an explicit opt-in."""
    remote = {r: u for r, u in base_urls.items() if not is_loopback(u)}
    if target == "mock" and remote:
        raise ConfigError(
            "the mock target only takes loopback base URLs, but "
            + ", ".join(f"{r}={u}" for r, u in remote.items())
            + " is not; to load a real host pass --target real --yes"
        )
    if target == "real":
        credentials(required=True)
        if not yes:
            raise ConfigError("--target real sends load to " + ", ".join(sorted(set(base_urls.values()))) + "; confirm with --yes (and consider --max-rps)")
