"""A fuzz pass over the AuthZEN HTTP surface, bounded in examples: random bodies and headers.

The property, for every input: the answer is a documented status with a JSON body (never 500),
a 200 allows only what the policies allow for a real subject, and pep writes one decision-log
line per evaluation it judged (a 400 from the pipeline included) and none for a request it
refused before judging (bad JSON, a missing member).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.harness.authzen import PIDS, TODO, Pep, start_authzen

EXAMPLES = int(os.environ.get("PEP_TEST_FUZZ_EXAMPLES", "150"))
DOCUMENTED = {200, 400, 404, 405, 408, 413, 415, 431, 503}
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

names = st.sampled_from(["user", "todo", "Agent", "", "can_read_todos", "can_update_todo", *PIDS.values()]) | st.text(
    max_size=20
)
scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(names, inner, max_size=3))
entity = st.fixed_dictionaries({"type": names, "id": names}, optional={"properties": values})
evaluation = st.fixed_dictionaries(
    {},
    optional={
        "subject": entity | values,
        "action": st.fixed_dictionaries({"name": names}) | values,
        "resource": entity | values,
        "context": values,
    },
)
bodies = (
    evaluation
    | st.fixed_dictionaries(
        {"evaluations": st.lists(evaluation, max_size=4) | values},
        optional={
            "subject": entity,
            "action": st.fixed_dictionaries({"name": names}),
            "resource": entity,
            "options": st.fixed_dictionaries({"evaluations_semantic": names}) | values,
        },
    )
    | values
)
headers = st.dictionaries(
    st.sampled_from(["X-Request-ID", "traceparent", "Authorization", "X-Forwarded-Uri", "Accept", "X-Junk"]),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60),
    max_size=3,
)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pep]:
    root = tmp_path_factory.mktemp("authzen-fuzz")
    shutil.copytree(TODO, root / "policies")
    pep = start_authzen(root / "run", root / "policies")
    yield pep
    pep.server.stop(0)


_ids = itertools.count()


def _lines(pep: Pep, request_id: str) -> int:
    text = pep.log_path.read_text() if pep.log_path.exists() else ""
    return sum(1 for line in text.splitlines() if json.loads(line).get("request_id") == request_id)


def _settled(pep: Pep, request_id: str, want: int) -> int:
    """The lines logged for `request_id` once `want` are there (or after 5 s), and a moment more."""
    deadline = time.monotonic() + 5
    while _lines(pep, request_id) < want and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    return _lines(pep, request_id)


@SETTINGS
@given(body=bodies, extra=headers, batch=st.booleans())
def test_random_bodies_and_headers(fuzzed: Pep, body: Any, extra: dict[str, str], batch: bool) -> None:
    rid = f"fuzz-{next(_ids)}"
    path = "/access/v1/evaluations" if batch else "/access/v1/evaluation"
    reply = fuzzed.client.post(path, json.dumps(body).encode(), {**extra, "X-Request-ID": rid})
    assert reply.status in DOCUMENTED, (reply.status, reply.body)
    assert isinstance(reply.body, dict)
    if reply.status == 200:
        answered = reply.body.get("evaluations", [reply.body])
        assert _settled(fuzzed, rid, len(answered)) == len(answered)
    else:
        # Refused before the pipeline (bad JSON, a missing member): no line. Refused by it (a null,
        # a number that is not whole): a line per evaluation, as for any decision.
        assert "error" in reply.body
        items = body.get("evaluations") if batch and isinstance(body, dict) else None
        n = len(items) if isinstance(items, list) and items else 1
        assert _settled(fuzzed, rid, 0) in (0, n)


@SETTINGS
@given(raw=st.binary(max_size=300), content_type=st.sampled_from(["application/json", "text/plain", ""]))
def test_random_bytes(fuzzed: Pep, raw: bytes, content_type: str) -> None:
    rid = f"fuzz-{next(_ids)}"
    hdrs = {"X-Request-ID": rid, **({"Content-Type": content_type} if content_type else {})}
    reply = fuzzed.client.request("POST", "/access/v1/evaluation", raw, hdrs)
    assert reply.status in DOCUMENTED, (reply.status, reply.body)
    assert _settled(fuzzed, rid, 1 if reply.status == 200 else 0) in ((1,) if reply.status == 200 else (0, 1))
