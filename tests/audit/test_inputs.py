"""A decision entry's `inputs`: what replay needs, bounded by max_inputs_bytes, redacted by redact_context."""

from __future__ import annotations

import json
from types import MappingProxyType
from typing import Any

import orjson
import pytest

from pep.audit.entry import REDACTED, inputs_policy, log_entry
from pep.decision import Caller, Decision, Inputs
from pep.reasons import Reason

CALLER = Caller(user_groups=("hr",), user_attributes={"dept": "eng"}, issued_at=100, expires_at=400)


def decision(inputs: Inputs | None, **fields: Any) -> Decision:
    return Decision("id-1", False, Reason.POLICY_FORBID, False, inputs=inputs, **fields)


def size(value: Any) -> int:
    """As the log writes it: ASCII JSON, compact."""
    return len(json.dumps(value, separators=(",", ":")))


def test_inputs_hold_every_request_and_token_input() -> None:
    inputs = Inputs(
        {"amount": 5, "card": {"number": "4111"}},
        {"classification": "secret"},
        (("Folder", "shared"),),
        False,
        CALLER,
        True,
    )
    entry = log_entry(decision(inputs))
    assert entry["inputs"] == {
        "evaluated": True,
        "context": {"amount": 5, "card": {"number": "4111"}},
        "resource": {"attributes": {"classification": "secret"}, "parents": [{"type": "Folder", "id": "shared"}]},
        "user": {"groups": ["hr"], "attributes": {"dept": "eng"}},
        "token": {"issued_at": 100, "expires_at": 400},
    }
    assert "inputs_truncated" not in entry and "inputs_redacted" not in entry
    assert list(entry)[-1] == "inputs"  # after every field that was there before


def test_flags_are_written_only_when_not_the_default() -> None:
    caller = Caller(schema=False, strict=False, grants=False, listing=True, policies=False)
    entry = log_entry(decision(Inputs({}, implied=True, caller=caller)))
    assert entry["inputs"] == {
        "evaluated": False,
        "context": {},
        "resource": {"implied": True},
        "schema": False,
        "strict": False,
        "grants": False,
        "listing": True,
        "policies": False,
    }


def test_a_batch_check_names_its_batch() -> None:
    entry = log_entry(decision(Inputs({}, caller=CALLER, evaluated=True, batch="ab-7", batch_size=3)))
    assert entry["inputs"]["batch"] == {"id": "ab-7", "size": 3}


def test_a_trusted_subject_and_its_properties() -> None:
    caller = Caller(subject=("User", "alice"), subject_properties={"dept": "ops"})
    entry = log_entry(decision(Inputs({"k": "v"}, caller=caller, evaluated=True)))
    assert entry["inputs"]["subject"] == {"type": "User", "id": "alice", "properties": {"dept": "ops"}}
    assert "user" not in entry["inputs"] and "token" not in entry["inputs"]


def test_no_inputs_no_key() -> None:
    entry = log_entry(decision(None))
    assert not {"inputs", "inputs_truncated", "inputs_redacted"} & set(entry)


@pytest.mark.parametrize("limit", [1024, 2048, 4096])
def test_inputs_are_bounded_by_max_inputs_bytes(limit: int) -> None:
    inputs = Inputs(
        {"note": "n" * 3000},
        {"blob": "b" * 1500},
        tuple(("Folder", f"f{i}") for i in range(40)),
        False,
        Caller(user_attributes={"bio": "é" * 200}, issued_at=1, expires_at=2),
        True,
    )
    entry = log_entry(decision(inputs), inputs=inputs_policy((), limit))
    assert entry["inputs_truncated"] is True
    kept = entry["inputs"]
    assert size(kept) <= limit
    assert "context" not in kept  # the largest part goes first
    assert kept["token"] == {"issued_at": 1, "expires_at": 2} and kept["evaluated"] is True
    # Nothing dropped that fitted: with a generous limit everything stays.
    whole = log_entry(decision(inputs), inputs=inputs_policy((), 1024 * 1024))
    assert "inputs_truncated" not in whole and whole["inputs"]["context"] == {"note": "n" * 3000}


