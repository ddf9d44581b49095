"""The decision memo changes nothing but speed: with it and without it, the same decisions and log entries.

Two pipelines over the same snapshots, one with the memo and one without, get the same generated
requests (repeats included, so the memo answers many of them): single checks and batches, stored
and caller-described resources, contexts that fit the schema and ones that do not, valid, unknown
and broken chains, shadow policies, and reloads in the middle (a new snapshot never sees the old
one's answers, including one that changes only the registry's scopes for an agent). Every log
entry must match, but for `ts`, `decision_id` and `duration_us`.
"""

from __future__ import annotations

import shutil
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from pep.audit.entry import log_entry
from pep.config import parse_config
from pep.controls.admit import Controls
from pep.dev import tokens as devtoken
from pep.metrics import Metrics
from pep.pipeline import Pipeline, Request
from pep.pipeline.memo import DecisionMemo
from pep.pipeline.record import Recorder
from pep.policy.loader import load_snapshot
from pep.policy.request import Check, ResourceRef
from pep.tokens.verifier import Credentials, TokenVerifier
from tests.harness.estate import write_estate
from tests.pipeline.test_pipeline import Fixed, Log

ISSUER, AUDIENCE = "https://issuer.memo", "pep-memo"
VOLATILE = ("ts", "decision_id", "duration_us")
READ_PLAN = Check("read", ResourceRef("Doc", "plan"))

RESOURCES = [
    ResourceRef("Doc", "plan"),
    ResourceRef("Doc", "keys"),
    ResourceRef("Doc", "new", {"classification": "internal"}),
    ResourceRef("Doc", "new", {"classification": "secret"}),
    ResourceRef("Doc", "other", {"classification": 5}),  # does not fit the schema
    ResourceRef("Doc", "plan", {"classification": "x"}),  # stored: may not be described
]
CONTEXTS: list[dict[str, Any]] = [{}, {"amount": 0}, {"amount": 1}, {"amount": 7}, {"price": 2}, {"extra": True}]
ACTIONS = ["read", "write", "delete"]
CHAINS = [("worker",), ("worker", "orchestrator"), ("loner",), ("nobody",), ("sleepy",)]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("memo")
    key, jwks = devtoken.ensure_dev_keys(str(tmp / "keys"))
    first = write_estate(tmp / "v1")
    # A token's docs:admin forbids writing; in the third snapshot worker's registry entry drops it.
    # (On Doc::"plan" alone, where no other forbid applies: Cedar lists several in no fixed order.)
    admin = (
        'forbid(principal, action == Action::"write", resource == Doc::"plan") '
        'when { context.token.scopes.contains("docs:admin") };'
    )
    (first / "docs.cedar").write_text((first / "docs.cedar").read_text() + "\n" + admin + "\n")
    (first / "shadow").mkdir()
    (first / "shadow" / "s.cedar").write_text('forbid(principal, action == Action::"write", resource);')
    second = tmp / "v2"
    shutil.copytree(first, second)
    forbid_plan = 'forbid(principal, action == Action::"read", resource == Doc::"plan");'
    (second / "docs.cedar").write_text((second / "docs.cedar").read_text() + "\n" + forbid_plan + "\n")
    third = tmp / "v3"
    shutil.copytree(first, third)
    worker = "{id: worker, owner: team@example.com, groups: [workers], attributes: {sandboxed: true}}"
    agents = (third / "agents.yaml").read_text()
    assert worker in agents
    (third / "agents.yaml").write_text(agents.replace(worker, worker[:-1] + ", scopes: [docs:read]}"))
    config = parse_config(
        {"issuers": [{"issuer": ISSUER, "audiences": [AUDIENCE], "jwks_file": jwks, "algorithms": ["ES256"]}]}
    )
    tokens = [
        devtoken.mint_token(
            key, issuer=ISSUER, audience=AUDIENCE, sub=user, act_chain=chain, ttl_seconds=3600, scopes=scopes
        )
        for user, scopes in (("alice", ("docs:admin", "docs:read")), ("bob", ()))
        for chain in CHAINS
    ]
    snapshots = [load_snapshot(str(first)), load_snapshot(str(second)), load_snapshot(str(third))]
    return {"config": config, "tokens": tokens, "snapshots": snapshots}


def pipeline(world: dict[str, Any], store: Fixed, memo: DecisionMemo | None) -> tuple[Pipeline, Log]:
    config = world["config"]
    log = Log()
    metrics = Metrics(CollectorRegistry(), process=False)
    verifier = TokenVerifier(config.issuers, config.tokens)
    recorder = Recorder(log, metrics)
    p = Pipeline(
        store, verifier, Controls(), recorder, delegation=config.delegation, identity=config.identity, memo=memo
    )
    return p, log


