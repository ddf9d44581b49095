"""`pep log query` and `pep log verify` on real log files: every filter, in time order across rotated
and gzipped files, json output as logged, the timeline with its admin events (from a real server
too), usage errors; the chain intact, edited, deleted, inserted and reordered."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from pep._proto.pep.v1 import admin_pb2, admin_pb2_grpc
from pep.cli import main
from pep.reasons import Reason
from tests.harness.audit_logs import admin_event, all_lines, decision, rotated_log, write_log
from tests.harness.server import Harness

Capture = pytest.CaptureFixture[str]


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    """Eight decisions of two agents for two users, and two admin events."""
    items = [
        decision(1),
        decision(2, agent="billing-bot", user="bob", action="pay_invoice", resource=("Invoice", "inv-7")),
        decision(3, allowed=False, resource=("File", "finance/q3.xlsx")),
        admin_event(4),
        decision(5, allowed=False, reason=Reason.AGENT_DISABLED, chain=("assistant", "planner")),
        decision(6, agent="billing-bot", user="bob", allowed=False, reason=Reason.RATE_LIMITED),
        admin_event(7, action="enable"),
        decision(8, user="bob", action="delete_file", chain=("assistant", "planner")),
        decision(9, user=""),
        decision(10, agent="billing-bot", user="alice", action="pay_invoice", resource=("Invoice", "inv-8")),
    ]
    path = tmp_path / "decisions.log"
    write_log(path, items)
    return path


def query_ids(capsys: Capture, *args: str) -> list[str]:
    assert main(["log", "query", *args, "--format", "json"]) == 0
    return [json.loads(line)["decision_id"] for line in capsys.readouterr().out.splitlines()]


def ids(*numbers: int) -> list[str]:
    return [f"d-{n:04d}" for n in numbers]


# --- pep log query: filters ------------------------------------------------------------------


def test_without_filters_every_decision_and_no_admin_event(mixed: Path, capsys: Capture) -> None:
    assert query_ids(capsys, str(mixed)) == ids(1, 2, 3, 5, 6, 8, 9, 10)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--agent", "billing-bot"], (2, 6, 10)),
        (["--agent", "billing"], ()),
        (["--user", "bob"], (2, 6, 8)),
        (["--action", "pay_invoice"], (2, 10)),
        (["--action", 'Action::"delete_file"'], (8,)),
        (["--decision", "deny"], (3, 5, 6)),
        (["--decision", "allow"], (1, 2, 8, 9, 10)),
        (["--reason", "agent_disabled"], (5,)),
        (["--since", "2026-12-01T10:00:06Z"], (6, 8, 9, 10)),
        (["--until", "2026-12-01T10:00:03Z"], (1, 2)),
        (["--since", "2026-12-01T12:00:02+02:00", "--until", "2026-12-01T05:00:06-05:00"], (2, 3, 5)),
        (["--since", "2026-12-01T10:00:02.5Z"], (3, 5, 6, 8, 9, 10)),
    ],
)
def test_each_filter(mixed: Path, capsys: Capture, flags: list[str], expected: tuple[int, ...]) -> None:
    assert query_ids(capsys, str(mixed), *flags) == ids(*expected)


def test_filters_combine(mixed: Path, capsys: Capture) -> None:
    assert query_ids(capsys, str(mixed), "--agent", "billing-bot", "--user", "bob") == ids(2, 6)
    assert query_ids(capsys, str(mixed), "--agent", "assistant", "--decision", "deny") == ids(3, 5)
    flags = [
        "--agent",
        "assistant",
        "--decision",
        "deny",
        "--reason",
        "policy_forbid",
        "--until",
        "2026-12-01T10:00:04Z",
    ]
    assert query_ids(capsys, str(mixed), *flags) == ids(3)
    assert (
        query_ids(capsys, str(mixed), "--user", "bob", "--action", "pay_invoice", "--since", "2026-12-01T10:00:03Z")
        == []
    )


def test_no_match_is_still_success(mixed: Path, capsys: Capture) -> None:
    assert main(["log", "query", str(mixed), "--agent", "nobody"]) == 0
    out, err = capsys.readouterr()
    assert out == "" and "no matching entries" in err


# --- pep log query: files, order, formats -------------------------------------------------------------


def test_json_output_is_the_logged_lines_byte_for_byte(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    lines = write_log(tmp_path / "d.log", [decision(1), admin_event(2), decision(3, user="zoë")])
    assert main(["log", "query", str(tmp_path / "d.log"), "--format", "json"]) == 0
    assert capsysbinary.readouterr().out == lines[0] + lines[2]


def test_across_rotated_and_gzipped_files_in_time_order(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    files = rotated_log(tmp_path, [decision(n) for n in range(1, 14)])
    assert [f.name for f in files] == [
        "decisions.log.4",
        "decisions.log.3",
        "decisions.log.2.gz",
        "decisions.log.1",
        "decisions.log",
    ]
    given = [str(f) for f in (files[2], files[4], files[0], files[3], files[1])]
    assert main(["log", "query", *given, "--format", "json"]) == 0
    assert capsysbinary.readouterr().out == b"".join(all_lines(files))
    # A filter across them: only the gzipped file holds decisions 7 to 9.
    assert (
        main(
            [
                "log",
                "query",
                *given,
                "--format",
                "json",
                "--since",
                "2026-12-01T10:00:07Z",
                "--until",
                "2026-12-01T10:00:10Z",
            ]
        )
        == 0
    )
    assert capsysbinary.readouterr().out.splitlines() == [line.rstrip(b"\n") for line in all_lines([files[2]])]


def test_logs_of_two_replicas_are_interleaved_by_time(tmp_path: Path, capsys: Capture) -> None:
    write_log(tmp_path / "a.log", [decision(n, agent="a") for n in (1, 4, 5, 9)])
    write_log(tmp_path / "b.log", [decision(n, agent="b") for n in (2, 3, 6, 7, 8)])
    assert query_ids(capsys, str(tmp_path / "b.log"), str(tmp_path / "a.log")) == ids(*range(1, 10))


def test_table_is_aligned_with_every_column(mixed: Path, capsys: Capture) -> None:
    assert main(["log", "query", str(mixed), "--user", "bob"]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split() == ["TIME", "AGENT", "ON_BEHALF_OF", "ACTION", "RESOURCE", "DECISION", "REASON"]
    assert len(rows) == 3
    assert rows[0].split() == [
        "2026-12-01T10:00:02.000000Z",
        "billing-bot",
        "bob",
        "pay_invoice",
        'Invoice::"inv-7"',
        "allow",
        "allowed",
    ]
    assert rows[1].split()[5:] == ["deny", "rate_limited"]
    columns = [header.index(name) for name in ("AGENT", "ON_BEHALF_OF", "ACTION", "RESOURCE", "DECISION", "REASON")]
    for row in rows:  # every value starts under its heading
        assert all(row[c - 2 : c] == "  " and row[c] != " " for c in columns)


def test_table_shows_empty_fields_as_a_dash_and_escapes_control_characters(tmp_path: Path, capsys: Capture) -> None:
    write_log(tmp_path / "d.log", [decision(1, user="", resource=("File", "evil\x1b[2Jname\n"))])
    assert main(["log", "query", str(tmp_path / "d.log")]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and len(out.splitlines()) == 2
    assert 'File::"evil\\u{1b}[2Jname\\n"' in out
    assert out.splitlines()[1].split()[2] == "-"


def test_a_line_that_is_not_json_is_skipped_with_one_warning_per_file(mixed: Path, capsys: Capture) -> None:
    lines = mixed.read_bytes().splitlines(keepends=True)
    mixed.write_bytes(b"".join(lines[:2]) + b"garbage\n" + lines[2] + b"{broken\n" + b"".join(lines[3:]) + b'{"ts"')
    assert main(["log", "query", str(mixed), "--format", "json"]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 8
    assert err.splitlines() == [
        f"pep log query: warning: {mixed}:3: not a JSON log entry with a ts, skipped"
        " (and 2 more such lines in this file)"
    ]


# --- pep log query --timeline ----------------------------------------------------------------------


def test_timeline_shows_decisions_and_the_admin_events_on_the_agent(mixed: Path, capsys: Capture) -> None:
    assert main(["log", "query", str(mixed), "--agent", "assistant", "--timeline"]) == 0
    header, *lines = capsys.readouterr().out.splitlines()
    assert header.split() == ["TIME", "ACTION", "RESOURCE", "ON_BEHALF_OF", "CHAIN", "DECISION", "REASON"]
    assert len(lines) == 8
    assert lines[0].split() == [
        "2026-12-01T10:00:01.000000Z",
        "read_file",
        'File::"reports/1.txt"',
        "alice",
        "assistant",
        "allow",
        "allowed",
    ]
    assert lines[2] == "2026-12-01T10:00:04.000000Z  ** admin: disable agent assistant by oncall, reason: incident 42"
    assert lines[3].split() == [
        "2026-12-01T10:00:05.000000Z",
        "read_file",
        'File::"reports/5.txt"',
        "alice",
        "assistant",
        "->",
        "planner",
        "deny",
        "agent_disabled",
    ]
    assert lines[4].startswith("2026-12-01T10:00:07.000000Z  ** admin: enable agent assistant by oncall")
    assert lines[6].split()[3] == "-"  # decision 9: no user
    assert lines[-1] == "-- 5 decisions and 2 admin events of agent assistant"


def test_timeline_filters_apply_to_decisions_and_json_keeps_the_lines(mixed: Path, capsys: Capture) -> None:
    assert (
        main(["log", "query", str(mixed), "--agent", "assistant", "--timeline", "--user", "bob", "--format", "json"])
        == 0
    )
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e.get("decision_id") or e["action"] for e in out] == ["disable", "enable", "d-0008"]


def test_timeline_from_a_real_server(harness_factory: Callable[..., Harness], tmp_path: Path, capsys: Capture) -> None:
    log = tmp_path / "decisions.log"
    h = harness_factory(decision_log={"sink": str(log), "chain": True})
    admin_channel = grpc.insecure_channel(h.server.admin_address)
    admin = admin_pb2_grpc.AdminStub(admin_channel)
    token = h.token(act_chain=("worker", "orchestrator"))
    assert h.authorize(token).reason == "allowed"
    admin.Disable(admin_pb2.DisableRequest(kind=admin_pb2.KILL_KIND_AGENT, id="worker", reason="leak", actor="sre"))
    assert h.authorize(token).reason == "agent_disabled"
    admin.Enable(admin_pb2.EnableRequest(kind=admin_pb2.KILL_KIND_AGENT, id="worker", actor="sre"))
    h.authorize(h.token(sub="bob"))
    admin_channel.close()
    h.close()
    assert main(["log", "query", str(log), "--agent", "worker", "--timeline"]) == 0
    _, *lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6
    assert lines[0].split()[1:] == ["read", 'Doc::"plan"', "alice", "worker", "->", "orchestrator", "allow", "allowed"]
    assert lines[1].endswith("** admin: disable agent worker by sre, reason: leak")
    assert lines[2].split()[-2:] == ["deny", "agent_disabled"]
    assert "** admin: enable agent worker by sre" in lines[3]
    assert lines[4].split()[3] == "bob"  # allowed or not, it is the agent's
    assert main(["log", "verify", str(log)]) == 0
    assert capsys.readouterr().out.startswith("intact: 5 entries")


# --- usage errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--since", "yesterday"], "argument --since: not an RFC 3339 time"),
        (["--until", "2026-12-01T10:00:00"], "argument --until: not an RFC 3339 time"),
        (["--since", "2026-02-30T10:00:00Z"], "argument --since: not a valid time"),
        (["--since", "2026-12-02T00:00:00Z", "--until", "2026-12-01T00:00:00Z"], "--since must be before --until"),
        (["--timeline"], "--timeline needs --agent"),
        (["--user", "bob", "--timeline"], "--timeline needs --agent"),
        (["--decision", "maybe"], "argument --decision: invalid choice"),
        (["--reason", "policy_deny"], "argument --reason: unknown reason code 'policy_deny'"),
        (["--format", "csv"], "argument --format: invalid choice"),
    ],
)
def test_usage_errors_exit_2_naming_the_flag(mixed: Path, capsys: Capture, flags: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as info:
        code = main(["log", "query", str(mixed), *flags])
        raise SystemExit(code)
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and message in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("command", ["query", "verify"])
def test_a_missing_file_exits_2_with_its_path(mixed: Path, tmp_path: Path, capsys: Capture, command: str) -> None:
    missing = tmp_path / "decisions.log.7.gz"
    assert main(["log", command, str(mixed), str(missing)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == f"pep log {command}: {missing}: no such file\n"
    assert main(["log", command, str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_log_needs_a_subcommand_and_a_file(capsys: Capture) -> None:
    for argv in (["log"], ["log", "query"], ["log", "verify"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
    capsys.readouterr()


# --- pep log verify ---------------------------------------------------------------------------------


@pytest.fixture
def chained(tmp_path: Path) -> tuple[Path, list[bytes]]:
    path = tmp_path / "chained.log"
    lines = write_log(
        path, [decision(1), decision(2), admin_event(3), decision(4), decision(5), decision(6)], chain=True
    )
    assert [json.loads(line)["seq"] for line in lines] == [1, 2, 3, 4, 5, 6]
    return path, lines


def verify(capsys: Capture, *paths: Path) -> tuple[int, str]:
    code = main(["log", "verify", *map(str, paths)])
    return code, capsys.readouterr().out.strip()


def test_verify_an_intact_log(chained: tuple[Path, list[bytes]], capsys: Capture) -> None:
    assert verify(capsys, chained[0]) == (0, "intact: 6 entries (seq 1 to 6)")


def test_verify_names_an_edited_line(chained: tuple[Path, list[bytes]], capsys: Capture) -> None:
    path, lines = chained
    lines[3] = lines[3].replace(b'"decision":"allow"', b'"decision":"deny"')
    path.write_bytes(b"".join(lines))
    code, out = verify(capsys, path)
    assert code == 1 and out.startswith(f"broken at {path}:4: the entry was changed")


def test_verify_names_where_a_line_was_deleted(chained: tuple[Path, list[bytes]], capsys: Capture) -> None:
    path, lines = chained
    del lines[2]
    path.write_bytes(b"".join(lines))
    code, out = verify(capsys, path)
    assert code == 1 and out.startswith(f"broken at {path}:3: seq jumps from 2 to 4: 1 entry removed")


def test_verify_names_an_inserted_line(chained: tuple[Path, list[bytes]], capsys: Capture) -> None:
    path, lines = chained
    lines.insert(4, lines[1])  # a copy of an older line replayed into the log
    path.write_bytes(b"".join(lines))
    code, out = verify(capsys, path)
    assert code == 1 and out.startswith(f"broken at {path}:5: seq 2 after 4")


def test_verify_names_reordered_lines(chained: tuple[Path, list[bytes]], capsys: Capture) -> None:
    path, lines = chained
    lines[1], lines[2] = lines[2], lines[1]
    path.write_bytes(b"".join(lines))
    code, out = verify(capsys, path)
    assert code == 1 and out.startswith(f"broken at {path}:2:")


def test_verify_an_unchained_log_fails(mixed: Path, capsys: Capture) -> None:
    code, out = verify(capsys, mixed)
    assert code == 1 and out.startswith(f"broken at {mixed}:1: no seq and prev")


def test_verify_across_rotated_and_gzipped_files(tmp_path: Path, capsys: Capture) -> None:
    files = rotated_log(tmp_path, [decision(n) for n in range(1, 14)], chain=True)
    assert len(files) == 5 and files[2].suffix == ".gz"
    assert verify(capsys, *reversed(files)) == (0, "intact: 13 entries (seq 1 to 13)")
    # The rotated files alone (the oldest may have been deleted): still intact from where they start.
    assert verify(capsys, *files[1:]) == (0, "intact: 10 entries (seq 4 to 13)")
    # A whole rotated file removed from the middle.
    code, out = verify(capsys, files[0], files[1], files[3], files[4])
    assert code == 1 and out.startswith(f"broken at {files[3]}:1: seq jumps from 6 to 10")
    # An edit inside the gzipped file.
    lines = all_lines([files[2]])
    lines[1] = lines[1].replace(b'"on_behalf_of":"alice"', b'"on_behalf_of":"mallory"')
    files[2].write_bytes(gzip.compress(b"".join(lines)))
    code, out = verify(capsys, *files)
    assert code == 1 and out.startswith(f"broken at {files[2]}:2: the entry was changed")
