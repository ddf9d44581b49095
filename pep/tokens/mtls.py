"""Certificate-bound access tokens (RFC 8705 3): `cnf["x5t#S256"]` vs the client cert."""

from __future__ import annotations

import hmac

from pep.errors import TokenError
from pep.reasons import Reason
from pep.tokens.thumbprint import certificate_digest


def check_certificate_binding(expected_digest: bytes, presented: str) -> None:
    """Raise POP_BINDING_MISMATCH unless `presented` (the service's view of the client
    certificate: base64url/hex SHA-256 or PEM) has the digest the token is bound to."""
    if not presented or not presented.strip():
        raise TokenError("certificate-bound token without a client certificate", Reason.POP_BINDING_MISMATCH)
    try:
        digest = certificate_digest(presented)
    except ValueError:
        raise TokenError("client certificate thumbprint is unreadable", Reason.POP_BINDING_MISMATCH) from None
    if not hmac.compare_digest(digest, expected_digest):
        raise TokenError("client certificate does not match the token's cnf", Reason.POP_BINDING_MISMATCH)
