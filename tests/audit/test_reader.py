"""Reading the decision log back (pep/audit/reader.py): RFC 3339 times, one file in time order,
files merged, bad lines skipped and said once per file, the filters and the timeline's events."""

from __future__ import annotations

import datetime as dt
import gzip
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from pep.audit import reader
from pep.audit.reader import Filter, Record, entries, merge_order, parse_time, query, timeline, touches
from pep.reasons import Reason
from tests.harness.audit_logs import BASE, admin_event, decision, rotated_log, write_log

UTC = dt.UTC


def ids(records: Iterable[Record]) -> list[str]:
    return [r.entry.get("decision_id") or f"admin:{r.entry['action']}" for r in records]


# --- times ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-01T10:00:00Z", dt.datetime(2026, 12, 1, 10, tzinfo=UTC)),
        ("2026-12-01t10:00:00z", dt.datetime(2026, 12, 1, 10, tzinfo=UTC)),
        ("2026-12-01 10:00:00Z", dt.datetime(2026, 12, 1, 10, tzinfo=UTC)),
        ("2026-12-01T12:00:00+02:00", dt.datetime(2026, 12, 1, 10, tzinfo=UTC)),
        ("2026-12-01T05:30:00-04:30", dt.datetime(2026, 12, 1, 10, tzinfo=UTC)),
        ("2026-12-01T10:00:00.5Z", dt.datetime(2026, 12, 1, 10, 0, 0, 500000, tzinfo=UTC)),
        ("2026-12-01T10:00:00.123456789Z", dt.datetime(2026, 12, 1, 10, 0, 0, 123456, tzinfo=UTC)),
    ],
)
def test_rfc3339_times_with_offsets_and_fractions(text: str, expected: dt.datetime) -> None:
    assert parse_time(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2026-12-01",
        "2026-12-01T10:00:00",  # no offset: RFC 3339 needs one
        "2026-12-01T10:00Z",
        "2026-13-01T10:00:00Z",
        "2026-12-01T25:00:00Z",
        "1764583200",
        "yesterday",
        "2026-12-01T10:00:00Z trailing",
        "٢٠٢٦-12-01T10:00:00Z",  # non-ASCII digits
    ],
)
def test_what_is_not_an_rfc3339_time(text: str) -> None:
    with pytest.raises(ValueError, match="time"):
        parse_time(text)


def test_pep_timestamps_read_back_exactly(tmp_path: Path) -> None:
    write_log(tmp_path / "d.log", [decision(1, at=BASE + 0.000001)])
    (record,) = entries([str(tmp_path / "d.log")], print)
    assert record.time == dt.datetime(2026, 12, 1, 10, 0, 0, 1, tzinfo=UTC)


# --- one file, several files ------------------------------------------------------------------


def test_a_file_is_put_in_time_order_when_concurrent_writers_crossed(tmp_path: Path) -> None:
    # Two threads took their ts in one order and queued their entries in the other.
    write_log(tmp_path / "d.log", [decision(1), decision(3), decision(2), decision(4), decision(6), decision(5)])
    assert ids(entries([str(tmp_path / "d.log")], print)) == [f"d-{n:04d}" for n in range(1, 7)]


def test_equal_times_keep_the_file_order(tmp_path: Path) -> None:
    write_log(tmp_path / "d.log", [decision(n, at=BASE) for n in (5, 1, 4, 2, 3)])
    assert ids(entries([str(tmp_path / "d.log")], print)) == ["d-0005", "d-0001", "d-0004", "d-0002", "d-0003"]


def test_an_entry_further_out_of_place_than_the_window_is_said(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader, "WINDOW", 2)
    write_log(tmp_path / "d.log", [decision(n) for n in (5, 6, 7, 8, 1, 9)])
    warnings: list[str] = []
    out = ids(entries([str(tmp_path / "d.log")], warnings.append))
    assert sorted(out) == sorted(f"d-{n:04d}" for n in (1, 5, 6, 7, 8, 9))  # nothing lost
    assert len(warnings) == 1 and "more than 2 lines out of time order" in warnings[0]


def test_files_of_two_replicas_are_merged_in_time_order(tmp_path: Path) -> None:
    write_log(tmp_path / "a.log", [decision(n) for n in (1, 3, 5, 7)])
    write_log(tmp_path / "b.log", [decision(n) for n in (2, 4, 6, 8)])
    out = ids(entries([str(tmp_path / "a.log"), str(tmp_path / "b.log")], print))
    assert out == [f"d-{n:04d}" for n in range(1, 9)]


def test_rotated_and_gzipped_files_read_in_order_whatever_order_they_are_given(tmp_path: Path) -> None:
    files = rotated_log(tmp_path, [decision(n) for n in range(1, 11)])
    assert len(files) >= 3 and files[1].name == "decisions.log.2.gz"
    given = [str(f) for f in reversed(files)]
    assert ids(entries(given, print)) == [f"d-{n:04d}" for n in range(1, 11)]


def test_merge_order_puts_older_rotations_first() -> None:
    given = ["pep.log", "pep.log.1", "pep.log.10.gz", "pep.log.2.gz", "other.log"]
    assert merge_order(given) == ["pep.log.10.gz", "pep.log.2.gz", "pep.log.1", "pep.log", "other.log"]


def test_equal_times_across_rotated_files_come_oldest_file_first(tmp_path: Path) -> None:
    write_log(tmp_path / "pep.log.1", [decision(1, at=BASE)])
    write_log(tmp_path / "pep.log", [decision(2, at=BASE)])
    assert ids(entries([str(tmp_path / "pep.log"), str(tmp_path / "pep.log.1")], print)) == ["d-0001", "d-0002"]


