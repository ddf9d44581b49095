"""Revocation: tokens revoked by `jti`, or issued before a time set for their issuer, their user or
an agent of their chain. From `revoked:` in killswitch.yaml and from `pep admin revoke` (admin
entries of kinds `revoked_token`, `revoked_agent`, `revoked_user`, `revoked_issuer` in the kill
store, fleet-wide with Redis). Checked on every call, after verification, so a token served
from the verified-token cache is judged like a new one.

Where in the order (docs/reasons.md, "The order of checks"): the token's own rules (its `jti`,
its issuer's time) right after the kill switch for the issuer; the user's and every chain
agent's time right after the kill switch for the user and the agents.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pep.controls.killswitch import KillEntry
from pep.errors import ControlError
from pep.policy.revoked_file import STORED_PREFIX, Revocations, format_time
from pep.reasons import Reason

MAX_SHOWN_JTI = 80


def _before(file: Revocations, runtime: Mapping[tuple[str, str], KillEntry], kind: str, id_: str) -> float | None:
    """The latest time set for (kind, id) by the file or an admin entry; None when neither sets one."""
    times = []
    held = file.before(kind).get(id_)
    if held is not None:
        times.append(held)
    entry = runtime.get((STORED_PREFIX + kind, id_))
    if entry is not None:
        times.append(entry.cutoff)
    return max(times) if times else None


def _judge(kind: str, id_: str, before: float | None, issued_at: float | None) -> None:
    if before is None:
        return
    quoted = repr(id_)
    whose = f"{kind} {quoted[:-1]}'s" if quoted.endswith("'") else f"{kind} {quoted}'s"  # agent 'billing-bot's
    if issued_at is None:
        raise ControlError(
            f"token has no iat, and {whose} tokens issued before {format_time(before)} are revoked",
            Reason.TOKEN_REVOKED,
        )
    if issued_at < before:
        raise ControlError(
            f"token issued before {format_time(before)}, when {whose} tokens were revoked", Reason.TOKEN_REVOKED
        )


def check_token_revoked(
    file: Revocations,
    runtime: Mapping[tuple[str, str], KillEntry],
    *,
    issuer: str,
    jti: str,
    issued_at: float | None,
) -> None:
    """Raise `token_revoked` when the token's jti is revoked or its issuer's tokens before its iat are."""
    if jti and (jti in file.tokens or ("revoked_token", jti) in runtime):
        shown = jti if len(jti) <= MAX_SHOWN_JTI else jti[:MAX_SHOWN_JTI] + "..."
        raise ControlError(f"token {shown!r} (jti) is revoked", Reason.TOKEN_REVOKED)
    _judge("issuer", issuer, _before(file, runtime, "issuer", issuer), issued_at)


def check_chain_revoked(
    file: Revocations,
    runtime: Mapping[tuple[str, str], KillEntry],
    *,
    user: str | None,
    chain: Iterable[str],
    issued_at: float | None,
) -> None:
    """Raise `token_revoked` when the user's or any chain agent's tokens issued before the token's iat are."""
    if user is not None:
        _judge("user", user, _before(file, runtime, "user", user), issued_at)
    for agent in chain:
        _judge("agent", agent, _before(file, runtime, "agent", agent), issued_at)
