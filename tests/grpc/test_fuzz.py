"""A fuzz pass over the gRPC surface, bounded in examples: random Structs, ids, batches, bytes.

The property, for every input: the answer is a decision or a documented status (never UNKNOWN
or INTERNAL), never an allow without a valid token, and pep writes exactly one decision-log
line per check it judged (one for a request it refused whole).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pep._proto.pep.v1 import authorizer_pb2 as pb
from tests.harness.server import Harness, open_harness

EXAMPLES = int(os.environ.get("PEP_TEST_FUZZ_EXAMPLES", "150"))
DOCUMENTED = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED}
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

text = st.text(max_size=40) | st.sampled_from(["", "read", "write", "Doc", "plan", "a" * 300, "\x00", 'Doc::"x"'])
numbers = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(2**70), 2**70).map(float)
leaves = st.none() | st.booleans() | numbers | text
json_values = st.recursive(
    leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4), max_leaves=20
)


def _fill(value: struct_pb2.Value, data: Any) -> None:
    if data is None:
        value.null_value = struct_pb2.NULL_VALUE
    elif isinstance(data, bool):
        value.bool_value = data
    elif isinstance(data, float):
        value.number_value = data
    elif isinstance(data, str):
        value.string_value = data
    elif isinstance(data, list):
        value.list_value.SetInParent()
        for item in data:
            _fill(value.list_value.values.add(), item)
    else:
        value.struct_value.SetInParent()
        for k, v in data.items():
            _fill(value.struct_value.fields[k], v)


def _struct(data: dict[str, Any]) -> struct_pb2.Struct:
    holder = struct_pb2.Value()
    _fill(holder, data)
    return holder.struct_value


checks = st.builds(
    dict,
    action=text,
    rtype=text,
    rid=text,
    context=st.none() | st.dictionaries(text, json_values, max_size=4),
    attributes=st.none() | st.dictionaries(text, json_values, max_size=3),
    parents=st.lists(st.tuples(text, text), max_size=3),
    request_id=text,
)


def _message(cls: Any, c: dict[str, Any]) -> Any:
    msg = cls(action=c["action"], request_id=c["request_id"])
    msg.resource.type, msg.resource.id = c["rtype"], c["rid"]
    for ptype, pid in c["parents"]:
        msg.resource.parents.add(type=ptype, id=pid)
    if c["attributes"] is not None:
        msg.resource.attributes.CopyFrom(_struct(c["attributes"]))
    if c["context"] is not None:
        msg.context.CopyFrom(_struct(c["context"]))
    return msg


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    h = open_harness(tmp_path_factory.mktemp("fuzz"))
    yield h
    h.close()


def _lines(h: Harness) -> int:
    return len(h.log_path.read_text().splitlines()) if h.log_path.exists() else 0


def _wait_lines(h: Harness, want: int) -> int:
    """The line count once `want` lines are there (the log is written in the background), or after 5 s."""
    deadline = time.monotonic() + 5
    while (got := _lines(h)) < want and time.monotonic() < deadline:
        time.sleep(0.01)
    return got


@SETTINGS
@given(check=checks, valid_token=st.booleans(), token_text=text)
def test_single_calls(fuzzed: Harness, check: dict[str, Any], valid_token: bool, token_text: str) -> None:
    before = _lines(fuzzed)
    req = _message(pb.AuthorizeRequest, check)
    req.token = fuzzed.token() if valid_token else token_text
    try:
        answer = fuzzed.stub.Authorize(req, timeout=10)
    except grpc.RpcError as e:
        assert e.code() in DOCUMENTED, (e.code(), e.details())
    else:
        assert valid_token or answer.decision == pb.DECISION_DENY
    assert _wait_lines(fuzzed, before + 1) == before + 1


@SETTINGS
@given(batch=st.lists(checks, max_size=5), valid_token=st.booleans())
def test_batches(fuzzed: Harness, batch: list[dict[str, Any]], valid_token: bool) -> None:
    before = _lines(fuzzed)
    req = pb.AuthorizeBatchRequest(token=fuzzed.token() if valid_token else "x", request_id="fuzz")
    for c in batch:
        req.checks.append(_message(pb.Check, c))
    try:
        answer = fuzzed.stub.AuthorizeBatch(req, timeout=10)
    except grpc.RpcError as e:
        assert e.code() in DOCUMENTED, (e.code(), e.details())
    else:
        assert valid_token or all(r.decision == pb.DECISION_DENY for r in answer.responses)
    assert _wait_lines(fuzzed, before + max(1, len(batch))) == before + max(1, len(batch))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.binary(max_size=200), method=st.sampled_from(["Authorize", "AuthorizeBatch"]))
def test_raw_bytes(fuzzed: Harness, payload: bytes, method: str) -> None:
    before = _lines(fuzzed)
    call = fuzzed.channel.unary_unary(f"/pep.v1.Authorizer/{method}")
    try:
        call(payload, timeout=10)
    except grpc.RpcError as e:
        assert e.code() in DOCUMENTED, (e.code(), e.details())
    assert _wait_lines(fuzzed, before + 1) >= before + 1
