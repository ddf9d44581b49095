"""Entity uids: the type names pep gives its own entities, and the two ways a uid is written.

Text is Cedar's: `Type::"id"`, with namespaced types (`App::Doc::"x"`) and Cedar's string
escapes. JSON is Cedar's too: `{"type": ..., "id": ...}` or `{"__entity": {...}}`.
"""

from __future__ import annotations

import re
from typing import Any

AGENT = "Agent"
USER = "User"
GROUP = "Group"
AGENT_GROUP = "AgentGroup"
ACTION = "Action"

Uid = tuple[str, str]

_NAME = r"[_a-zA-Z][_a-zA-Z0-9]*"
# Cedar allows whitespace around `::` (`Doc :: "x"`); comments between the parts are not read.
_TEXT = re.compile(rf'((?:{_NAME}\s*::\s*)*{_NAME})\s*::\s*"((?:[^"\\]|\\.)*)"', re.S)
# Identifiers Cedar refuses in a type name.
_RESERVED = frozenset({"true", "false", "if", "then", "else", "in", "is", "has", "like", "__cedar"})
_ESCAPE = re.compile(r"\\(u\{[0-9a-fA-F]{1,6}\}|x[0-7][0-9a-fA-F]|[nrt0\\'\"]|.?)", re.S)
_SIMPLE = {"n": "\n", "r": "\r", "t": "\t", "0": "\0", "\\": "\\", "'": "'", '"': '"'}
_SIMPLE_OUT = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\0": "\\0", "\\": "\\\\", '"': '\\"'}


def parse_uid(text: str) -> Uid:
    """`Type::"id"` to (type, id); ValueError when it is not one or the type or id is empty.

    Whitespace around the parts is ignored. Cedar itself accepts `Doc::""`; pep refuses it, as
    no entity pep names has an empty id.
    """
    found = _TEXT.fullmatch(text.strip())
    if found is None:
        raise ValueError(f'expected Type::"id", got {text[:80]!r}')
    type_ = re.sub(r"\s+", "", found.group(1))
    for part in type_.split("::"):
        if part in _RESERVED:
            raise ValueError(f"{part!r} is reserved in Cedar and cannot name a type, in {text[:80]!r}")
    id_ = _unescape(found.group(2), text)
    if not id_:
        raise ValueError(f"the id must not be empty in {text[:80]!r}")
    return type_, id_


def _unescape(body: str, text: str) -> str:
    def one(m: re.Match[str]) -> str:
        escape = m.group(1)
        if escape in _SIMPLE:
            return _SIMPLE[escape]
        if escape.startswith("x") and len(escape) == 3:
            return chr(int(escape[1:], 16))
        if escape.startswith("u{"):
            code = int(escape[2:-1], 16)
            if code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF:
                return chr(code)
        raise ValueError(f"invalid escape \\{escape} in {text[:80]!r}")

    return _ESCAPE.sub(one, body) if "\\" in body else body


def format_uid(uid: Uid) -> str:
    """(type, id) as Cedar text, `Type::"id"`: what `parse_uid` reads back."""
    type_, id_ = uid
    out = []
    for ch in id_:
        if ch in _SIMPLE_OUT:
            out.append(_SIMPLE_OUT[ch])
        elif not ch.isprintable():
            out.append(f"\\u{{{ord(ch):x}}}")
        else:
            out.append(ch)
    return f'{type_}::"{"".join(out)}"'


def parse_json_uid(value: Any) -> Uid | None:
    """(type, id) of a Cedar JSON uid, `{type, id}` or `{"__entity": {type, id}}`; None if not one."""
    if isinstance(value, dict) and len(value) == 1 and "__entity" in value:
        value = value["__entity"]
    if isinstance(value, dict) and isinstance(value.get("type"), str) and isinstance(value.get("id"), str):
        return value["type"], value["id"]
    return None


def is_action_type(type_: str) -> bool:
    """`Action`, or a namespaced `App::Action`: the types Cedar gives actions."""
    return type_ == ACTION or type_.endswith("::" + ACTION)


# SPIFFE IDs (spiffe/spiffe standards/SPIFFE-ID.md 2): `spiffe://<trust domain>/<path>`, at most 2048 bytes.
MAX_SPIFFE_ID = 2048
TRUST_DOMAIN = re.compile(r"[a-z0-9._-]{1,255}")
_SPIFFE_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")


def spiffe_trust_domain(value: Any) -> str | None:
    """The trust domain of a workload SPIFFE ID, or None when `value` is not one.

    Scheme `spiffe` (lower case), a trust domain of lower-case letters, digits, '.', '-' and '_',
    then a non-empty path of segments of letters, digits, '.', '-', '_' (no empty, '.' or '..'
    segment, no trailing '/'); so no port, user info, query, fragment or percent-encoding.
    """
    if not isinstance(value, str) or len(value) > MAX_SPIFFE_ID or not value.startswith("spiffe://"):
        return None
    domain, slash, path = value[len("spiffe://") :].partition("/")
    if not slash or not TRUST_DOMAIN.fullmatch(domain):
        return None
    for segment in path.split("/"):
        if segment in (".", "..") or not _SPIFFE_SEGMENT.fullmatch(segment):
            return None
    return domain
