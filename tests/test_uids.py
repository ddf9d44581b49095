"""Entity uids: one `Type::"id"` parser that reads Cedar's syntax, one Cedar JSON uid parser."""

from __future__ import annotations

import json

import cedarpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pep.config.routes import MAX_ID_LENGTH, parse_entity_ref
from pep.policy.slicing import parse_uid_text
from pep.uids import ACTION, AGENT, AGENT_GROUP, GROUP, USER, format_uid, is_action_type, parse_json_uid, parse_uid


def cedar_uid(text: str) -> tuple[str, str] | None:
    """What Cedar itself reads `text` as, in a policy scope; None when it refuses it."""
    try:
        est = json.loads(cedarpy.policies_to_json_str(f"permit(principal == {text}, action, resource);"))
    except ValueError:
        return None
    entity = est["staticPolicies"]["policy0"]["principal"]["entity"]
    return entity["type"], entity["id"]


def test_type_names() -> None:
    assert (AGENT, USER, GROUP, AGENT_GROUP, ACTION) == ("Agent", "User", "Group", "AgentGroup", "Action")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('Doc::"plan"', ("Doc", "plan")),
        ('App::Doc::"a::b"', ("App::Doc", "a::b")),
        (' Doc::"say \\"hi\\"" ', ("Doc", 'say "hi"')),
        ('Doc :: "x"', ("Doc", "x")),
        ('App :: Doc::"x"', ("App::Doc", "x")),
        ('_D1::"x"', ("_D1", "x")),
        ('Doc::"\\\\"', ("Doc", "\\")),
        ('Doc::"\\n\\r\\t\\0\\\'"', ("Doc", "\n\r\t\0'")),
        ('Doc::"\\x41\\x7f"', ("Doc", "A\x7f")),
        ('Doc::"\\u{41}\\u{1F600}\\u{10FFFF}"', ("Doc", "A\U0001f600\U0010ffff")),
        ('Doc::"line\nbreak"', ("Doc", "line\nbreak")),
        ('Doc::"é"', ("Doc", "é")),
        ('principal::"x"', ("principal", "x")),
    ],
)
def test_parses_cedar_uid_text(text: str, expected: tuple[str, str]) -> None:
    assert parse_uid(text) == expected
    assert cedar_uid(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "plan",
        "Doc:x",
        'Doc::"a',
        'Doc::"a" x',
        "Doc::'a'",
        'Doc:::"a"',
        '1Doc::"a"',
        'A B::"a"',
        'Doc::"\\u0041"',  # JSON's escape, not Cedar's
        'Doc::"\\/"',
        'Doc::"\\x80"',
        'Doc::"\\x4"',
        'Doc::"\\u{D800}"',
        'Doc::"\\u{110000}"',
        'Doc::"\\u{1234567}"',
        'Doc::"\\u{}"',
        'Doc::"\\*"',
        'in::"x"',
        'App::is::"x"',
        'true::"x"',
        '__cedar::"x"',
    ],
)
def test_refuses_what_cedar_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_uid(text)
    assert cedar_uid(text) is None


@pytest.mark.parametrize("text", ['Doc::""', '::"a"', '::""', '"a"', ""])
def test_refuses_empty_types_and_ids(text: str) -> None:
    with pytest.raises(ValueError, match=r'must not be empty|expected Type::"id"'):
        parse_uid(text)


def test_the_old_names_use_the_one_parser() -> None:
    assert parse_uid_text('Doc::""') is None
    assert parse_uid_text('App::Doc::"x"') == ("App::Doc", "x")
    with pytest.raises(ValueError, match="must not be empty"):
        parse_entity_ref('Doc::""')
    assert parse_entity_ref('Doc::"' + "x" * MAX_ID_LENGTH + '"') == ("Doc", "x" * MAX_ID_LENGTH)
    with pytest.raises(ValueError, match="1 to 1024 characters"):
        parse_entity_ref('Doc::"' + "x" * (MAX_ID_LENGTH + 1) + '"')


_IDENT = st.from_regex(r"[_a-zA-Z][_a-zA-Z0-9]{0,8}", fullmatch=True).filter(
    lambda s: s not in {"true", "false", "if", "then", "else", "in", "is", "has", "like", "__cedar"}
)
TYPES = st.lists(_IDENT, min_size=1, max_size=3).map("::".join)
IDS = st.text(min_size=1, max_size=30)
UIDS = st.tuples(TYPES, IDS)


@given(UIDS)
def test_format_then_parse_round_trips(uid: tuple[str, str]) -> None:
    assert parse_uid(format_uid(uid)) == uid


@settings(max_examples=60, deadline=None)
@given(UIDS)
def test_cedar_reads_formatted_uids_the_same(uid: tuple[str, str]) -> None:
    assert cedar_uid(format_uid(uid)) == uid


@given(st.text(max_size=40))
def test_any_text_parses_or_raises_value_error(text: str) -> None:
    try:
        type_, id_ = parse_uid(text)
    except ValueError:
        return
    assert type_ and id_
    assert parse_uid(format_uid((type_, id_))) == (type_, id_)


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet='ab:"\\ux{}0 \n', max_size=16))
def test_agrees_with_cedar_on_tricky_text(body: str) -> None:
    text = f"Doc::{body}"
    ours: tuple[str, str] | None
    try:
        ours = parse_uid(text)
    except ValueError:
        ours = None
    theirs = cedar_uid(text)
    if theirs is not None and theirs[1] == "":
        return  # pep refuses empty ids
    assert ours == theirs


@given(UIDS)
def test_json_uid_round_trips(uid: tuple[str, str]) -> None:
    plain = {"type": uid[0], "id": uid[1]}
    assert parse_json_uid(plain) == uid
    assert parse_json_uid({"__entity": plain}) == uid
    assert parse_json_uid(json.loads(json.dumps({"__entity": plain}))) == uid


@pytest.mark.parametrize(
    "value",
    [None, 'Doc::"x"', [], {}, {"type": "Doc"}, {"id": "x"}, {"type": 1, "id": "x"}, {"__entity": 'Doc::"x"'}],
)
def test_json_uid_refuses_non_uids(value: object) -> None:
    assert parse_json_uid(value) is None


def test_action_types() -> None:
    assert is_action_type("Action")
    assert is_action_type("App::Action")
    assert not is_action_type("MyAction")
    assert not is_action_type("Agent")