def test_non_ascii_is_counted_as_written() -> None:
    # 600 characters that the writer escapes as \\uXXXX: 3,600 bytes in the line.
    entry = log_entry(decision(Inputs({"name": "é" * 600}, evaluated=True)), inputs=inputs_policy((), 2048))
    assert entry["inputs_truncated"] is True and "context" not in entry["inputs"]


def test_inputs_that_cannot_fit_at_all_are_left_out() -> None:
    caller = Caller(subject=("User", "u" * 3000))  # the subject's id is not a part that can be dropped
    entry = log_entry(decision(Inputs({}, caller=caller)), inputs=inputs_policy((), 1024))
    assert "inputs" not in entry and entry["inputs_truncated"] is True


def test_what_is_not_json_is_dropped_as_truncated() -> None:
    entry = log_entry(decision(Inputs({"big": 2**70}, {"ok": 1}, evaluated=True)))
    assert entry["inputs_truncated"] is True
    assert "context" not in entry["inputs"] and entry["inputs"]["resource"] == {"attributes": {"ok": 1}}


def test_read_only_mappings_are_copied_as_json() -> None:
    context = MappingProxyType({"a": MappingProxyType({"b": (1, 2)})})
    entry = log_entry(decision(Inputs(context, evaluated=True)))
    assert entry["inputs"]["context"] == {"a": {"b": [1, 2]}}
    orjson.dumps(entry)  # plain JSON all the way down


def test_redact_context_replaces_present_paths_and_lists_them() -> None:
    context = {"card": {"number": "4111111111111111", "brand": "visa"}, "amount": 120}
    errors = ("value 4111111111111111 is not a Long", "amount 1200 over 120")
    policy = inputs_policy(("card.number", "amount", "missing.path", "card.brand.deeper"), 16384)
    entry = log_entry(decision(Inputs(context, evaluated=True), errors=errors), inputs=policy)
    assert entry["inputs"]["context"] == {"card": {"number": REDACTED, "brand": "visa"}, "amount": REDACTED}
    assert entry["inputs_redacted"] == ["card.number", "amount"]
    # The values are scrubbed from the errors too; a number only where it stands alone.
    assert entry["errors"] == [f"value {REDACTED} is not a Long", f"amount 1200 over {REDACTED}"]
    # The request's own objects are never changed.
    assert context == {"card": {"number": "4111111111111111", "brand": "visa"}, "amount": 120}


def test_redacting_a_whole_object() -> None:
    context = {"card": {"number": "4111", "cvv": 123.0}}
    entry = log_entry(
        decision(Inputs(context, evaluated=True), errors=("cvv 123 wrong",)), inputs=inputs_policy(("card",), 16384)
    )
    assert entry["inputs"]["context"] == {"card": REDACTED}
    assert entry["inputs_redacted"] == ["card"]
    assert entry["errors"] == [f"cvv {REDACTED} wrong"]


def test_an_entry_without_the_path_is_not_marked() -> None:
    entry = log_entry(decision(Inputs({"other": 1}, evaluated=True)), inputs=inputs_policy(("card.number",), 16384))
    assert "inputs_redacted" not in entry and entry["inputs"]["context"] == {"other": 1}


def test_a_request_larger_than_an_entry_keeps_is_not_held_while_queued(tmp_path: Any) -> None:
    """The pipeline keeps no reference to a context the entry would cut anyway: a queued entry
    must not keep a large request alive."""
    from tests.harness.server import open_harness

    h = open_harness(tmp_path, decision_log={"sink": str(tmp_path / "decisions.log"), "max_inputs_bytes": 1024})
    try:
        token = h.token()
        h.authorize(token, context={"note": "x" * 5000})
        h.authorize(token, context={"note": "small"})
        h.server.stop(0)
        big, small = [json.loads(line) for line in (tmp_path / "decisions.log").read_text().splitlines()]
    finally:
        h.channel.close()
    assert big["inputs_truncated"] is True and big["inputs"]["context"] == {}
    assert "inputs_truncated" not in small and small["inputs"]["context"] == {"note": "small"}
