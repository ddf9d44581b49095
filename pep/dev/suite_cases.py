"""One case of a policy test suite (docs/policy-tests.md): its keys, their types, a token case's claims.

Every problem is a `CaseError` carrying the YAML line of the offending key (0 when unknown),
so `pep test` names `file:line` for a misspelt key or a value of the wrong type.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pep import uids
from pep.dev.tokens import MAX_ACT_CHAIN
from pep.policy.request import ResourceRef
from pep.policy.source import key_line, line_of
from pep.uids import ACTION, is_action_type, parse_json_uid

CASE_KEYS = (
    "name",
    "principal",
    "token",
    "action",
    "resource",
    "context",
    "expect",
    "expect_reason",
    "expect_policies",
    "mcp",
)
RESOURCE_KEYS = ("type", "id", "attributes", "parents")
# The runner's shorthand under `token:`; every other key is a claim, carried as written.
SHORTHAND_KEYS = ("act_chain", "scopes", "binding", "claims")
# A shorthand and the real claims it is minted as: a case gives one or the other.
TWINS = {"act_chain": ("act",), "scopes": ("scope", "scp"), "binding": ("cnf",)}
BINDINGS = ("bearer", "dpop", "mtls")
_STRING_CLAIMS = ("sub", "iss", "client_id", "azp", "jti")
_NUMBER_CLAIMS = ("iat", "exp", "nbf", "auth_time")
_OBJECT_CLAIMS = ("cnf", "may_act")
TOKEN_TTL = 300
_ACT_SHAPE = "`token.act` must be a mapping `{sub: ..., act: {...}}` at every level"

T = TypeVar("T")


class CaseError(ValueError):
    """A case that cannot be run as written; `line` is the offending key's (0: unknown)."""

    def __init__(self, message: str, line: int = 0) -> None:
        super().__init__(message)
        self.line = line


def at(mapping: Any, key: str, check: Callable[[Any], T]) -> T:
    """`check(mapping[key])`, a ValueError from it located at the key's line."""
    try:
        return check(mapping.get(key))
    except CaseError as e:
        if not e.line:
            e.line = key_line(mapping, key, 0)
        raise
    except ValueError as e:
        raise CaseError(str(e), key_line(mapping, key, 0)) from None


def check_keys(mapping: Mapping[str, Any], allowed: tuple[str, ...], what: str) -> None:
    for key in mapping:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean `{close[0]}`?)" if close else f" (it takes {', '.join(allowed)})"
            raise CaseError(f"{what} has no key `{key}`{hint}", key_line(mapping, str(key), 0))


@dataclass(frozen=True)
class TokenCase:
    """What the runner mints: the shorthand, and the claims set over the minted ones."""

    sub: str
    act_chain: list[str]
    client_id: str
    scopes: list[str]
    binding: str  # bearer | dpop | mtls, or "" for a `cnf` given as a claim
    claims: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Case:
    name: str
    expect: str
    action: tuple[str, str]
    resource: ResourceRef
    context: Mapping[str, Any]
    reason: str | None
    policies: list[str] | None
    mcp: str | None
    principal: tuple[str, str] | None = None
    token: TokenCase | None = None


def parse_case(case: Any) -> Case:
    if not isinstance(case, Mapping):
        raise CaseError("a case must be a mapping")
    check_keys(case, CASE_KEYS, "a case")
    name = at(case, "name", lambda v: _typed(v, str, "`name` must be a string", ""))
    expect = at(case, "expect", _expect)
    if ("principal" in case) == ("token" in case):
        raise CaseError("a case gives exactly one of `principal` or `token`", line_of(case, 0))
    action = at(case, "action", action_uid)
    resource = at(case, "resource", parse_resource)
    context = at(case, "context", lambda v: _typed(v, Mapping, "`context` must be a mapping", {}))
    reason = at(case, "expect_reason", lambda v: _typed(v, str, "`expect_reason` must be a reason code", None))
    policies = at(case, "expect_policies", lambda v: None if v is None else names(v, "expect_policies"))
    mcp = at(case, "mcp", _mcp)
    if "principal" in case:
        principal = at(case, "principal", lambda v: parse_uid(v, "principal"))
        return Case(name, expect, action, resource, context, reason, policies, mcp, principal=principal)
    if action[0] != ACTION:
        raise CaseError("token cases take actions of type Action, as the gRPC API does", key_line(case, "action", 0))
    token = at(case, "token", token_case)
    return Case(name, expect, action, resource, context, reason, policies, mcp, token=token)


