"""Reading the decision log back: its entries from plain, rotated and gzipped files, in time order.

A line is a decision entry when it has no `event` key and an admin event when it has
`"event": "admin"` (docs/observability.md). Reading streams: each file is read line by line
and the files are merged (`heapq.merge`), so a multi-GB log is never held in memory; what is
held is at most `WINDOW` entries per file (see `records`).
"""

from __future__ import annotations

import datetime as dt
import heapq
import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from pep.audit.chain import read_lines
from pep.uids import is_action_type, parse_uid

__all__ = [
    "WINDOW",
    "Filter",
    "Record",
    "Warn",
    "entries",
    "merge_order",
    "parse_time",
    "query",
    "records",
    "timeline",
    "touches",
]

# Entries one file may hold out of time order and still be put back in order (see `records`).
WINDOW = 1024
# RFC 3339 date-time (section 5.6): a full date, `T` (or a space), a full time and an offset.
_RFC3339 = re.compile(r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})", re.ASCII)
_ROTATED = re.compile(r"\.(\d+)(\.gz)?$")

Warn = Callable[[str], None]


def parse_time(text: str) -> dt.datetime:
    """An RFC 3339 time (`2026-12-01T10:00:00Z`, `2026-12-01T12:00:00.5+02:00`), timezone aware.
    ValueError says what is wrong."""
    m = _RFC3339.fullmatch(text)
    if m is None:
        raise ValueError(f"not an RFC 3339 time (like 2026-12-01T10:00:00Z): {text[:80]!r}")
    day, clock, fraction, offset = m.groups()
    micros = f".{fraction[:6].ljust(6, '0')}" if fraction else ""  # nanoseconds are cut to micros
    zone = "+00:00" if offset in ("Z", "z") else offset
    try:
        return dt.datetime.fromisoformat(f"{day}T{clock}{micros}{zone}")
    except ValueError as e:
        raise ValueError(f"not a valid time: {text[:80]!r} ({e})") from None


def _entry_time(value: Any) -> dt.datetime | None:
    """An entry's `ts` (pep writes `2026-01-31T12:00:00.123456Z`); None when it is not a time."""
    if not isinstance(value, str):
        return None
    try:
        return parse_time(value)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Record:
    """One log line read back: when, the parsed entry, the line's bytes as logged, and where."""

    time: dt.datetime
    entry: dict[str, Any]
    line: bytes
    path: str
    number: int  # 1 for the file's first line

    @property
    def where(self) -> str:
        return f"{self.path}:{self.number}"

    @property
    def is_decision(self) -> bool:
        return "event" not in self.entry

    @property
    def is_admin(self) -> bool:
        return self.entry.get("event") == "admin"


def _parsed(path: str, warn: Warn) -> Iterator[Record]:
    """The file's entries in file order; a line that is not a JSON entry with a `ts` is skipped,
    and said once for the file (its first such line, and how many there were)."""
    first_bad, bad = "", 0
    number = 0
    try:
        for number, line in enumerate(read_lines(path), 1):
            entry: Any = None
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:
                pass
            time = _entry_time(entry.get("ts")) if isinstance(entry, dict) else None
            if time is None:
                bad += 1
                first_bad = first_bad or f"{path}:{number}"
                continue
            yield Record(time, entry, line, path, number)
    except (EOFError, zlib.error, OSError) as e:
        # A gzipped file cut short, or a disk error: what was read stands, and it is said.
        warn(f"{path}:{number + 1}: cannot read further ({e}); the rest of this file is skipped")
    if bad:
        more = f" (and {bad - 1} more such lines in this file)" if bad > 1 else ""
        warn(f"{first_bad}: not a JSON log entry with a ts, skipped{more}")


