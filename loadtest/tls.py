"""TLS policy of every request the tool sends: verified by default, like the real API needs.

Every real Chat API host is HTTPS and every request carries production credentials, so
certificates are verified against the system trust store unless the user says otherwise:

- `--ca-bundle FILE` (also `LOADTEST_CA_BUNDLE`, TOML `ca_bundle`): trust exactly the CAs in
  this PEM file instead of the system store (a corporate CA, or the TLS mock's throwaway CA),
  as curl's `--cacert` and requests' `REQUESTS_CA_BUNDLE` do;
- `--insecure`: no verification at all. An explicit opt-out: it prints a warning and is
  recorded in run.json.

The Locust users (`chat.py`) and the preflight (`check.py`) both build their contexts here.
A certificate failure is a `connection` failure whose message says what to do (`explain`).
This module is pure standard library, so it runs in the parent and in Locust processes alike.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

CERT_HINT = (
    "the server's certificate could not be verified: if the host uses a private or "
    "corporate CA, pass --ca-bundle FILE (PEM); --insecure skips verification "
    "(never with production credentials)"
)
INSECURE_WARNING = (
    "warning: --insecure: TLS certificates are NOT verified; credentials may be sent to an impostor. Use --ca-bundle FILE for a private CA instead."
)


@dataclass(frozen=True)
class Policy:
    """How to verify servers: the system store, one CA bundle, or (insecure) not at all."""

    ca_bundle: str = ""
    insecure: bool = False

    def context(self, cls: type[ssl.SSLContext] = ssl.SSLContext) -> ssl.SSLContext:
        """A client context for this policy. `cls` lets gevent's SSLContext (or a subclass
        that times handshakes) be used inside Locust processes."""
        ctx = cls(ssl.PROTOCOL_TLS_CLIENT)
        if self.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif self.ca_bundle:
            ctx.load_verify_locations(cafile=self.ca_bundle)
        else:
            ctx.load_default_certs()
        return ctx

    def describe(self) -> str:
        if self.insecure:
            return "not verified (--insecure)"
        return f"verified against {self.ca_bundle}" if self.ca_bundle else "verified (system trust store)"

    def record(self) -> dict:
        """What run.json says of TLS verification."""
        return {"verify": not self.insecure, "ca_bundle": self.ca_bundle or None}


def check_bundle(path: str) -> str:
    """A readable PEM bundle with at least one certificate, or ValueError saying what to do."""
    if not path:
        return ""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ValueError(f"CA bundle {path} does not exist; pass a PEM file of CA certificates")
    try:
        ssl.create_default_context(cafile=str(p))
    except (ssl.SSLError, OSError, ValueError) as e:
        raise ValueError(f"CA bundle {path} holds no usable PEM certificate ({e}); pass a PEM file of CA certificates") from None
    return str(p)


def is_cert_failure(error: BaseException | None) -> bool:
    return isinstance(error, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(error or "")


def explain(error: BaseException) -> str:
    """The message of a failed request; certificate failures say what to do."""
    text = f"{type(error).__name__}: {error}"
    if is_cert_failure(error):
        # Keep the words "certificate verify failed" (OpenSSL's) first, then the advice.
        reason = getattr(error, "verify_message", "") or "certificate verify failed"
        text = f"certificate verify failed ({reason}); {CERT_HINT}"
    return text
