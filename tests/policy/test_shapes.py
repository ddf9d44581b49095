"""A request whose shape the schema accepted before decides exactly as if it were validated again."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pep.policy.evaluate import Query, evaluate, outcome_of
from pep.policy.loader import load_snapshot
from pep.policy.shapes import ValidatedShapes, context_shape, entity_shape
from pep.policy.snapshot import Snapshot
from tests.harness.estate import write_estate

BASE = {
    "delegation": {"depth": 1, "actors": [], "origin": {"__entity": {"type": "Agent", "id": "worker"}}},
    "token": {"issuer": "i", "scopes": ["a"], "client_id": "worker", "issued_at": 1, "expires_at": 2},
    "binding": "bearer",
}
scalars = st.one_of(
    st.integers(-5, 5),
    st.sampled_from(["x", "", "secret"]),
    st.booleans(),
    st.sampled_from(
        [
            {"__extn": {"fn": "decimal", "arg": "1.5"}},
            {"__extn": {"fn": "decimal", "arg": "not a number"}},
            {"__extn": {"fn": "ip", "arg": "10.0.0.1"}},
            {"__entity": {"type": "User", "id": "alice"}},
            {"__entity": {"type": "Doc", "id": "plan"}},
            {"type": "User", "id": "alice"},  # read as an entity only with a schema
            {"fn": "decimal", "arg": "2.0"},
        ]
    ),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3), max_leaves=5)
contexts = st.fixed_dictionaries(
    {},
    optional={
        "amount": values,
        "price": values,
        "extra": values,
        "on_behalf_of": st.sampled_from(
            [{"__entity": {"type": "User", "id": "alice"}}, {"__entity": {"type": "Doc", "id": "plan"}}, "alice"]
        ),
        "binding": st.sampled_from(["bearer", 1]),
    },
)


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> Snapshot:
    return load_snapshot(str(write_estate(tmp_path_factory.mktemp("shapes") / "p")))


def decide(snapshot: Snapshot, action: str, resource: str, context: dict[str, Any]) -> tuple[Any, ...]:
    query = Query(("Agent", "worker"), ("Action", action), ("Doc", resource), context)
    entities = snapshot.entities_for({("Agent", "worker"), ("Doc", resource), ("User", "alice")})
    o = outcome_of(evaluate(snapshot, [query], entities)[0])
    return o.allowed, o.reason, o.policies, o.errors


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["read", "write"]), st.sampled_from(["plan", "keys"]), contexts), max_size=9))
def test_known_shapes_decide_as_validated_ones(snapshot: Snapshot, asks: list[Any]) -> None:
    always = dataclasses.replace(snapshot, shapes=ValidatedShapes(enabled=False))
    learning = dataclasses.replace(snapshot, shapes=ValidatedShapes())
    for action, resource, extra in asks * 2:  # twice: the second round meets learned shapes
        context = {**BASE, **extra}
        assert decide(learning, action, resource, context) == decide(always, action, resource, context)


def test_shapes_are_learned_and_used(snapshot: Snapshot) -> None:
    learning = dataclasses.replace(snapshot, shapes=ValidatedShapes())
    context = {**BASE, "amount": 1}
    key = learning.shapes.key(("Agent", "worker"), ("Action", "write"), ("Doc", "plan"), context)
    assert not learning.shapes.known(key)
    decide(learning, "write", "plan", context)
    assert learning.shapes.known(key)
    invalid = {**BASE, "amount": "one"}
    decide(learning, "write", "plan", invalid)
    bad_key = learning.shapes.key(("Agent", "worker"), ("Action", "write"), ("Doc", "plan"), invalid)
    assert not learning.shapes.known(bad_key)  # refused by the schema: never learned


def test_implicit_forms_have_no_shape() -> None:
    assert context_shape({"a": {"type": "User", "id": "x"}}) is None
    assert context_shape({"a": [{"fn": "ip", "arg": "1.2.3.4"}]}) is None
    assert context_shape({"a": {"__entity": {"type": "User", "id": "x"}, "b": 1}}) is None
    assert context_shape({"a": 1, "b": ["x", True]}) == "{'a':i,'b':[b,s]}"


def test_a_schema_with_enum_types_validates_every_request(tmp_path: Path) -> None:
    root = write_estate(tmp_path / "p")
    schema = root / "schema.cedarschema"
    schema.write_text(schema.read_text() + '\nentity Color enum ["red", "blue"];\n')
    snap = load_snapshot(str(root))
    decide(snap, "read", "plan", dict(BASE))
    key = snap.shapes.key(("Agent", "worker"), ("Action", "read"), ("Doc", "plan"), dict(BASE))
    assert not snap.shapes.known(key)


doc_attributes = st.fixed_dictionaries(
    {},
    optional={
        "owner": st.sampled_from(
            [{"__entity": {"type": "User", "id": "alice"}}, {"type": "User", "id": "bob"}, "alice", 3]
        ),
        "classification": values,
        "extra": values,
    },
)
parents = st.lists(st.sampled_from([{"type": "Group", "id": "g"}, {"type": "Doc", "id": "plan"}]), max_size=2)


def described(snapshot: Snapshot, action: str, attrs: dict[str, Any], ups: list[Any], n: int) -> tuple[Any, ...]:
    """A Doc the store does not hold, described by the request (as pep's pipeline adds it)."""
    uid = ("Doc", f"new-{n}")
    delta = [{"uid": {"type": "Doc", "id": uid[1]}, "attrs": attrs, "parents": ups}]
    try:
        entities = snapshot.entities_for({("Agent", "worker"), uid, ("User", "alice")}, delta)
    except ValueError as e:
        return ("refused", str(e).replace(uid[1], "X"))
    o = outcome_of(evaluate(snapshot, [Query(("Agent", "worker"), ("Action", action), uid, dict(BASE))], entities)[0])
    return o.allowed, o.reason, o.policies, tuple(e.replace(uid[1], "X") for e in o.errors)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["read", "write"]), doc_attributes, parents), max_size=8))
def test_described_entities_of_known_shapes_decide_as_validated_ones(tmp_path_factory: Any, asks: list[Any]) -> None:
    root = write_estate(tmp_path_factory.mktemp("delta") / "p")
    learning, always = load_snapshot(str(root)), load_snapshot(str(root))
    always.entity_index.shapes = ValidatedShapes(enabled=False)
    for n, (action, attrs, ups) in enumerate(asks * 2):  # the second round meets learned shapes
        assert described(learning, action, attrs, ups, n) == described(always, action, attrs, ups, n)


def test_entity_shapes_are_learned_only_when_the_schema_accepts_them(snapshot: Snapshot) -> None:
    good = {"uid": {"type": "Doc", "id": "d1"}, "attrs": {"classification": "open"}, "parents": []}
    bad = {"uid": {"type": "Doc", "id": "d2"}, "attrs": {"classification": 5}, "parents": []}
    shapes = snapshot.entity_index.shapes
    assert shapes is not None
    snapshot.entities_for({("Doc", "d1")}, [good])
    assert shapes.known(entity_shape(good))
    with pytest.raises(ValueError):
        snapshot.entities_for({("Doc", "d2")}, [bad])
    assert not shapes.known(entity_shape(bad))
    implicit = {"uid": {"type": "Doc", "id": "d3"}, "attrs": {"owner": {"type": "User", "id": "a"}}, "parents": []}
    assert entity_shape(implicit) is None  # read as an entity only with the schema: always validated
