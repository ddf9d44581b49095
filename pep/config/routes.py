"""Map an HTTP request (method + path) to a pep action and resource, for Envoy ext_authz.

A rule's `path` is a pattern: literal text, `{name}` for one path segment, `{name+}` for
one or more segments (the rest of the path). The `resource` is an entity reference
template, `Type::"{name}"`, filled with the captured, percent-decoded values. Pure: no
gRPC, no config loading; `pep.config` calls `compile_route` to check rules at start-up.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote

from pep.uids import Uid, parse_uid

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(\+?)\}")
_METHOD = re.compile(r"^[A-Z]+$")
MAX_ID_LENGTH = 1024


@dataclass(frozen=True)
class Route:
    methods: frozenset[str]  # empty: any method
    pattern: re.Pattern[str]
    action: str
    resource_type: str
    resource_id: str  # template with {name} placeholders
    source: str  # the rule's path, for messages

    def match(self, method: str, path: str) -> tuple[str, str, str] | None:
        """(action, resource type, resource id) when this rule applies, else None."""
        if self.methods and method.upper() not in self.methods:
            return None
        found = self.pattern.fullmatch(path)
        if found is None:
            return None
        values = {k: unquote(v) for k, v in found.groupdict().items()}
        resource_id = _PLACEHOLDER.sub(lambda m: values[m.group(1)], self.resource_id)
        return self.action, self.resource_type, resource_id


def parse_entity_ref(text: str) -> Uid:
    """`Type::"id"` to (type, id), with the id at most MAX_ID_LENGTH long (a header is
    untrusted input); ValueError when it is not one. The syntax is `pep.uids.parse_uid`'s."""
    uid = parse_uid(text)
    if len(uid[1]) > MAX_ID_LENGTH:
        raise ValueError(f"the id must have 1 to {MAX_ID_LENGTH} characters in {text[:80]!r}")
    return uid


def compile_pattern(path: str) -> tuple[re.Pattern[str], tuple[str, ...]]:
    """A path pattern to a regex and its placeholder names; ValueError when malformed."""
    if not path.startswith("/"):
        raise ValueError(f"a path pattern starts with '/', got {path!r}")
    parts: list[str] = []
    names: list[str] = []
    pos = 0
    for m in _PLACEHOLDER.finditer(path):
        literal = path[pos : m.start()]
        if "{" in literal or "}" in literal:
            raise ValueError(f"bad placeholder in {path!r}: use {{name}} or {{name+}}")
        parts.append(re.escape(literal))
        name, rest = m.group(1), m.group(2)
        if name in names:
            raise ValueError(f"placeholder {{{name}}} appears twice in {path!r}")
        names.append(name)
        parts.append(f"(?P<{name}>.+)" if rest else f"(?P<{name}>[^/]+)")
        pos = m.end()
    tail = path[pos:]
    if "{" in tail or "}" in tail:
        raise ValueError(f"bad placeholder in {path!r}: use {{name}} or {{name+}}")
    parts.append(re.escape(tail))
    return re.compile("".join(parts)), tuple(names)


def compile_route(methods: Sequence[str], path: str, action: str, resource: str) -> Route:
    """Check and compile one rule; ValueError names what is wrong."""
    for method in methods:
        if not _METHOD.match(method):
            raise ValueError(f"methods: {method!r} is not an upper-case HTTP method")
    pattern, names = compile_pattern(path)
    if not action or "{" in action:
        raise ValueError("action: a non-empty action name without placeholders")
    # Check the template's shape with each placeholder standing in for a value.
    probe = _PLACEHOLDER.sub("x", resource)
    resource_type, _ = parse_entity_ref(probe)
    # Between the quotes (a type name holds none); placeholders are never escaped.
    stripped = resource.strip()
    resource_id = stripped[stripped.index('"') + 1 : -1]
    for m in _PLACEHOLDER.finditer(resource_id):
        if m.group(1) not in names:
            raise ValueError(f"resource uses {{{m.group(1)}}}, which the path {path!r} does not capture")
        if m.group(2):
            raise ValueError("resource placeholders are written {name}, without '+'")
    if "\\" in resource_id:
        raise ValueError("resource: escapes are not supported in a rule's resource id")
    return Route(frozenset(methods), pattern, action, resource_type, resource_id, path)


def first_match(routes: Sequence[Route], method: str, path: str) -> tuple[str, str, str] | None:
    for route in routes:
        found = route.match(method, path)
        if found is not None:
            return found
    return None
