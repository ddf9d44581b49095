"""What an entry point hands the pipeline: plain data, no transport types."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pep.errors import RequestError
from pep.policy.request import Check
from pep.tokens.verifier import Credentials


@dataclass(frozen=True)
class Subject:
    """A principal the caller vouches for (a trust_subject AuthZEN listener): no token involved.

    `properties` become the entity's attributes, over what the entity store holds.
    """

    type: str
    id: str
    properties: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Listing:
    """A list the caller filters (MCP `tools/list`): each item previewed as a check, never decided.

    The request's one check is the list itself, admitted and logged once. Only once it is
    admitted does the pipeline call `fetch` for the items (name and check; None when they could
    not be had); an item shows when some value of its context key `unknown` could make the
    policies allow it, and the Decision's `hidden` names the rest.
    """

    # Called with the admitted principal (agent, on-behalf-of user or "").
    fetch: Callable[[tuple[str, str]], Sequence[tuple[str, Check]] | None]
    unknown: str = "arguments"


@dataclass(frozen=True)
class Request:
    """One request: its checks, and who asks, by token or as trusted subjects (one per check).

    With a token, `expect` is the principal the caller names: a token that resolves to anyone
    else is denied (`invalid_request`). `traceparent` is already validated by the transport.
    `refusal` is why the transport could not read the request whole: every check is answered
    INVALID_ARGUMENT with it, and recorded.
    """

    checks: Sequence[Check]
    credentials: Credentials | None = None
    subjects: Sequence[Subject] | None = None
    expect: tuple[str, str] | None = None
    traceparent: str = ""
    refusal: RequestError | None = None
    # False: a verified token, admission and the delegation grants decide; no policy is asked
    # (MCP `initialize`, `ping`, notifications).
    policies: bool = True
    # False: the context is not validated against the schema (MCP tool arguments are the tool's).
    validate_context: bool = True
    listing: Listing | None = None
    # (agent, user or "") the token must resolve to, else `invalid_request`: the principal that
    # opened the MCP session this request names.
    owner: tuple[str, str] | None = None
