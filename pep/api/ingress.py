"""What every transport checks the same way as a request comes in."""

from __future__ import annotations

import re

# W3C Trace Context: version-traceid-parentid-flags, lowercase hex only.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_TRACEPARENT_LEN = 55
# Longer values are refused unread (a known version needs 55 characters).
_TRACEPARENT_MAX = 128


def valid_traceparent(value: str) -> str:
    """`value` when it is a well-formed W3C `traceparent`, else "": garbage is never logged.

    Version `ff` and all-zero ids are invalid. A later version may append fields after
    the flags; only the four known ones are kept.
    """
    m = _TRACEPARENT.match(value)
    if m is None:
        return ""
    version, trace_id, parent_id, _ = m.groups()
    if version == "ff" or trace_id == "0" * 32 or parent_id == "0" * 16:
        return ""
    if len(value) == _TRACEPARENT_LEN:
        return value
    if version != "00" and value[_TRACEPARENT_LEN] == "-":
        return value[:_TRACEPARENT_LEN]
    return ""


def traceparent(value: object) -> str:
    """The caller's `traceparent` header as the decision log keeps it: valid, or ""."""
    if not isinstance(value, str) or not value or len(value) > _TRACEPARENT_MAX:
        return ""
    return valid_traceparent(value)