def records(path: str, warn: Warn) -> Iterator[Record]:
    """One file's entries in time order.

    pep writes a file in time order, nearly: `ts` is taken when a decision is recorded and
    concurrent threads may queue their entries a moment apart in the other order, so a line can
    sit a few lines after one with a later `ts`. A window of `WINDOW` entries puts those back
    in order (stable for equal `ts`); memory stays bounded. An entry more than `WINDOW` lines
    out of place is said once and yielded where it is.
    """
    window: list[tuple[dt.datetime, int, Record]] = []
    last: dt.datetime | None = None
    said = False
    for n, record in enumerate(_parsed(path, warn)):
        if len(window) >= WINDOW:
            _, _, out = heapq.heappushpop(window, (record.time, n, record))
            if last is not None and out.time < last and not said:
                said = True
                warn(f"{out.where}: more than {WINDOW} lines out of time order; the output order may be off here")
            last = out.time if last is None or out.time > last else last
            yield out
        else:
            heapq.heappush(window, (record.time, n, record))
    while window:
        yield heapq.heappop(window)[2]


def _rotation(path: str) -> int:
    m = _ROTATED.search(path)
    return int(m.group(1)) if m else 0


def merge_order(paths: Iterable[str]) -> list[str]:
    """The files oldest first by their rotation number (`pep.log.2.gz`, `pep.log.1`, `pep.log`),
    else as given: entries with the same `ts` in two files come out in this order."""
    return sorted(paths, key=_rotation, reverse=True)  # sorted is stable: same number, as given


def entries(paths: Iterable[str], warn: Warn) -> Iterator[Record]:
    """Every entry of every file, decisions and events, in time order.

    Each file is in time order (as pep writes it, see `records`), so a k-way `heapq.merge`
    of one iterator per file yields the whole log in order while holding one window per file:
    memory is bounded however large the files are. Equal times keep the `merge_order` order.
    """
    return heapq.merge(*(records(p, warn) for p in merge_order(paths)), key=lambda r: r.time)


@dataclass(frozen=True)
class Filter:
    """What `pep log query` keeps; None matches anything. `since` is inclusive, `until` exclusive."""

    agent: str | None = None
    user: str | None = None  # on_behalf_of
    action: str | None = None
    decision: str | None = None  # allow | deny
    reason: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None

    def in_window(self, time: dt.datetime) -> bool:
        return (self.since is None or time >= self.since) and (self.until is None or time < self.until)

    def matches(self, entry: dict[str, Any]) -> bool:
        """Whether a decision entry passes every field filter (the time window is `in_window`)."""
        return (
            _is(entry.get("agent"), self.agent)
            and _is(entry.get("on_behalf_of"), self.user)
            and _is(entry.get("action"), _action_name(self.action))
            and _is(entry.get("decision"), self.decision)
            and _is(entry.get("reason"), self.reason)
        )


def _is(value: Any, wanted: str | None) -> bool:
    return wanted is None or value == wanted


def _action_name(action: str | None) -> str | None:
    """`read_file` as given, or the name of `Action::"read_file"` (the log holds the name)."""
    if action is None or "::" not in action:
        return action
    try:
        type_, name = parse_uid(action)
    except ValueError:
        return action
    return name if is_action_type(type_) else action


def query(paths: Iterable[str], flt: Filter, warn: Warn) -> Iterator[Record]:
    """The decision entries that pass `flt`, in time order."""
    for record in entries(paths, warn):
        if record.is_decision and flt.in_window(record.time) and flt.matches(record.entry):
            yield record


def touches(event: dict[str, Any], agent: str) -> bool:
    """Whether an admin event concerns `agent`: it named the agent, or it was about `all`."""
    kind = event.get("kind")
    return kind == "all" or (kind == "agent" and event.get("id") == agent)


def timeline(paths: Iterable[str], flt: Filter, warn: Warn) -> Iterator[Record]:
    """The incident view of `flt.agent`: its decisions that pass `flt`, and the admin events that
    touched it (in the time window; the other filters are for decisions), in time order."""
    if flt.agent is None:
        raise ValueError("a timeline is of one agent")
    for record in entries(paths, warn):
        if not flt.in_window(record.time):
            continue
        if record.is_decision:
            if flt.matches(record.entry):
                yield record
        elif record.is_admin and touches(record.entry, flt.agent):
            yield record
