"""Revocation without a server: `revoked:` in killswitch.yaml (times, problems at file:line), the
check's rules (a token without iat, the later of file and admin times), and the admin entries'
store round trip (`before`, replaced by a later time, older entries without it)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from pep.controls.killswitch import KillEntry, RuntimeKills, StoredKills
from pep.controls.revocation import check_chain_revoked, check_token_revoked
from pep.errors import ControlError
from pep.metrics import Metrics
from pep.policy.killswitch_file import parse_killswitch
from pep.policy.revoked_file import Revocations, parse_time
from pep.policy.source import load_yaml
from pep.state import FileKills, StoredKill

T = dt.datetime(2026, 12, 1, 10, tzinfo=dt.UTC).timestamp()

GOOD = """\
disabled:
  agents: [old-bot]
revoked:
  tokens: [2c9f0e1a, "12345"]
  issued_before:
    agents: {billing-bot: 2026-12-01T10:00:00Z}
    users: {alice: "2026-12-01T12:00:00+02:00"}
    issuers: {https://idp.example.com: 2026-12-01T10:00:00Z}
"""


def parse(text: str) -> tuple[object, list[str]]:
    kills, problems = parse_killswitch(load_yaml(text, "killswitch.yaml"), "killswitch.yaml")
    return kills, [str(p) for p in problems]


def test_the_file_reads_every_key() -> None:
    kills, problems = parse(GOOD)
    assert problems == []
    rev = kills.revoked  # type: ignore[attr-defined]
    assert rev.tokens == {"2c9f0e1a", "12345"}
    assert (
        rev.agents == {"billing-bot": T} and rev.users == {"alice": T} and rev.issuers == {"https://idp.example.com": T}
    )
    assert kills.agents == {"old-bot"}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("revoked:\n  token: [a]\n", 2, "unknown key 'token' under `revoked`"),
        ("revoked:\n  tokens: [12345]\n", 2, "`revoked.tokens` must be a list of jti strings"),
        ("revoked:\n  issued_before:\n    groups: {}\n", 3, "unknown key 'groups' under"),
        ("revoked:\n  issued_before:\n    agents: [a]\n", 3, "`revoked.issued_before.agents` must map"),
        (
            "revoked:\n  issued_before:\n    agents:\n      a: 2026-12-01T10:00:00\n",
            4,
            "`revoked.issued_before.agents.a`: 2026-12-01T10:00:00 has no time zone",
        ),
        ("revoked:\n  issued_before:\n    users:\n      a: 2026-12-01\n", 4, "is a date: give a time"),
        ("revoked:\n  issued_before:\n    users:\n      a: yesterday\n", 4, "is not an RFC 3339 time"),
        ("revoked: [a]\n", 1, "`revoked` must be a mapping"),
        ("revoke: {}\n", 1, "expected a mapping with keys `disabled` and `revoked`"),
    ],
)
def test_file_problems_at_file_line(text: str, line: int, problem: str) -> None:
    _, problems = parse(text)
    assert problems and problems[0].startswith(f"killswitch.yaml:{line}:") and problem in problems[0], problems


def test_parse_time() -> None:
    assert parse_time("2026-12-01T10:00:00Z") == T == parse_time("2026-12-01T11:00:00+01:00")
    assert parse_time(dt.datetime(2026, 12, 1, 10, tzinfo=dt.UTC)) == T
    for bad in ("2026-12-01T10:00:00", "", "now", 5, dt.date(2026, 12, 1)):
        with pytest.raises(ValueError):
            parse_time(bad)


def reason(fn: object, **kw: object) -> str:
    try:
        fn(**kw)  # type: ignore[operator]
    except ControlError as e:
        assert e.reason == "token_revoked"
        return str(e)
    return "admitted"


def test_check_rules() -> None:
    rev = Revocations(frozenset({"j1"}), agents={"bot": T}, users={"alice": T}, issuers={"https://i": T})
    tok = {"file": rev, "runtime": {}, "issuer": "https://i"}
    assert "'j1' (jti) is revoked" in reason(check_token_revoked, **tok, jti="j1", issued_at=T + 10)
    assert "when issuer 'https://i's tokens were revoked" in reason(
        check_token_revoked, **tok, jti="j2", issued_at=T - 1
    )
    assert reason(check_token_revoked, **tok, jti="j2", issued_at=T) == "admitted"  # at the time: not before it
    assert "token has no iat" in reason(check_token_revoked, **tok, jti="", issued_at=None)
    chain = {"file": rev, "runtime": {}, "issued_at": T - 1}
    assert "agent 'bot's" in reason(check_chain_revoked, **chain, user=None, chain=("x", "bot"))
    assert "user 'alice's" in reason(check_chain_revoked, **chain, user="alice", chain=())
    assert reason(check_chain_revoked, **chain, user="bob", chain=("x",)) == "admitted"
    # An admin entry with a later time wins over the file's.
    later = {("revoked_agent", "bot"): KillEntry("revoked_agent", "bot", "r", T, before=T + 100)}
    assert (
        reason(check_chain_revoked, file=rev, runtime=later, user=None, chain=("bot",), issued_at=T + 50) != "admitted"
    )


def test_runtime_revoke_keeps_the_later_time() -> None:
    kills = RuntimeKills()
    assert kills.revoke("revoked_agent", "bot", T, "r")
    assert not kills.revoke("revoked_agent", "bot", T - 10, "r")  # already covered
    assert kills.revoke("revoked_agent", "bot", T + 10, "r2")  # later: replaces
    assert kills.view()[("revoked_agent", "bot")].before == T + 10
    assert kills.revoke("revoked_token", "j", T, "r") and not kills.revoke("revoked_token", "j", T + 5, "r")


def test_file_store_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "kills.json"
    # An entry written before `before` existed still reads; the revocation keeps its time.
    path.write_text(json.dumps({"schema": 1, "entries": [{"kind": "agent", "id": "a", "reason": "r", "since": 1.0}]}))
    store = FileKills(str(path), Metrics(process=False))
    store.start()
    kills = StoredKills(store)
    assert kills.revoke("revoked_user", "alice", T, "leak", "sre")
    assert kills.revoke("revoked_user", "alice", T + 1, "leak again", "sre")
    data = json.loads(path.read_text())["entries"]
    assert {e["kind"]: e.get("before") for e in data} == {"agent": None, "revoked_user": T + 1}
    again = FileKills(str(path), Metrics(process=False))
    again.start()
    assert again.entries()[("revoked_user", "alice")] == StoredKill(
        "revoked_user", "alice", "leak again", data[1]["since"], "sre", "admin", T + 1
    )
    with pytest.raises(ValueError, match="before must be a number"):
        StoredKill.from_fields("revoked_user", "a", {"reason": "", "since": 1, "before": "soon"})
