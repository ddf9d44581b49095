"""Agent lifecycle with a fake clock: an agent expires on the day after `expires`."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from pep.config import parse_config
from pep.controls.admit import Controls
from pep.decision import Decision
from pep.dev import tokens as devtoken
from pep.pipeline import Pipeline, Request
from pep.pipeline.record import Recorder
from pep.policy.loader import load_snapshot
from pep.policy.request import Check, ResourceRef
from pep.tokens.verifier import Credentials, TokenVerifier
from tests.harness.estate import write_estate


class Clock:
    def __init__(self, day: dt.date) -> None:
        self.now = dt.datetime(day.year, day.month, day.day, 12, tzinfo=dt.UTC).timestamp()

    def __call__(self) -> float:
        return self.now


class Fixed:
    def __init__(self, snapshot):  # type: ignore[no-untyped-def]
        self.snapshot = snapshot

    def current(self):  # type: ignore[no-untyped-def]
        return self.snapshot


class Keep:
    """A decision log that keeps what it is given, and takes everything."""

    def __init__(self) -> None:
        self.decisions: list[Decision] = []

    def submit(self, decision: Decision) -> Keep:
        self.decisions.append(decision)
        return self

    def wait(self) -> bool:
        return True


def test_expiry_follows_the_clock(tmp_path: Path) -> None:
    policies = write_estate(tmp_path / "policies")
    agents = (policies / "agents.yaml").read_text()
    (policies / "agents.yaml").write_text(
        agents.replace("groups: [workers], attributes: {sandboxed: true}", "groups: [workers], expires: 2027-06-30")
    )
    key, jwks = devtoken.ensure_dev_keys(str(tmp_path / "keys"))
    config = parse_config(
        {
            "issuers": [{"issuer": "https://i", "audiences": ["a"], "jwks_file": jwks, "algorithms": ["ES256"]}],
        }
    )
    clock = Clock(dt.date(2027, 6, 30))
    verifier = TokenVerifier(config.issuers, config.tokens, clock=clock)
    authorizer = Pipeline(
        Fixed(load_snapshot(str(policies))),
        verifier,
        Controls(clock=clock),
        Recorder(Keep(), None, clock=clock),
        delegation=config.delegation,
        identity=config.identity,
    )
    check = Check("read", ResourceRef("Doc", "plan"))

    def ask() -> str:
        token = devtoken.mint_token(
            key, issuer="https://i", audience="a", sub="alice", act_chain=["worker"], now=clock.now
        )
        return authorizer.authorize(Request([check], Credentials(token)))[0].reason.value

    assert ask() == "allowed"  # the last day still counts
    clock.now += 86400
    assert ask() == "agent_expired"
    verifier.close()