def _typed(value: Any, kind: type, message: str, default: Any) -> Any:
    if value is None:
        return default
    if not isinstance(value, kind):
        raise ValueError(message)
    return value


def _expect(value: Any) -> str:
    if value not in ("allow", "deny"):
        raise ValueError("`expect` must be allow or deny")
    return str(value)


def _mcp(value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ValueError("`mcp` must be the proxy's server_id, a non-empty string")
    return value


def parse_uid(value: Any, what: str) -> tuple[str, str]:
    """`Type::"id"`, `{type, id}` or `{__entity: {type, id}}` to (type, id)."""
    if isinstance(value, Mapping):
        inner = value.get("__entity") if set(value) == {"__entity"} else value
        if isinstance(inner, Mapping):
            check_keys(inner, ("type", "id"), f"`{what}`")
        if (uid := parse_json_uid(dict(value))) is not None and all(uid):
            return uid
    if isinstance(value, str):
        try:
            return uids.parse_uid(value)
        except ValueError:
            pass
    raise ValueError(f'{what} must be Type::"id" or {{type, id}}, got {value!r}')


def action_uid(value: Any) -> tuple[str, str]:
    """(type, id) of an action: a bare name, `Action::"x"`, `App::Action::"x"` or {type, id}."""
    if isinstance(value, str) and "::" not in value and value:
        return ACTION, value
    type_, id_ = parse_uid(value, "action")
    if not is_action_type(type_):
        raise ValueError(f"action must be an Action, got {type_}")
    return type_, id_


def parse_resource(value: Any) -> ResourceRef:
    if isinstance(value, Mapping) and set(value) != {"__entity"}:
        check_keys(value, RESOURCE_KEYS, "`resource`")
    if isinstance(value, Mapping) and ("attributes" in value or "parents" in value):
        type_, id_ = parse_uid({"type": value.get("type"), "id": value.get("id")}, "resource")
        parents_in = at(value, "parents", lambda v: _typed(v, list, "`resource.parents` must be a list", []))
        parents = at(value, "parents", lambda _: tuple(parse_uid(p, "resource parent") for p in parents_in))
        attributes = at(
            value, "attributes", lambda v: _typed(v, Mapping, "`resource.attributes` must be a mapping", {})
        )
        return ResourceRef(type_, id_, dict(attributes), parents)
    type_, id_ = parse_uid(value, "resource")
    return ResourceRef(type_, id_)


def names(value: Any, what: str, limit: int | None = None) -> list[str]:
    """A list of non-empty strings: a lone string is refused, never split into characters."""
    if not isinstance(value, list):
        raise ValueError(f"`{what}` must be a list of strings, got {type(value).__name__}")
    if limit is not None and len(value) > limit:
        raise ValueError(f"`{what}` has {len(value)} entries, more than the limit of {limit}")
    if not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"`{what}` must hold non-empty strings only")
    return list(value)


