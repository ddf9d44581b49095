"""The client certificate Envoy forwards, as the RFC 8705 thumbprint a token's `cnf` names."""

from __future__ import annotations

from pep.tokens.jws import b64url_encode
from pep.tokens.thumbprint import certificate_digest

MAX_HEADER_VALUE = 16 * 1024


def xfcc_hash(value: str) -> str:
    """The `Hash=` of the last element of an x-forwarded-client-cert header (the element the
    nearest Envoy added), or ""."""
    elements = _split_quoted(value, ",")
    if not elements:
        return ""
    for pair in _split_quoted(elements[-1], ";"):
        key, sep, val = pair.partition("=")
        if sep and key.strip().lower() == "hash":
            return val.strip().strip('"')
    return ""


def _split_quoted(text: str, sep: str) -> list[str]:
    out, current, quoted, escaped = [], [], False, False
    for ch in text:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            current.append(ch)
            escaped = True
        elif ch == '"':
            current.append(ch)
            quoted = not quoted
        elif ch == sep and not quoted:
            out.append("".join(current))
            current = []
        else:
            current.append(ch)
    out.append("".join(current))
    return [p for p in (s.strip() for s in out) if p]


def certificate_thumbprint(source_certificate: str, xfcc: str) -> str:
    """base64url SHA-256 of the client's DER certificate, the form `cnf["x5t#S256"]` has.

    An unreadable value is passed on as it is, so the token check reports it as unreadable
    rather than absent."""
    raw = source_certificate or xfcc_hash(xfcc)
    if not raw:
        return ""
    try:
        return b64url_encode(certificate_digest(raw))
    except ValueError:
        return raw[:MAX_HEADER_VALUE]
