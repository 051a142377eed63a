"""The mock over HTTPS: a throwaway local CA, made at start, and a certificate it signs.

    context, ca_pem = server_context()      # certificate for 127.0.0.1, ::1 and localhost
    AsyncMockServer(config, ssl=context)     # base URLs become https://
    # clients trust ca_pem (loadtest --ca-bundle FILE), and nothing else trusts it

The CA's private key lives only in this process's memory and dies with it, so the bundle
proves nothing to anyone but the clients of this one mock. Built with `trustme`.
"""

from __future__ import annotations

import ssl

HOSTS = ("127.0.0.1", "::1", "localhost")


def server_context(hosts: tuple[str, ...] = HOSTS) -> tuple[ssl.SSLContext, bytes]:
    """(server SSL context, the CA certificate in PEM) for a new throwaway CA."""
    import trustme  # deferred: only the TLS mock needs it (and its cryptography import is slow)

    ca = trustme.CA(organization_name="loadtest mock (throwaway CA)")
    certificate = ca.issue_cert(*hosts)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate.configure_cert(context)
    return context, ca.cert_pem.bytes()