def token_case(spec: Any) -> TokenCase:
    """`token:` in the token's own shape (any claim, as an issuer writes it) or the runner's shorthand."""
    if not isinstance(spec, Mapping):
        raise ValueError("`token` must be a mapping")
    for short, twins in TWINS.items():
        for twin in twins:
            if short in spec and twin in spec:
                line = max(key_line(spec, short, 0), key_line(spec, twin, 0))
                raise CaseError(
                    f"`token` gives both `{short}` and `{twin}`: give one (`{short}` is minted as `{twin}`)", line
                )
    if not isinstance(spec.get("sub"), str) or not spec["sub"]:
        raise CaseError("`token` needs at least `sub`, a non-empty string", key_line(spec, "sub", 0))
    claims: dict[str, Any] = {}
    for key in spec:
        if key not in SHORTHAND_KEYS and key not in ("sub", "groups"):
            claims[key] = _claim(spec, key)
    chain = at(spec, "act_chain", lambda v: names([] if v is None else v, "token.act_chain", MAX_ACT_CHAIN))
    actors = chain or (at(spec, "act", _actors) if "act" in spec else [])
    scopes = at(spec, "scopes", lambda v: names([] if v is None else v, "token.scopes"))
    binding = at(spec, "binding", _binding)
    if "groups" in spec:
        claims["groups"] = at(spec, "groups", lambda v: names(v, "token.groups"))
    if "iat" in claims and "exp" not in claims:
        claims["exp"] = claims["iat"] + TOKEN_TTL
    client_id = claims.pop("client_id", None) or (actors[0] if actors else spec["sub"])
    raw = at(spec, "claims", lambda v: _typed(v, Mapping, "`token.claims` must be a mapping", {}))
    claims.update(at(spec, "claims", lambda _: _json(dict(raw), "token.claims")))  # raw: replaces any claim
    return TokenCase(spec["sub"], chain, client_id, scopes, "" if "cnf" in spec else binding, claims)


def _binding(value: Any) -> str:
    if value is None:
        return "bearer"
    if value not in BINDINGS:
        raise ValueError("`token.binding` must be bearer, dpop or mtls")
    return str(value)


def _claim(spec: Mapping[str, Any], name: str) -> Any:
    """A claim as a real token carries it: the registered ones with their JSON type."""
    try:
        return _claim_value(name, spec[name])
    except ValueError as e:
        raise CaseError(str(e), key_line(spec, name, 0)) from None


def _claim_value(name: str, value: Any) -> Any:
    what = f"token.{name}"
    if name in _STRING_CLAIMS and (not isinstance(value, str) or not value):
        raise ValueError(f"`{what}` must be a non-empty string")
    if name in _NUMBER_CLAIMS and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ValueError(f"`{what}` must be a number (seconds since the epoch)")
    if name in _OBJECT_CLAIMS and not isinstance(value, Mapping):
        raise ValueError(f"`{what}` must be a mapping")
    if name == "scope" and not isinstance(value, str):
        raise ValueError("`token.scope` must be a space-separated string (a list goes under `scp` or `scopes`)")
    if name in ("scp", "aud") and not (isinstance(value, str) or _strings(value)):
        raise ValueError(f"`{what}` must be a string or a list of strings")
    return _json(value, what)


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _actors(act: Any) -> list[str]:
    """The nested `act` claim (RFC 8693 4.1) as actors, current first: each level a mapping with a `sub`."""
    actors: list[str] = []
    node = act
    while node is not None:
        if not isinstance(node, Mapping):
            raise ValueError(_ACT_SHAPE)
        if len(actors) >= MAX_ACT_CHAIN:
            raise CaseError(f"`token.act` nests more than the limit of {MAX_ACT_CHAIN} actors", line_of(node, 0))
        sub = node.get("sub")
        if not isinstance(sub, str) or not sub:
            raise CaseError("every `act` in `token` needs `sub`, a non-empty string", key_line(node, "sub", 0))
        actors.append(sub)
        nested = node.get("act")
        if nested is not None and not isinstance(nested, Mapping):
            raise CaseError(_ACT_SHAPE, key_line(node, "act", 0))
        node = nested
    return actors


def _json(value: Any, what: str) -> Any:
    """`value` as JSON, or a CaseError: YAML's dates, binary and non-finite floats are not claims."""
    if isinstance(value, Mapping):
        return {str(k): _json(v, f"{what}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_json(v, what) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"`{what}` must be a finite number")
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise ValueError(f"`{what}` must be a JSON value, got {type(value).__name__} (quote a date)")