def test_a_file_is_read_as_a_stream(tmp_path: Path) -> None:
    write_log(tmp_path / "d.log", [decision(n) for n in range(1, 3001)])
    stream = entries([str(tmp_path / "d.log")], print)
    first = next(stream)  # a window's worth read, not the file
    assert first.entry["decision_id"] == "d-0001"
    assert sum(1 for _ in stream) == 2999


# --- lines that are not entries ---------------------------------------------------------------------


def test_lines_that_are_not_entries_are_skipped_and_said_once_per_file(tmp_path: Path) -> None:
    lines = write_log(tmp_path / "d.log", [decision(1), decision(2), decision(3)])
    (tmp_path / "d.log").write_bytes(
        lines[0] + b"not json\n" + lines[1] + b"[1, 2]\n" + b'{"ts": "soon"}\n' + lines[2] + b'{"decision": "allow"'
    )
    write_log(tmp_path / "e.log", [decision(4)])
    with open(tmp_path / "e.log", "ab") as f:
        f.write(b"\x00\xff garbage\n")
    warnings: list[str] = []
    out = ids(entries([str(tmp_path / "d.log"), str(tmp_path / "e.log")], warnings.append))
    assert out == ["d-0001", "d-0002", "d-0003", "d-0004"]
    assert sorted(warnings) == [
        f"{tmp_path}/d.log:2: not a JSON log entry with a ts, skipped (and 3 more such lines in this file)",
        f"{tmp_path}/e.log:2: not a JSON log entry with a ts, skipped",
    ]


def test_a_gzipped_file_cut_short_keeps_what_was_read(tmp_path: Path) -> None:
    lines = write_log(tmp_path / "d.log", [decision(n) for n in range(1, 200)])
    data = gzip.compress(b"".join(lines))
    (tmp_path / "d.log.1.gz").write_bytes(data[: len(data) // 2])
    warnings: list[str] = []
    out = list(entries([str(tmp_path / "d.log.1.gz")], warnings.append))
    assert 0 < len(out) < 199
    assert any("cannot read further" in w for w in warnings)


# --- filters, timeline ----------------------------------------------------------------------------


def test_filters_match_fields_exactly_and_the_window_is_half_open(tmp_path: Path) -> None:
    items = [
        decision(1),
        decision(2, agent="billing-bot"),
        decision(3, user="bob"),
        decision(4, action="delete_file"),
        decision(5, allowed=False),
        decision(6, allowed=False, reason=Reason.RATE_LIMITED),
    ]
    write_log(tmp_path / "d.log", items)
    path = [str(tmp_path / "d.log")]

    def found(**kw: Any) -> list[str]:
        return ids(query(path, Filter(**kw), print))

    assert found() == [f"d-{n:04d}" for n in range(1, 7)]
    assert found(agent="billing-bot") == ["d-0002"]
    assert found(agent="billing") == []  # exact, not a substring
    assert found(user="bob") == ["d-0003"]
    assert found(action="delete_file") == found(action='Action::"delete_file"') == ["d-0004"]
    assert found(decision="deny") == ["d-0005", "d-0006"]
    assert found(reason="rate_limited") == ["d-0006"]
    assert found(decision="deny", reason="allowed") == []
    since, until = dt.datetime.fromtimestamp(BASE + 2, UTC), dt.datetime.fromtimestamp(BASE + 4, UTC)
    assert found(since=since, until=until) == ["d-0002", "d-0003"]


def test_query_leaves_admin_events_out(tmp_path: Path) -> None:
    write_log(tmp_path / "d.log", [decision(1), admin_event(2), decision(3)])
    assert ids(query([str(tmp_path / "d.log")], Filter(), print)) == ["d-0001", "d-0003"]


def test_an_admin_event_touches_its_agent_and_everyone_when_all() -> None:
    assert touches(admin_event(1, kind="agent", id_="assistant"), "assistant")
    assert touches(admin_event(1, kind="all"), "assistant")
    assert not touches(admin_event(1, kind="agent", id_="other"), "assistant")
    assert not touches(admin_event(1, kind="user", id_="assistant"), "assistant")


def test_timeline_interleaves_the_agents_decisions_with_its_admin_events(tmp_path: Path) -> None:
    items = [
        decision(1),
        decision(2, agent="other"),
        admin_event(3),
        admin_event(4, kind="agent", id_="other"),
        decision(5, allowed=False, reason=Reason.AGENT_DISABLED),
        admin_event(6, action="enable"),
        admin_event(7, kind="all", reason="fleet stop"),
        {"schema": 1, "ts": admin_event(8)["ts"], "event": "other", "kind": "all"},
        decision(9, user="bob"),
    ]
    write_log(tmp_path / "d.log", items)
    path = [str(tmp_path / "d.log")]
    assert ids(timeline(path, Filter(agent="assistant"), print)) == [
        "d-0001",
        "admin:disable",
        "d-0005",
        "admin:enable",
        "admin:disable",
        "d-0009",
    ]
    # The decision filters leave the events; the time window applies to both.
    assert ids(timeline(path, Filter(agent="assistant", user="bob"), print)) == [
        "admin:disable",
        "admin:enable",
        "admin:disable",
        "d-0009",
    ]
    since = dt.datetime.fromtimestamp(BASE + 5, UTC)
    assert ids(timeline(path, Filter(agent="assistant", since=since), print)) == [
        "d-0005",
        "admin:enable",
        "admin:disable",
        "d-0009",
    ]
    with pytest.raises(ValueError, match="one agent"):
        list(timeline(path, Filter(), print))
