"""Admission: the kill switch, lifecycle and rate limits, in one place and one order.

The order is part of the contract (docs/identity.md, "Risk controls"): the kill switch's
`all` first (it stops even a request whose token is bad), then the token's own failure, the
token's issuer and the token's revocation (by jti, by its issuer's time), the chain rules'
failure, the user and every agent of the chain with their groups, their revocation times,
lifecycle; then, per check, the rate limits. The delegation grants come after, with the
policies: they are Cedar decisions.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pep.controls.killswitch import RuntimeKills, check_kill
from pep.controls.lifecycle import check_lifecycle
from pep.controls.ratelimit import RateLimiter
from pep.controls.revocation import check_chain_revoked, check_token_revoked
from pep.errors import PepError
from pep.policy.snapshot import Snapshot


@dataclass(frozen=True)
class Who:
    """What the controls need to know of a request's principal, in plain values.

    `token_error` and `chain_error` are why the principal could not be resolved; they are
    raised in their place in the order, so a kill switch entry that comes first outranks them.
    """

    issuer: str | None = None
    user: str | None = None
    chain: tuple[str, ...] = ()
    # The agent whose rate limits apply ("" when the principal is not an agent).
    agent: str = ""
    token_error: PepError | None = None
    chain_error: PepError | None = None
    # From a verified token (revocation): its `jti` ("" without one) and `iat` (None without one).
    token: bool = False
    jti: str = ""
    issued_at: float | None = None


class Controls:
    def __init__(
        self,
        kills: RuntimeKills | None = None,
        limiter: RateLimiter | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kills = kills if kills is not None else RuntimeKills()
        self.limiter = limiter if limiter is not None else RateLimiter()
        self._clock = clock

    def admit(self, snapshot: Snapshot, who: Who, actions: Sequence[str]) -> list[PepError | None]:
        """Each check's refusal, in order, or None for a check admitted.

        The kill switch and lifecycle judge the whole request; then each admitted check spends
        its rate limits (a refused check spends none).
        """
        registry, file, runtime = snapshot.registry, snapshot.killswitch, self.kills.view()
        revoking = who.token and (self.kills.revoking or bool(file.revoked))  # read after the view

        def groups_of(agent: str) -> tuple[str, ...]:
            rec = registry.get(agent)
            return rec.groups if rec else ()

        try:
            check_kill(file, runtime)
            if who.token_error is not None:
                raise who.token_error
            if who.issuer is not None:
                check_kill(file, runtime, issuer=who.issuer)
                if revoking:
                    check_token_revoked(file.revoked, runtime, issuer=who.issuer, jti=who.jti, issued_at=who.issued_at)
            if who.chain_error is not None:
                raise who.chain_error
            check_kill(file, runtime, chain=who.chain, groups_of=groups_of, user=who.user)
            if revoking:
                check_chain_revoked(file.revoked, runtime, user=who.user, chain=who.chain, issued_at=who.issued_at)
            check_lifecycle(who.chain, registry, dt.datetime.fromtimestamp(self._clock(), dt.UTC).date())
        except PepError as e:
            return [e] * len(actions)
        if not who.agent:
            return [None] * len(actions)
        groups = groups_of(who.agent)
        refusals: list[PepError | None] = []
        for action in actions:
            try:
                self.limiter.take(snapshot.limits, who.agent, groups, action)
                refusals.append(None)
            except PepError as e:
                refusals.append(e)
        return refusals
