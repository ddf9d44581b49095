"""`pep log query` and `pep log verify`: the decision log read back for an incident, and its chain checked.

Reading is `pep/audit/reader.py`'s (streaming, in time order across plain, rotated and gzipped
files); the chain is `pep/audit/chain.py`'s. This module parses the flags and prints.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import os
import sys
import zlib
from collections.abc import Iterable, Iterator
from typing import Any

from pep.audit.chain import verify
from pep.audit.reader import Filter, Record, parse_time, query, timeline
from pep.cli import inputs
from pep.cli.common import EXIT_FAILED, EXIT_OK
from pep.cli.inputs import UsageError, clip
from pep.reasons import ALL_REASONS
from pep.uids import format_uid

__all__ = ["add_parser", "cmd_query", "cmd_verify"]

_BLOCK = 1000  # rows aligned together: a table never holds more than this many in memory
_MAX_CELL = 200  # characters of one table cell; --format json has every field in full
_QUERY_HEADER = ["TIME", "AGENT", "ON_BEHALF_OF", "ACTION", "RESOURCE", "DECISION", "REASON"]
_TIMELINE_HEADER = ["TIME", "ACTION", "RESOURCE", "ON_BEHALF_OF", "CHAIN", "DECISION", "REASON"]


def add_parser(sub: Any) -> None:
    lg = sub.add_parser(
        "log",
        help="query the decision log, or verify its chain",
        description="Read pep's decision log back: filter its decisions (`query`), see everything one agent "
        "did and what was done about it (`query --agent A --timeline`), or check the tamper-evident chain "
        "of a log written with decision_log.chain: true (`verify`). See docs/audit.md.",
    )
    lg_sub = lg.add_subparsers(title="log commands", metavar="ACTION", required=True)
    logs_help = (
        "decision log files, in any order: the live one, rotated ones (pep.log.1) and gzipped ones (pep.log.2.gz)"
    )

    q = lg_sub.add_parser(
        "query",
        help="filter the decisions of one or more log files, in time order",
        description="Print the decisions of the given log files that pass every filter, in time order "
        "(merged across files, streaming). Admin events are left out, except in --timeline. A line that is "
        "not a JSON entry is skipped with a warning on stderr. Exit 0, matches or not; 2 on a usage error.",
    )
    q.add_argument("logs", nargs="+", metavar="LOG", help=logs_help)
    q.add_argument("--agent", type=inputs.name, help="only decisions of this agent (the current actor, `agent`)")
    q.add_argument("--user", type=inputs.name, help="only decisions on behalf of this user (`on_behalf_of`)")
    q.add_argument("--action", type=inputs.name, help='only this action: a name (read_file) or Action::"read_file"')
    q.add_argument("--decision", choices=("allow", "deny"), help="only allows or only denies (the real decision)")
    q.add_argument("--reason", type=_reason, help="only this reason code (docs/reasons.md), e.g. policy_forbid")
    q.add_argument(
        "--since",
        type=rfc3339_time,
        metavar="T",
        help="only entries at or after T, RFC 3339: 2026-12-01T10:00:00Z or 2026-12-01T12:00:00+02:00",
    )
    q.add_argument("--until", type=rfc3339_time, metavar="T", help="only entries before T, RFC 3339 like --since")
    q.add_argument(
        "--format",
        choices=("table", "json"),
        default="table",
        help="table: aligned columns (the default); json: each matching line exactly as logged",
    )
    q.add_argument(
        "--timeline",
        action="store_true",
        help="with --agent: the incident view, one line per decision (time, action, resource, on whose behalf, "
        "through which chain, decision, reason) with the admin events that touched the agent (kill switch on "
        "it or on all) interleaved; the other filters apply to the decisions, --since/--until to both",
    )
    q.set_defaults(func=cmd_query, command="pep log query")

    v = lg_sub.add_parser(
        "verify",
        help="check the tamper-evident chain of log files (decision_log.chain: true)",
        description="Check every line's seq and prev (docs/audit.md) across the given files, oldest first "
        "whatever the order given. Exit 0 printing `intact: N entries`; 1 naming the file and line of the "
        "first entry that was edited, removed, inserted or moved; 2 on a usage error.",
    )
    v.add_argument("logs", nargs="+", metavar="LOG", help=logs_help)
    v.set_defaults(func=cmd_verify, command="pep log verify")


# --- argparse types -------------------------------------------------------------------------


def rfc3339_time(value: str) -> dt.datetime:
    try:
        return parse_time(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _reason(value: str) -> str:
    if value not in ALL_REASONS:
        raise argparse.ArgumentTypeError(f"unknown reason code {clip(value, 80)!r} (see docs/reasons.md)")
    return value


def log_files(paths: Iterable[str]) -> list[str]:
    """The log files, each checked before anything is printed; one given twice is read once."""
    out: dict[str, str] = {}
    for path in paths:
        inputs.utf8(path, "LOG")
        if not os.path.exists(path):
            raise UsageError(f"{path}: no such file")
        if os.path.isdir(path):
            raise UsageError(f"{path}: is a directory, not a log file")
        if not os.access(path, os.R_OK):
            raise UsageError(f"{path}: permission denied")
        out.setdefault(os.path.realpath(path), path)
    return list(out.values())


# --- pep log query --------------------------------------------------------------------------


def cmd_query(args: argparse.Namespace) -> int:
    if args.timeline and args.agent is None:
        raise UsageError("--timeline needs --agent: a timeline is of one agent")
    if args.since is not None and args.until is not None and args.since >= args.until:
        raise UsageError("--since must be before --until")
    paths = log_files(args.logs)
    flt = Filter(args.agent, args.user, args.action, args.decision, args.reason, args.since, args.until)

    def warn(message: str) -> None:
        print(f"{args.command}: warning: {clip(message, 1000)}", file=sys.stderr)

    found = (timeline if args.timeline else query)(paths, flt, warn)
    try:
        if args.format == "json":
            count = _print_json(found)
        elif args.timeline:
            count = _print_lines(_timeline_rows(found, args.agent), _TIMELINE_HEADER)
        else:
            count = _print_lines((_query_row(r) for r in found), _QUERY_HEADER)
        sys.stdout.flush()
    except BrokenPipeError:  # `pep log query ... | head`: the reader has seen enough
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    if not count and args.format != "json":
        print(f"{args.command}: no matching entries", file=sys.stderr)
    return EXIT_OK


def _print_json(found: Iterable[Record]) -> int:
    """Each line exactly as logged (its bytes), one per line."""
    sys.stdout.flush()
    out = getattr(sys.stdout, "buffer", None)
    count = 0
    for record in found:
        line = record.line if record.line.endswith(b"\n") else record.line + b"\n"
        if out is not None:
            out.write(line)
        else:
            sys.stdout.write(line.decode("utf-8", "backslashreplace"))
        count += 1
    return count


def _print_lines(rows: Iterable[list[str] | str], header: list[str]) -> int:
    """Rows as aligned columns, a block at a time (widths only grow); a str row is printed as is."""
    count = 0
    widths = [len(h) for h in header]
    first = True
    it = iter(rows)
    while block := list(itertools.islice(it, _BLOCK)):
        for row in block:
            if isinstance(row, list):
                widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
        if first:
            print(_aligned(header, widths))
            first = False
        for row in block:
            print(row if isinstance(row, str) else _aligned(row, widths))
        count += len(block)
    return count


def _aligned(row: list[str], widths: list[int]) -> str:
    return "  ".join([*(c.ljust(w) for c, w in zip(row[:-1], widths, strict=False)), row[-1]])


def _cell(value: Any) -> str:
    """A field for the terminal: "-" when empty, control characters escaped, at most _MAX_CELL characters."""
    if value is None or value == "" or value == []:
        return "-"
    text = value if isinstance(value, str) else str(value)
    if not text.isprintable():
        text = "".join(ch if ch.isprintable() else f"\\u{{{ord(ch):x}}}" for ch in text)
    return text if len(text) <= _MAX_CELL else text[: _MAX_CELL - 3] + "..."


def _resource(entry: dict[str, Any]) -> str:
    resource = entry.get("resource")
    if not isinstance(resource, dict):
        return "-"
    type_, id_ = resource.get("type"), resource.get("id")
    if not isinstance(type_, str) or not isinstance(id_, str) or not type_:
        return "-"
    return _cell(format_uid((type_, id_)))


def _decision(entry: dict[str, Any]) -> str:
    """`allow`, or `deny (answered allow)` when the caller was told otherwise (dry_run)."""
    decision = _cell(entry.get("decision"))
    answered = entry.get("answered")
    return f"{decision} (answered {_cell(answered)})" if answered else decision


def _query_row(record: Record) -> list[str]:
    e = record.entry
    return [
        _cell(e.get("ts")),
        _cell(e.get("agent")),
        _cell(e.get("on_behalf_of")),
        _cell(e.get("action")),
        _resource(e),
        _decision(e),
        _cell(e.get("reason")),
    ]


def _chain(entry: dict[str, Any]) -> str:
    chain = entry.get("delegation_chain")
    if not isinstance(chain, list) or not chain:
        return "-"
    return " -> ".join(_cell(link) for link in chain)


def _timeline_rows(found: Iterable[Record], agent: str) -> Iterator[list[str] | str]:
    decisions = events = 0
    for record in found:
        e = record.entry
        if record.is_decision:
            decisions += 1
            yield [
                _cell(e.get("ts")),
                _cell(e.get("action")),
                _resource(e),
                _cell(e.get("on_behalf_of")),
                _chain(e),
                _decision(e),
                _cell(e.get("reason")),
            ]
        else:
            events += 1
            yield _admin_line(e)
    yield f"-- {decisions} decisions and {events} admin events of agent {_cell(agent)}"


def _admin_line(e: dict[str, Any]) -> str:
    """`TIME  ** admin: disable agent X by ACTOR, reason: R`, marked so it stands out among decisions."""
    kind = _cell(e.get("kind"))
    target = "all" if e.get("kind") == "all" else f"{kind} {_cell(e.get('id'))}"
    notes = []
    if e.get("applied") == "fleet":
        notes.append("applied from the fleet's state")
    if e.get("changed") is False:
        notes.append("changed nothing")
    tail = f" ({'; '.join(notes)})" if notes else ""
    return (
        f"{_cell(e.get('ts'))}  ** admin: {_cell(e.get('action'))} {target} by {_cell(e.get('actor'))}, "
        f"reason: {_cell(e.get('reason'))}{tail}"
    )


# --- pep log verify -------------------------------------------------------------------------


def cmd_verify(args: argparse.Namespace) -> int:
    paths = log_files(args.logs)
    try:
        verdict = verify(paths)
    except (EOFError, zlib.error) as e:  # a gzipped file cut short or corrupt (OSError is main's)
        raise UsageError(f"a gzipped log cannot be read: {e}") from None
    print(verdict.text())
    return EXIT_OK if verdict.intact else EXIT_FAILED
