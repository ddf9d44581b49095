"""The pipeline without a server: real snapshot, real verifier, real metrics; the log is a list."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from pep.api.authzen import stop_after
from pep.config import parse_config
from pep.controls.admit import Controls
from pep.decision import Decision
from pep.dev import tokens as devtoken
from pep.metrics import Metrics
from pep.pipeline import Pipeline, Request, Subject
from pep.pipeline.record import Recorder
from pep.policy.loader import load_snapshot
from pep.policy.request import Check, ResourceRef
from pep.policy.snapshot import Snapshot
from pep.tokens.verifier import Credentials, TokenVerifier
from tests.harness.estate import write_estate

ISSUER, AUDIENCE = "https://issuer.unit", "pep-unit"
READ = Check("read", ResourceRef("Doc", "plan"))


class Fixed:
    def __init__(self, snapshot: Snapshot | None) -> None:
        self.snapshot = snapshot

    def current(self) -> Snapshot | None:
        return self.snapshot


class Log:
    """A decision log that keeps entries; `takes` False plays a log that cannot take them."""

    def __init__(self, takes: bool = True) -> None:
        self.entries: list[Decision] = []
        self.takes = takes

    def submit(self, decision: Decision) -> Log:
        if self.takes:
            self.entries.append(decision)
        return self

    def wait(self) -> bool:
        return self.takes


class Env:
    def __init__(self, tmp: Path, *, required: bool = False, takes: bool = True, mode: str = "enforce") -> None:
        self.key, jwks = devtoken.ensure_dev_keys(str(tmp / "keys"))
        self.config = parse_config(
            {
                "issuers": [{"issuer": ISSUER, "audiences": [AUDIENCE], "jwks_file": jwks, "algorithms": ["ES256"]}],
                "decision_log": {"required": required},
                "mode": mode,
            }
        )
        policies = tmp / "policies"
        if not policies.exists():
            write_estate(policies)
        self.store = Fixed(load_snapshot(str(policies)))
        self.verifier = TokenVerifier(self.config.issuers, self.config.tokens)
        self.log = Log(takes)
        self.metrics = Metrics(CollectorRegistry(), process=False)
        self.metrics.set_actions(self.store.snapshot.actions)  # as the policy store does on a load
        self.controls = Controls()
        recorder = Recorder(self.log, self.metrics, mode=mode, log_required=required)
        self.pipeline = Pipeline(
            self.store,
            self.verifier,
            self.controls,
            recorder,
            delegation=self.config.delegation,
            identity=self.config.identity,
        )

    def token(self, **kw: Any) -> str:
        kw.setdefault("sub", "alice")
        kw.setdefault("act_chain", ("worker",))
        return devtoken.mint_token(self.key, issuer=ISSUER, audience=AUDIENCE, **kw)

    def ask(self, token: str, *checks: Check) -> list[Decision]:
        return self.pipeline.authorize(Request(list(checks or (READ,)), Credentials(token)))

    def counted(self, decision: str, reason: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "pep_decisions_total", {"decision": decision, "reason": reason, "action": "read"}
        )
        return value or 0.0


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def test_one_decision_one_entry_one_count(env: Env) -> None:
    [d] = env.ask(env.token())
    assert (d.allowed, d.reason.value, d.agent, d.on_behalf_of) == (True, "allowed", "worker", "alice")
    assert env.log.entries == [d]
    assert env.counted("allow", "allowed") == 1


def test_required_log_refusal_turns_an_allow_into_a_counted_deny(tmp_path: Path) -> None:
    env = Env(tmp_path, required=True, takes=False)
    [d] = env.ask(env.token())
    assert (d.answer_allowed, d.reason.value) == (False, "internal_error")
    assert "decision log unavailable" in d.errors
    assert env.counted("deny", "internal_error") == 1 and env.counted("allow", "allowed") == 0
    [deny] = env.ask(env.token(), Check("read", ResourceRef("Doc", "keys")))  # a deny stays what it was
    assert deny.reason.value == "policy_forbid"


def test_log_refusal_outside_required_mode_keeps_the_answer(tmp_path: Path) -> None:
    env = Env(tmp_path, takes=False)
    [d] = env.ask(env.token())
    assert d.answer_allowed and env.counted("allow", "allowed") == 1


def test_kill_switch_all_outranks_a_bad_token(env: Env) -> None:
    env.controls.kills.disable("all", "", "drill")
    [d] = env.ask("not-a-token")
    assert d.reason.value == "agent_disabled"


def test_disabled_issuer_outranks_a_broken_chain(env: Env) -> None:
    [unknown] = env.ask(env.token(act_chain=("nobody",)))
    assert unknown.reason.value == "chain_unknown_agent"
    env.controls.kills.disable("issuer", ISSUER, "drill")
    [d] = env.ask(env.token(act_chain=("nobody",)))
    assert d.reason.value == "agent_disabled"


def test_batch_sees_one_version_and_is_recorded_in_order(env: Env) -> None:
    checks = [READ, Check("read", ResourceRef("Doc", "keys")), Check("write", ResourceRef("Doc", "plan"))]
    decisions = env.ask(env.token(), *checks)
    assert [d.reason.value for d in decisions] == ["allowed", "policy_forbid", "policy_no_permit"]
    assert [d.resource_id for d in env.log.entries] == ["plan", "keys", "plan"]
    assert len({d.policy_version for d in decisions}) == 1


def test_lazy_decisions_stop_where_the_caller_stops(env: Env) -> None:
    checks = [Check("read", ResourceRef("Doc", "keys")), READ, READ]
    decisions = stop_after(env.pipeline.decide(Request(checks, Credentials(env.token()))), lambda ok: not ok)
    assert [d.reason.value for d in decisions] == ["policy_forbid"]
    assert len(env.log.entries) == 1  # the rest were neither evaluated nor logged


def test_lazy_decisions_spend_rate_limits_only_for_the_checks_asked(tmp_path: Path) -> None:
    write_estate(tmp_path / "policies")
    (tmp_path / "policies" / "limits.yaml").write_text("agents: {worker: {rate: 0, burst: 2}}\n")
    env = Env(tmp_path)
    token = env.token()
    first = stop_after(env.pipeline.decide(Request([READ, READ, READ], Credentials(token))), lambda ok: ok)
    assert [d.reason.value for d in first] == ["allowed"]  # one of the two tokens spent
    assert [d.reason.value for d in env.ask(token, READ, READ)] == ["allowed", "rate_limited"]


def test_malformed_request_is_a_fault_for_every_check(env: Env) -> None:
    decisions = env.ask(env.token(), READ, Check("", ResourceRef("Doc", "plan")))
    assert [d.fault.value if d.fault else None for d in decisions] == ["invalid_argument"] * 2
    assert len(env.log.entries) == 2


def test_no_policy_set_is_unavailable(env: Env) -> None:
    env.store.snapshot = None
    [d] = env.ask(env.token())
    assert (d.reason.value, d.fault.value if d.fault else None) == ("policy_unavailable", "unavailable")


def test_trusted_subjects_are_admitted_once_each(env: Env) -> None:
    env.controls.kills.disable("user", "mallory", "drill")
    subjects = [Subject("User", "mallory"), Subject("Agent", "worker"), Subject("Agent", "nobody")]
    request = Request([READ, READ, READ], subjects=subjects)
    reasons = [d.reason.value for d in env.pipeline.authorize(request)]
    # mallory is killed; worker passes the controls and reaches Cedar (whose schema wants the
    # token keys a trusted subject cannot have); an unregistered agent is refused by the registry.
    assert reasons == ["agent_disabled", "invalid_request", "chain_unknown_agent"]
    assert [(d.agent, d.on_behalf_of) for d in env.log.entries] == [("", "mallory"), ("worker", ""), ("nobody", "")]


def test_a_named_subject_other_than_the_tokens_principal_is_refused(env: Env) -> None:
    [d] = env.pipeline.authorize(Request([READ], Credentials(env.token()), expect=("Agent", "orchestrator")))
    assert d.reason.value == "invalid_request" and d.agent == "worker"


def test_a_fault_inside_a_stage_is_an_internal_error_never_an_allow(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr("pep.pipeline.cedar_request.for_token", broken)
    decisions = env.ask(env.token(), READ, READ)
    assert [(d.answer_allowed, d.reason.value) for d in decisions] == [(False, "internal_error")] * 2
    assert len(env.log.entries) == 2 and env.counted("deny", "internal_error") == 2


def test_dry_run_answers_allow_and_records_the_real_decision(tmp_path: Path) -> None:
    env = Env(tmp_path, mode="dry_run")
    [d] = env.ask(env.token(), Check("read", ResourceRef("Doc", "keys")))
    assert (d.answer_allowed, d.allowed, d.reason.value, d.mode) == (True, False, "policy_forbid", "dry_run")
    assert env.counted("deny", "policy_forbid") == 1