checks = st.builds(
    lambda a, r, c: Check(ACTIONS[a], RESOURCES[r], CONTEXTS[c]),
    st.integers(0, len(ACTIONS) - 1),
    st.integers(0, len(RESOURCES) - 1),
    st.integers(0, len(CONTEXTS) - 1),
)
steps = st.one_of(
    st.tuples(st.just("ask"), st.integers(0, 2 * len(CHAINS) - 1), st.lists(checks, min_size=1, max_size=3)),
    st.tuples(st.just("reload"), st.integers(0, 2), st.just([])),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(steps, min_size=5, max_size=40))
def test_memo_on_and_off_decide_and_log_the_same(world: dict[str, Any], plan: list[Any]) -> None:
    lookups: list[bool] = []
    plain_store, memo_store = Fixed(world["snapshots"][0]), Fixed(world["snapshots"][0])
    plain, plain_log = pipeline(world, plain_store, None)
    memoized, memo_log = pipeline(world, memo_store, DecisionMemo(64, lookups.append))
    # Every request twice in a row: the second is a memo hit whenever the first was evaluated
    # (unless a check of a batch described its resource: such a batch is not remembered).
    evaluated = {"allowed", "policy_forbid", "policy_no_permit", "evaluation_error"}
    rememberable = False
    for kind, which, batch in plan:
        if kind == "reload":
            plain_store.snapshot = memo_store.snapshot = world["snapshots"][which]
            continue
        request = Request(batch, Credentials("Bearer " + world["tokens"][which]))
        for _ in range(2):
            a, b = plain.authorize(request), memoized.authorize(request)
            assert [(d.allowed, d.reason, d.policies, d.errors) for d in a] == [
                (d.allowed, d.reason, d.policies, d.errors) for d in b
            ]
        if len(batch) == 1 or not any(c.resource.attributes for c in batch):
            rememberable = rememberable or any(d.reason.value in evaluated for d in a)
    assert len(plain_log.entries) == len(memo_log.entries)
    if rememberable:
        assert True in lookups  # the memo answered (every request is asked twice)
    for x, y in zip(plain_log.entries, memo_log.entries, strict=True):
        ex, ey = log_entry(x), log_entry(y)
        for key in VOLATILE:
            ex.pop(key), ey.pop(key)
        for e in (ex, ey):  # a batch's id is each pipeline's own
            e.get("inputs", {}).get("batch", {}).pop("id", None)
        assert ex == ey


def test_the_memo_answers_repeats_and_forgets_a_replaced_snapshot(world: dict[str, Any]) -> None:
    lookups: list[bool] = []
    store = Fixed(world["snapshots"][0])
    memoized, log = pipeline(world, store, DecisionMemo(64, lookups.append))
    read = Request([READ_PLAN], Credentials("Bearer " + world["tokens"][0]))
    assert [memoized.authorize(read)[0].reason.value for _ in range(3)] == ["allowed"] * 3
    assert lookups == [False, True, True]
    store.snapshot = world["snapshots"][1]  # a reload that forbids it
    assert memoized.authorize(read)[0].reason.value == "policy_forbid"
    assert lookups[-1] is False
    assert len(log.entries) == 4  # every call logged, hits too


def test_the_memo_is_bounded(world: dict[str, Any]) -> None:
    memo = DecisionMemo(2)
    snapshot = world["snapshots"][0]
    keys = []
    for i in range(5):
        k, found = memo.lookup(snapshot, f"t{i}", [READ_PLAN], [{}], [None], True)
        assert found == [None]
        keys.append(k)
        memo.store(snapshot, k, [object()])  # type: ignore[list-item]
    assert memo.lookup(snapshot, "t0", [READ_PLAN], [{}], [None], True)[1] == [None]
    assert memo.lookup(snapshot, "t4", [READ_PLAN], [{}], [None], True)[1] != [None]


def test_a_batch_that_describes_a_resource_is_not_remembered(world: dict[str, Any]) -> None:
    lookups: list[bool] = []
    memoized, _ = pipeline(world, Fixed(world["snapshots"][0]), DecisionMemo(64, lookups.append))
    token = Credentials("Bearer " + world["tokens"][0])  # alice through worker
    bare = Check("read", ResourceRef("Doc", "draft"))
    secret = Check("read", ResourceRef("Doc", "draft", {"classification": "secret"}))
    assert memoized.authorize(Request([bare], token))[0].reason.value == "allowed"
    # In one request, the draft the first check describes is the draft the second one reads.
    assert [d.reason.value for d in memoized.authorize(Request([secret, bare], token))] == ["policy_forbid"] * 2
    # Remembered, that answer would leak into the next request that reads the draft alone.
    assert memoized.authorize(Request([bare], token))[0].reason.value == "allowed"
    assert lookups == [False, True]  # the batch was neither looked up nor stored
